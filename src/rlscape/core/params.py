"""Named parameter vectors: which tensors of a policy an analysis moves, and flat views of them.

A parameter vector is always an ordered mapping ``name -> tensor``; it is never matched to a
policy by position (methods.md §1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch

from rlscape.core.errors import RlscapeError

PARAM_SETS = ("actor", "critic", "all")

# Name prefixes of parameters that belong to the critic only, per policy family.
_CRITIC_PREFIXES = (
    "mlp_extractor.value_net.",
    "value_net.",
    "vf_features_extractor.",
    "critic.",
)
# Never part of an analysis: target networks are a training device, not the policy.
_EXCLUDED_PREFIXES = ("critic_target.", "actor_target.", "q_net_target.")

NamedArrays = dict[str, np.ndarray]


def select_names(all_names: Iterable[str], which: str) -> list[str]:
    """Names of the parameters in the set ``which`` (``actor``, ``critic`` or ``all``).

    ``actor`` is everything that shapes the action distribution (shared feature extractors,
    policy body, action head, ``log_std``); ``critic`` is what only the value/Q function uses.
    """
    if which not in PARAM_SETS:
        raise RlscapeError(f"--params must be one of {', '.join(PARAM_SETS)}, not {which!r}")
    names = [n for n in all_names if not n.startswith(_EXCLUDED_PREFIXES)]
    critic = [n for n in names if n.startswith(_CRITIC_PREFIXES)]
    actor = [n for n in names if n not in critic]
    chosen = {"actor": actor, "critic": critic, "all": names}[which]
    if not chosen:
        raise RlscapeError(f"this policy has no {which} parameters; choose another --params")
    return chosen


def numpy_params(module: torch.nn.Module, names: Iterable[str]) -> NamedArrays:
    """Copy the named parameters of ``module`` to float32 numpy arrays (the module is untouched)."""
    table = dict(module.named_parameters())
    return {n: table[n].detach().cpu().numpy().astype(np.float32, copy=True) for n in names}


def check_finite(params: Mapping[str, np.ndarray], what: str) -> None:
    """Refuse NaN/inf values with a message naming the first offending tensor."""
    for name, value in params.items():
        if not np.all(np.isfinite(value)):
            raise RlscapeError(
                f"{what} has NaN or infinite values in {name!r}; use a checkpoint with finite weights"
            )


def check_compatible(reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray], what: str) -> None:
    """Refuse ``other`` unless it has exactly the names and shapes of ``reference``."""
    missing = [n for n in reference if n not in other]
    extra = [n for n in other if n not in reference]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:3]}{'…' if len(extra) > 3 else ''}")
        raise RlscapeError(
            f"{what} does not match the policy's parameters ({'; '.join(parts)}); "
            "use one made for this policy and --params selection"
        )
    for n, ref in reference.items():
        if tuple(other[n].shape) != tuple(ref.shape):
            raise RlscapeError(
                f"{what}: {n!r} has shape {tuple(other[n].shape)} but the policy's has "
                f"{tuple(ref.shape)}; use one made for this policy"
            )


def norm(params: Mapping[str, np.ndarray]) -> float:
    """Euclidean norm of a named parameter vector (float64 accumulation)."""
    return float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in params.values())))


def dot(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """Inner product of two named vectors with the same names."""
    return float(sum(float(np.sum(a[n].astype(np.float64) * b[n])) for n in a))
