"""Core machinery: named parameters, directions, agents, env pipeline, batched evaluation, storage."""
