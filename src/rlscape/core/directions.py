"""Directions in parameter space (methods.md §1): random, normalised, from file, checkpoint differences.

A :class:`Direction` is a named vector plus a description of how it was made. It is saved as an
``.npz`` keyed by parameter name (plus one ``__rlscape_meta__`` entry holding JSON), so it can be
read without rlscape and is checked against the policy by name and shape on load.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlscape.core.errors import RlscapeError
from rlscape.core.params import NamedArrays, check_compatible, check_finite, dot, norm

log = logging.getLogger(__name__)

NORMALIZATIONS = ("filter", "layer", "none")
BIAS_MODES = ("ignore", "normalize")
_META_KEY = "__rlscape_meta__"
DIRECTION_STREAM = 0xD1  # seed-sequence tag of direction draws (see rlscape.core.evaluate for the others)


@dataclass
class Direction:
    """A named direction ``d`` with its provenance.

    ``meta`` holds at least ``kind`` (random, file, difference, ...) and, where they apply,
    ``normalization``, ``bias``, ``seed``, ``scale``.
    """

    values: NamedArrays
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def norm(self) -> float:
        return norm(self.values)

    def label(self) -> str:
        """Short human description for plot axes (``meta["label"]`` wins when set)."""
        if self.meta.get("label"):
            return str(self.meta["label"])
        kind = self.meta.get("kind", "direction")
        if kind == "random":
            normed = {"filter": "filter-normalised", "layer": "layer-normalised", "none": "unnormalised"}[
                self.meta.get("normalization", "none")
            ]
            return f"random Gaussian, {normed} (seed {self.meta.get('seed')})"
        if kind == "difference":
            return "checkpoint difference θ2 − θ1"
        if kind == "file":
            return f"from {Path(str(self.meta.get('source', 'file'))).name}"
        return str(kind)

    def save(self, path: Path) -> None:
        """Write ``path`` (``.npz``) keyed by parameter name, with the metadata as JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = dict(self.meta, norm=self.norm, names=list(self.values), shapes=[list(v.shape) for v in self.values.values()])
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **self.values, **{_META_KEY: np.array(json.dumps(meta))})  # type: ignore[arg-type]  # numpy stubs: **arrays read as allow_pickle
        tmp.replace(path)


def _filter_normalize(d: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Scale each output unit/filter ``d[i]`` to the norm of ``w[i]`` (PyTorch layout: dim 0 = out)."""
    d2 = d.reshape(d.shape[0], -1)
    w2 = w.reshape(w.shape[0], -1)
    dn = np.linalg.norm(d2, axis=1, keepdims=True)
    wn = np.linalg.norm(w2, axis=1, keepdims=True)
    scale = np.divide(wn, dn, out=np.zeros_like(dn), where=dn > 0)
    return (d2 * scale).reshape(d.shape).astype(np.float32)


def _tensor_normalize(d: np.ndarray, w: np.ndarray) -> np.ndarray:
    dn = float(np.linalg.norm(d))
    return (d * (float(np.linalg.norm(w)) / dn if dn > 0 else 0.0)).astype(np.float32)


def normalize(d: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray], normalization: str, bias: str = "ignore") -> NamedArrays:
    """Normalise direction ``d`` against the policy ``weights`` (methods.md §1).

    ``filter``: every row/filter of a ≥2-D weight gets the norm of the weight's row/filter.
    ``layer``: every ≥2-D tensor gets the norm of the weight tensor. ``none``: unchanged.
    1-D tensors (biases, ``log_std``) are zeroed when ``bias='ignore'`` (the default) or scaled
    per tensor to ‖b‖ when ``bias='normalize'``; with ``none`` they are left as they are.
    """
    if normalization not in NORMALIZATIONS:
        raise RlscapeError(f"--normalization must be one of {', '.join(NORMALIZATIONS)}, not {normalization!r}")
    if bias not in BIAS_MODES:
        raise RlscapeError(f"bias mode must be one of {', '.join(BIAS_MODES)}, not {bias!r}")
    out: NamedArrays = {}
    for name, dv in d.items():
        w = weights[name]
        if normalization == "none":
            out[name] = dv.astype(np.float32, copy=True)
        elif dv.ndim <= 1:
            out[name] = np.zeros_like(dv, dtype=np.float32) if bias == "ignore" else _tensor_normalize(dv, w)
        elif normalization == "filter":
            out[name] = _filter_normalize(dv, w)
        else:
            out[name] = _tensor_normalize(dv, w)
    return out


def random_direction(weights: Mapping[str, np.ndarray], seed: int, index: int = 0, normalization: str = "filter", bias: str = "ignore") -> Direction:
    """A seeded Gaussian direction shaped like ``weights``, normalised as asked.

    The stream is ``SeedSequence([seed, 0xD1, index])`` drawn tensor by tensor in name order, so the
    same (seed, index) gives a bit-identical direction on every machine; ``index`` separates
    dir1 from dir2.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), DIRECTION_STREAM, int(index)])))
    raw = {n: rng.standard_normal(w.shape, dtype=np.float32) for n, w in weights.items()}
    values = normalize(raw, weights, normalization, bias)
    return Direction(values, {"kind": "random", "seed": int(seed), "index": int(index), "normalization": normalization, "bias": bias, "scale": "raw"})


def difference(theta1: Mapping[str, np.ndarray], theta2: Mapping[str, np.ndarray]) -> Direction:
    """The direction θ2 − θ1 (raw scale), after checking names and shapes agree."""
    check_compatible(theta1, theta2, "the second checkpoint")
    return Direction({n: (theta2[n] - theta1[n]).astype(np.float32) for n in theta1}, {"kind": "difference", "scale": "raw"})


def load_direction(path: str | Path, weights: Mapping[str, np.ndarray]) -> Direction:
    """Read a direction ``.npz`` keyed by parameter name and check it against ``weights``."""
    path = Path(path)
    if not path.is_file():
        raise RlscapeError(f"direction file {path} does not exist; give an existing .npz keyed by parameter name")
    try:
        with np.load(path, allow_pickle=False) as f:
            values = {k: np.asarray(f[k], dtype=np.float32) for k in f.files if k != _META_KEY}
            meta = json.loads(str(f[_META_KEY])) if _META_KEY in f.files else {}
    except (OSError, ValueError) as exc:
        raise RlscapeError(f"cannot read direction file {path} ({exc}); give a .npz written by numpy.savez") from None
    check_compatible(weights, values, f"direction file {path.name}")
    check_finite(values, f"direction file {path.name}")
    values = {n: values[n] for n in weights}  # the policy's order
    meta = {k: v for k, v in meta.items() if k not in ("names", "shapes", "norm")}
    meta.setdefault("scale", "raw")
    return Direction(values, dict(meta, kind="file", source=str(path.resolve()), original_kind=meta.get("kind")))


def cosine(a: Direction, b: Direction) -> float:
    """cos(d1, d2); NaN if either is zero."""
    na, nb = a.norm, b.norm
    return dot(a.values, b.values) / (na * nb) if na > 0 and nb > 0 else float("nan")
