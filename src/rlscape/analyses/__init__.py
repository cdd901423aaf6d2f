"""Analyses built on the core: each module reads spec → directions → evaluation → store → summary."""
