"""Exact linear regions of piecewise-linear networks (methods.md §9; Cohan et al. 2022).

A network ``x → W_L σ(… σ(W_1 x + b_1) …) + b_L`` with σ = ReLU, LeakyReLU or Identity is affine
on each *linear region*: the set of inputs sharing one activation pattern (the signs of all hidden
pre-activations). This module extracts such a chain of affine maps from a torch module and counts
regions exactly:

- 1-D: on a segment ``x(t) = (1 − t)·a + t·b`` each pre-activation is affine in ``t`` on every piece
  found so far, so its zeros are found in closed form layer by layer (no sampling). Vectorised over
  segments and pieces with numpy (float64): one matrix product per layer for all pieces at once.
- 2-D: the same on a plane ``x(u, v) = o + u·e1 + v·e2``: convex polygons are cut by the zero lines
  of each neuron, layer by layer (exact up to float64 rounding).

Dense sampling (:func:`dense_counts`) is the check: it can only miss regions, never add any.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from rlscape.core.errors import RlscapeError

log = logging.getLogger(__name__)

RELU_HINT = ("train a ReLU agent: rlscape train ENV --algo ppo --steps N --out DIR "
             "--hyperparams '{\"policy_kwargs\": {\"activation_fn\": \"relu\"}}'")


@dataclass(frozen=True)
class PiecewiseLinear:
    """A chain of affine maps with piecewise-linear activations between them (float64 numpy).

    ``weights[k]`` has shape (n_{k+1}, n_k), ``biases[k]`` (n_{k+1},); ``slopes[k]`` is the slope of
    the activation after map ``k`` for negative inputs (0 for ReLU, α for LeakyReLU); the last map
    has no activation. The hidden layers (the neurons whose signs form the pattern) are the outputs
    of every map but the last.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    slopes: tuple[float, ...]
    description: str = ""
    info: dict[str, object] = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def hidden_sizes(self) -> list[int]:
        return [int(w.shape[0]) for w in self.weights[:-1]]

    @property
    def n_neurons(self) -> int:
        return int(sum(self.hidden_sizes))

    @classmethod
    def from_module(cls, *modules: nn.Module, description: str = "") -> PiecewiseLinear:
        """From torch modules applied one after the other (e.g. ``nn.Sequential``; nested
        Sequentials are flattened). Accepted: ``Linear``, ``ReLU``, ``LeakyReLU``, ``Identity``,
        ``Flatten`` and ``Dropout`` (inactive in evaluation). Anything else is refused with one line
        naming it. Consecutive Linear maps without an activation between them are composed.
        """
        flat: list[nn.Module] = []

        def walk(m: nn.Module) -> None:
            if isinstance(m, nn.Sequential):
                for c in m:
                    walk(c)
            else:
                flat.append(m)

        for m in modules:
            walk(m)
        weights: list[np.ndarray] = []
        biases: list[np.ndarray] = []
        slopes: list[float | None] = []  # activation after each map (None: not yet seen)
        for m in flat:
            if isinstance(m, nn.Linear):
                w = m.weight.detach().to(torch.float64).cpu().numpy()
                b = (m.bias.detach().to(torch.float64).cpu().numpy() if m.bias is not None else np.zeros(w.shape[0]))
                if weights and slopes[-1] is None:  # Linear ∘ Linear: one affine map
                    weights[-1], biases[-1] = w @ weights[-1], w @ biases[-1] + b
                else:
                    weights.append(w)
                    biases.append(b)
                    slopes.append(None)
            elif isinstance(m, nn.ReLU | nn.LeakyReLU):
                slope = 0.0 if isinstance(m, nn.ReLU) else float(m.negative_slope)
                if not weights:
                    raise RlscapeError(f"{type(m).__name__} before any Linear layer: the network must start with a Linear map")
                if slopes[-1] is not None:
                    raise RlscapeError(f"two activations in a row ({type(m).__name__} after another): give Linear and activation layers alternately")
                slopes[-1] = slope
            elif isinstance(m, nn.Identity | nn.Flatten | nn.Dropout):
                continue
            else:
                raise RlscapeError(f"the network uses {type(m).__name__}, which is not piecewise linear; linear regions need "
                                   f"ReLU, LeakyReLU or Identity between Linear layers ({RELU_HINT})")
        if not weights:
            raise RlscapeError("the network has no Linear layer")
        if slopes[-1] is not None:  # a trailing activation is part of the last hidden layer: add an identity output
            n = weights[-1].shape[0]
            weights.append(np.eye(n))
            biases.append(np.zeros(n))
            slopes.append(None)
        hidden = [s for s in slopes[:-1] if s is not None]  # all of them: consecutive Linears were composed
        if len(weights) < 2:
            raise RlscapeError("the network has no hidden layer (a single affine map has one linear region)")
        return cls(tuple(weights), tuple(biases), tuple(hidden), description or
                   " → ".join(type(m).__name__ for m in flat))

    # -- evaluation -------------------------------------------------------------------------------
    def patterns(self, x: np.ndarray) -> np.ndarray:
        """Activation patterns at inputs ``x`` (B, input_dim): bool (B, n_neurons), True where the
        pre-activation is > 0."""
        h = np.asarray(x, np.float64)
        out = []
        for k, (w, b) in enumerate(zip(self.weights[:-1], self.biases[:-1], strict=True)):
            z = h @ w.T + b
            on = z > 0
            out.append(on)
            h = np.where(on, z, self.slopes[k] * z)
        return np.concatenate(out, axis=1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The network's output at ``x`` (B, input_dim) → (B, n_out)."""
        h = np.asarray(x, np.float64)
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w.T + b
            if k < len(self.slopes):
                h = np.where(h > 0, h, self.slopes[k] * h)
        return h


# -- 1-D: exact counts along segments ------------------------------------------------------------------

@dataclass
class SegmentCounts:
    """Exact counts along S segments.

    ``regions`` (S,) int: maximal runs of one activation pattern along each segment;
    ``transitions`` = regions − 1; ``length`` (S,) Euclidean length ‖b − a‖; ``breakpoints``: the
    sorted ``t`` in (0, 1) where the pattern changes, flat (with ``breakpoint_segment`` (K,) the
    owner of each); ``pieces``: the number of affine pieces the search found (≥ regions).
    """

    regions: np.ndarray
    transitions: np.ndarray
    length: np.ndarray
    breakpoints: np.ndarray
    breakpoint_segment: np.ndarray
    pieces: int
    piece_patterns: np.ndarray | None = None  # (P, bytes) packed patterns of the merged pieces
    piece_segment: np.ndarray | None = None  # (P,)


def count_segments(net: PiecewiseLinear, a: np.ndarray, b: np.ndarray, *, keep_patterns: bool = False,
                   chunk: int = 20_000) -> SegmentCounts:
    """Exact number of linear regions along each segment ``x(t) = (1 − t)·a + t·b``, t ∈ [0, 1].

    ``a``, ``b``: (S, input_dim). Layer by layer, every current piece ``[t0, t1]`` of a segment carries
    the layer's pre-activations as ``c + t·d`` (exact: the network is affine in t there); the zeros
    ``t = −c/d`` inside the piece split it, the pattern of each new piece is read at its midpoint,
    and the next layer's ``c, d`` follow by one matrix product over all pieces. Consecutive pieces
    with equal patterns (a zero that does not change the pattern, e.g. a neuron dead on both sides in
    a later layer) are merged, so ``regions`` counts distinct consecutive patterns. Segments are
    processed ``chunk`` at a time to bound memory. ``keep_patterns`` also returns the packed pattern
    of every region (for counting distinct regions along a trajectory).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape != b.shape or a.shape[1] != net.input_dim:
        raise RlscapeError(f"segments must be two arrays of shape (S, {net.input_dim}) (the network's input size), "
                           f"not {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise RlscapeError("segment end points must be finite numbers")
    parts = [_count_chunk(net, a[i:i + chunk], b[i:i + chunk], keep_patterns, i) for i in range(0, len(a), chunk)]
    if not parts:
        empty_i = np.zeros(0, np.int64)
        return SegmentCounts(empty_i, empty_i, np.zeros(0), np.zeros(0), empty_i, 0)
    cat = np.concatenate
    return SegmentCounts(
        cat([p.regions for p in parts]), cat([p.transitions for p in parts]), cat([p.length for p in parts]),
        cat([p.breakpoints for p in parts]), cat([p.breakpoint_segment for p in parts]), sum(p.pieces for p in parts),
        cat([p.piece_patterns for p in parts]) if keep_patterns else None,  # type: ignore[misc]
        cat([p.piece_segment for p in parts]) if keep_patterns else None,  # type: ignore[misc]
    )


def _count_chunk(net: PiecewiseLinear, a: np.ndarray, b: np.ndarray, keep_patterns: bool, offset: int) -> SegmentCounts:
    S = len(a)
    seg = np.arange(S)
    t0 = np.zeros(S)
    t1 = np.ones(S)
    direction = b - a
    c = a @ net.weights[0].T + net.biases[0]  # (P, n) pre-activations at t = 0 …
    d = direction @ net.weights[0].T  # … and their slope in t
    packed: list[np.ndarray] = []  # per layer: (P, bytes) packed patterns, indexed by the current pieces
    for k, slope in enumerate(net.slopes):
        with np.errstate(divide="ignore", invalid="ignore"):
            roots = -c / d
        inside = (roots > t0[:, None]) & (roots < t1[:, None])
        roots = np.where(inside, roots, np.inf)
        roots.sort(axis=1)
        n_cut = inside.sum(axis=1)
        # children of piece p: [t0, r1], [r1, r2], …, [r_k, t1]
        width = int(n_cut.max(initial=0))
        lo = np.concatenate([t0[:, None], roots[:, :width]], axis=1)
        hi = np.concatenate([roots[:, :width], np.full((len(t0), 1), np.inf)], axis=1)
        cols = np.arange(width + 1)
        hi[np.arange(len(t0)), n_cut] = t1
        keep = cols[None, :] <= n_cut[:, None]
        parent = np.repeat(np.arange(len(t0)), n_cut + 1)
        t0, t1 = lo[keep], hi[keep]
        seg, c, d = seg[parent], c[parent], d[parent]
        packed = [p[parent] for p in packed]
        mid = 0.5 * (t0 + t1)
        z = c + mid[:, None] * d
        on = z > 0
        packed.append(np.packbits(on, axis=1))
        gain = np.where(on, 1.0, slope)
        w, bias = net.weights[k + 1], net.biases[k + 1]
        c, d = (gain * c) @ w.T + bias, (gain * d) @ w.T
    pat = np.concatenate(packed, axis=1)
    # merge consecutive pieces of one segment with the same pattern (and drop empty pieces)
    nonempty = t1 > t0
    t0, t1, seg, pat = t0[nonempty], t1[nonempty], seg[nonempty], pat[nonempty]
    new = np.ones(len(seg), bool)
    new[1:] = (seg[1:] != seg[:-1]) | (pat[1:] != pat[:-1]).any(axis=1)
    regions = np.bincount(seg[new], minlength=S).astype(np.int64)
    change = new.copy()
    change[np.flatnonzero(new & np.r_[True, seg[1:] != seg[:-1]])] = False  # the first piece of a segment is no breakpoint
    return SegmentCounts(
        regions, regions - 1, np.linalg.norm(direction, axis=1), t0[change], seg[change] + offset, int(len(seg)),
        pat[new] if keep_patterns else None, (seg[new] + offset) if keep_patterns else None,
    )


def dense_counts(net: PiecewiseLinear, a: np.ndarray, b: np.ndarray, samples: int) -> np.ndarray:
    """Regions along each segment seen by sampling ``samples`` evenly spaced points (ends included):
    1 + the number of consecutive samples whose patterns differ. A lower bound of the exact count.
    ``a``, ``b``: (S, input_dim) → (S,) int64."""
    if samples < 2:
        raise RlscapeError(f"dense sampling needs at least 2 points per segment, not {samples}")
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    t = np.linspace(0.0, 1.0, samples)
    x = a[:, None, :] + t[None, :, None] * (b - a)[:, None, :]
    pat = net.patterns(x.reshape(-1, a.shape[1])).reshape(len(a), samples, -1)
    return 1 + (pat[:, 1:] != pat[:, :-1]).any(axis=2).sum(axis=1).astype(np.int64)


# -- 2-D: exact partition of a plane -----------------------------------------------------------------

@dataclass
class PlanePartition:
    """The regions of a rectangle ``[u0, u1] × [v0, v1]`` in plane coordinates.

    ``polygons``: one (k_i, 2) array of (u, v) vertices per region (convex, counter-clockwise);
    ``patterns``: (R, n_neurons) bool; ``area`` (R,); ``box`` (u0, u1, v0, v1).
    """

    polygons: list[np.ndarray]
    patterns: np.ndarray
    area: np.ndarray
    box: tuple[float, float, float, float]

    @property
    def n_regions(self) -> int:
        return len(self.polygons)


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a polygon (k, 2), positive when counter-clockwise."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _split(poly: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut a convex polygon (k, 2) by the line where the affine function with vertex values
    ``vals`` (k,) is zero: the parts with vals ≥ 0 and ≤ 0."""
    pos, neg = [], []
    k = len(poly)
    for i in range(k):
        p, q = poly[i], poly[(i + 1) % k]
        fp, fq = vals[i], vals[(i + 1) % k]
        if fp >= 0:
            pos.append(p)
        if fp <= 0:
            neg.append(p)
        if (fp > 0 > fq) or (fp < 0 < fq):
            x = p + (fp / (fp - fq)) * (q - p)
            pos.append(x)
            neg.append(x)
    return np.array(pos), np.array(neg)


def partition_plane(net: PiecewiseLinear, origin: np.ndarray, e1: np.ndarray, e2: np.ndarray,
                    box: tuple[float, float, float, float], *, min_area: float = 0.0) -> PlanePartition:
    """Exact linear regions of the network restricted to the plane ``x(u, v) = origin + u·e1 + v·e2``
    over ``box = (u0, u1, v0, v1)``. ``origin``, ``e1``, ``e2``: (input_dim,).

    Layer by layer, each polygon carries the layer's pre-activations as an affine function of
    (u, v); every neuron whose zero line crosses the polygon's interior cuts it in two (convex
    parts). The pattern of a finished polygon is read at its vertex centroid (an interior point).
    Slivers with area ≤ ``min_area`` (rounding at near-coincident lines) are dropped.
    """
    u0, u1, v0, v1 = (float(v) for v in box)
    if not (u1 > u0 and v1 > v0):
        raise RlscapeError(f"the plane's box must have positive width and height, not {box}")
    origin, e1, e2 = (np.asarray(v, np.float64) for v in (origin, e1, e2))
    rect = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
    w0 = net.weights[0]
    # each polygon: (vertices (k, 2), A (3, n): pre-activation = [1, u, v] @ A)
    polys = [(rect, np.stack([w0 @ origin + net.biases[0], w0 @ e1, w0 @ e2]))]
    scale = max(u1 - u0, v1 - v0)
    tol = 1e-12 * scale
    masks: list[list[np.ndarray]] = [[]]
    for k, slope in enumerate(net.slopes):
        out, out_masks = [], []
        stack = [(p, A, m, 0) for (p, A), m in zip(polys, masks, strict=True)]
        while stack:
            poly, A, m, j0 = stack.pop()
            vals = np.c_[np.ones(len(poly)), poly] @ A  # (k_vertices, n)
            vmax, vmin = vals.max(axis=0), vals.min(axis=0)
            spread = np.abs(A[1:]).sum(axis=0) * tol
            cut = np.flatnonzero((vmax > spread) & (vmin < -spread))
            cut = cut[cut >= j0]
            if len(cut) == 0:
                out.append((poly, A))
                out_masks.append(m)
                continue
            j = int(cut[0])
            pos, neg = _split(poly, vals[:, j])
            for part in (pos, neg):
                if len(part) >= 3 and abs(polygon_area(part)) > min_area:
                    stack.append((part, A, m, j + 1))
        polys, masks = [], []
        w, bias = net.weights[k + 1], net.biases[k + 1]
        for (poly, A), m in zip(out, out_masks, strict=True):
            centre = np.r_[1.0, poly.mean(axis=0)]
            on = centre @ A > 0
            gain = np.where(on, 1.0, slope)
            A2 = (A * gain) @ w.T
            A2[0] += bias
            polys.append((poly, A2))
            masks.append([*m, on])
    patterns = np.array([np.concatenate(m) for m in masks], bool).reshape(len(polys), -1)
    polygons = [p for p, _ in polys]
    area = np.array([polygon_area(p) for p in polygons])
    flip = area < 0
    polygons = [p[::-1] if f else p for p, f in zip(polygons, flip, strict=True)]
    return PlanePartition(polygons, patterns, np.abs(area), (u0, u1, v0, v1))


def plane_basis(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal (e1, e2) spanning the plane through three points (Gram–Schmidt of p1 − p0, p2 − p0)."""
    d1 = np.asarray(p1, np.float64) - p0
    d2 = np.asarray(p2, np.float64) - p0
    n1 = np.linalg.norm(d1)
    if n1 == 0:
        raise RlscapeError("two of the three states coincide; choose states that span a plane")
    e1 = d1 / n1
    d2 = d2 - (d2 @ e1) * e1
    n2 = np.linalg.norm(d2)
    if n2 <= 1e-9 * max(1.0, float(np.linalg.norm(np.asarray(p2, np.float64) - p0))):
        raise RlscapeError("the three states are collinear; choose states that span a plane")
    return e1, d2 / n2
