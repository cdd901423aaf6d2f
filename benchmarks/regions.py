"""Benchmark: exact 1-D region counting vs dense sampling, 10^5 segments of a 64×64 ReLU policy.

Exact: :func:`rlscape.core.piecewise.count_segments` (all segments at once, numpy float64).
Dense: patterns at N evenly spaced points per segment, counted as distinct consecutive patterns,
batched in torch float32 for speed (float64 where it checks counts: float32 rounding flips units
whose pre-activation is near zero). The resolution N is
the smallest 2^k + 1 (nested grids) at which dense sampling finds the same count on **every** segment; it
is read from the exact breakpoints (dense sampling at N finds all regions of a segment exactly
when every region holds a sample point) and then checked by running dense sampling at N on a
subset. Dense sampling costs the same per sample point, so its speed is measured in points/s at a
moderate N and scaled to the required N (one segment at N ≈ 10^7 points would not fit memory).
The criterion itself is checked: at N = 2^12 + 1, dense sampling equals the exact count exactly on
the checked segments that need at most that N, and finds fewer on the others.

Segments (default): consecutive states of a real policy's trajectories when ``--checkpoint`` is
given (Hopper-v5 ReLU PPO in docs/regions.md), else a Gaussian random walk in an 11-D input space
(Hopper's size) through a seeded, freshly initialised 11→64→64→3 ReLU network.

    .venv/bin/python benchmarks/regions.py [--segments 100000] [--checkpoint DIR] [--step-std 0.1]

Last line: the speed ratio dense / exact at equal counts (target ≥ 10×).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import result  # noqa: E402

from rlscape.core.piecewise import PiecewiseLinear, count_segments  # noqa: E402


def dense_torch(net: PiecewiseLinear, a: np.ndarray, b: np.ndarray, n: int, chunk_points: int = 2_000_000,
                dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Regions seen by n evenly spaced samples per segment (torch, chunked): (S,) int64."""
    ws = [torch.as_tensor(w, dtype=dtype) for w in net.weights[:-1]]
    bs = [torch.as_tensor(v, dtype=dtype) for v in net.biases[:-1]]
    t = torch.linspace(0, 1, n, dtype=dtype)
    out = np.empty(len(a), np.int64)
    per = max(1, chunk_points // n)
    A, B = torch.as_tensor(a, dtype=dtype), torch.as_tensor(b, dtype=dtype)
    with torch.inference_mode():
        for i in range(0, len(a), per):
            x = A[i:i + per, None, :] + t[None, :, None] * (B - A)[i:i + per, None, :]
            changed = torch.zeros(x.shape[0], n - 1, dtype=torch.bool)
            h = x
            for k, (w, bb) in enumerate(zip(ws, bs, strict=True)):
                z = h @ w.T + bb
                on = z > 0
                changed |= (on[:, 1:] != on[:, :-1]).any(-1)
                h = torch.where(on, z, net.slopes[k] * z)
            out[i:i + per] = 1 + changed.sum(1).numpy()
    return out


def required_resolution(r, n_segments: int) -> tuple[int, np.ndarray]:
    """Smallest N = 2^k + 1 (nested grids, so enough for one k is enough for every larger k) at which
    every region of every segment holds a sample point (strictly inside, or a segment's end point);
    and N per segment."""
    order = np.lexsort((r.breakpoints, r.breakpoint_segment))
    seg, bp = r.breakpoint_segment[order], r.breakpoints[order]
    first = np.r_[True, seg[1:] != seg[:-1]] if len(seg) else np.zeros(0, bool)
    # the regions between two breakpoints: the first and last region of a segment hold its end points
    lo, hi, owner = bp[:-1][~first[1:]], bp[1:][~first[1:]], seg[1:][~first[1:]]
    k_need = np.full(len(lo), -1)
    for k in range(1, 48):
        m = 2.0**k
        found = (k_need < 0) & (np.floor(lo * m) + 1 < hi * m)  # a grid point j/m in the open interval
        k_need[found] = k
        if (k_need >= 0).all():
            break
    if len(k_need) and (k_need < 0).any():
        raise RuntimeError("a region narrower than 2^-47 of its segment: no dense resolution finds it")
    per_segment = np.ones(n_segments, np.int64)  # k = 0: N = 2 points (the ends) suffice for one region
    np.maximum.at(per_segment, owner, k_need)
    need = 2**per_segment + 1
    return int(need.max()), need


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a ReLU checkpoint: segments between its visited states")
    parser.add_argument("--step-std", type=float, default=0.1, help="random walk step (no checkpoint)")
    parser.add_argument("--dense-budget", type=float, default=10.0, help="seconds of dense sampling to measure before scaling")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    if args.checkpoint is not None:
        from rlscape.analyses.regions import agent_network, collect_states, to_input
        from rlscape.core.policy import load_checkpoint

        ag = load_checkpoint(args.checkpoint)
        net = agent_network(ag)
        t0 = time.perf_counter()
        first = collect_states(ag, 1, args.seed).states[0]  # one env for all episodes: a guess from the first one's length
        episodes = int(np.ceil(1.2 * args.segments / max(1, len(first) - 1)))
        while True:
            polylines = [to_input(ag, x) for x in collect_states(ag, episodes, args.seed).states]
            if sum(len(p) - 1 for p in polylines) >= args.segments:
                break
            episodes *= 2
        e = len(polylines)
        a = np.concatenate([p[:-1] for p in polylines])[: args.segments]
        b = np.concatenate([p[1:] for p in polylines])[: args.segments]
        print(f"segments: {len(a)} consecutive visited states of {e} episodes of {args.checkpoint} "
              f"(collected in {time.perf_counter() - t0:.0f} s)")
    else:
        torch.manual_seed(args.seed)
        seq = torch.nn.Sequential(torch.nn.Linear(11, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 3))
        net = PiecewiseLinear.from_module(seq)
        a = rng.normal(size=(args.segments, 11))
        b = a + args.step_std * rng.normal(size=a.shape)
        print(f"segments: {len(a)} random-walk steps (σ = {args.step_std} per coordinate) through a fresh 11→64→64→3 ReLU network")
    print(f"network: hidden {net.hidden_sizes}, {net.n_neurons} neurons; mean segment length {np.linalg.norm(b - a, axis=1).mean():.3g}")

    count_segments(net, a[:1000], b[:1000])  # warm-up
    t0 = time.perf_counter()
    r = count_segments(net, a, b)
    t_exact = time.perf_counter() - t0
    print(f"exact: {t_exact:.2f} s, {len(a) / t_exact:,.0f} segments/s; regions per segment mean {r.regions.mean():.2f}, "
          f"max {r.regions.max()}; {r.transitions.sum():,} transitions")

    n_req, need = required_resolution(r, len(a))
    print(f"dense resolution that finds every count: N = {n_req} points per segment "
          f"(median segment needs {int(np.median(need))}, 99th percentile {int(np.percentile(need, 99))})")

    # the criterion, checked: at N = 2^12 + 1 dense sampling equals the exact count exactly on the
    # segments whose regions all hold a sample point (need ≤ N), and misses regions on all others
    n_chk = 2**12 + 1
    sub = np.unique(np.r_[np.argsort(need)[-100:], rng.choice(len(a), 400, replace=False)])
    d_chk = dense_torch(net, a[sub], b[sub], n_chk, dtype=torch.float64)  # float32 rounding flips near-zero units
    ok = need[sub] <= n_chk
    assert (d_chk[ok] == r.regions[sub][ok]).all() and (d_chk[~ok] < r.regions[sub][~ok]).all(), "criterion failed"
    assert (dense_torch(net, a[sub], b[sub], 17) <= r.regions[sub]).all()
    print(f"check: at N = {n_chk}, dense == exact on the {ok.sum()} of {len(sub)} checked segments that need ≤ N, "
          f"and finds fewer on the other {(~ok).sum()}")

    # dense cost is linear in points: measure points/s at a moderate N, scale to the resolutions
    n_meas = 1025
    dense_torch(net, a[:50], b[:50], n_meas)  # warm-up
    m, t_dense = 0, 0.0
    per = max(1, int(2_000_000 // n_meas))
    while t_dense < args.dense_budget and m < len(a):
        k = min(per, len(a) - m)
        t0 = time.perf_counter()
        dense_torch(net, a[m:m + k], b[m:m + k], n_meas)
        t_dense += time.perf_counter() - t0
        m += k
    points_rate = m * n_meas / t_dense
    print(f"dense sampling: {points_rate:,.0f} points/s (measured at N = {n_meas} on {m} segments in {t_dense:.1f} s)")
    rows = []
    for label, n in (("every count", n_req), ("99 % of the counts", int(np.percentile(need, 99, method="higher"))),
                     ("the median segment's count", int(np.median(need)))):
        t_all = len(a) * n / points_rate
        rows.append(t_all / t_exact)
        print(f"  dense at N = {n:>9,d} (finds {label}): {t_all:12,.1f} s for {len(a)} segments → exact is {t_all / t_exact:12,.1f}× faster")
    print(f"exact {len(a) / t_exact:,.0f} segments/s; dense at equal counts {points_rate / n_req:,.2f} segments/s")
    result("regions exact vs dense sampling", f"{rows[0]:,.0f}x faster at equal counts (N = {n_req:,d}; exact "
           f"{len(a) / t_exact:,.0f} segments/s; {rows[1]:,.0f}x at the N that matches 99 % of segments)", "≥ 10×")


if __name__ == "__main__":
    main()
