"""Benchmark 5: common random numbers — surface error at equal episodes, with and without CRN.

A plane is evaluated with few episodes per point twice: with CRN (rlscape's default: episode e
starts from the same reset seed and draws the same action noise at every point) and without
(every point its own seeds). Both are compared with a high-episode reference (CRN, a seed used by
neither). Reported: the RMSE of the surface's *values* and of its *shape* — the differences between
neighbouring points, which is what a reader of a landscape looks at — averaged over replicates.

    .venv/bin/python benchmarks/crn.py [--grid 9] [--episodes 10] [--reference 200] [--replicates 3]

Last line: shape RMSE without CRN / with CRN (bigger is better for CRN).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import agent, result  # noqa: E402


def surface(ag, theta, dirs, coords, episodes: int, seeds: list[int]) -> np.ndarray:
    """Mean return per point; point k uses ``seeds[k]`` (all equal: CRN)."""
    from rlscape.core.evaluate import Budget
    from rlscape.core.execute import evaluate_points

    out = np.full(len(coords), np.nan)
    for seed in sorted(set(seeds)):
        todo = np.array([k for k, s in enumerate(seeds) if s == seed])

        def keep(points, res):
            out[points] = res.returns.mean(axis=1)

        evaluate_points(ag, theta, dirs, coords, todo, Budget(episodes=episodes), seed=seed, deterministic=False,
                        workers=None if len(todo) > 1 else 1, on_chunk=keep)
    return out


def shape_error(s: np.ndarray, ref: np.ndarray) -> float:
    d = [np.diff(s, axis=a) - np.diff(ref, axis=a) for a in (0, 1)]
    return float(np.sqrt(np.mean(np.concatenate([x.ravel() for x in d]) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=9)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--reference", type=int, default=200)
    parser.add_argument("--replicates", type=int, default=3)
    parser.add_argument("--envs", default="CartPole-v1,Pendulum-v1")
    args = parser.parse_args()
    from rlscape import load_checkpoint
    from rlscape.core.directions import random_direction

    g = args.grid
    a = np.linspace(-1, 1, g)
    coords = np.stack([x.ravel() for x in np.meshgrid(a, a, indexing="ij")], axis=1)
    ratios = []
    for env_id in args.envs.split(","):
        ag = load_checkpoint(agent(env_id))
        theta = ag.parameters("actor")
        dirs = [random_direction(theta, 0, i).values for i in range(2)]
        ref = surface(ag, theta, dirs, coords, args.reference, [10**6] * len(coords)).reshape(g, g)
        errs = {"crn": [], "independent": []}
        for r in range(args.replicates):
            crn = surface(ag, theta, dirs, coords, args.episodes, [r] * len(coords)).reshape(g, g)
            ind = surface(ag, theta, dirs, coords, args.episodes, [1000 * (r + 1) + k for k in range(len(coords))]).reshape(g, g)
            errs["crn"].append((np.sqrt(np.mean((crn - ref) ** 2)), shape_error(crn, ref)))
            errs["independent"].append((np.sqrt(np.mean((ind - ref) ** 2)), shape_error(ind, ref)))
        (v_c, s_c), (v_i, s_i) = (np.mean(errs[k], axis=0) for k in ("crn", "independent"))
        ratios.append(s_i / s_c)
        print(f"{env_id}: {g}×{g} plane, {args.episodes} episodes/point vs a {args.reference}-episode reference "
              f"(return range {np.ptp(ref):.1f}), {args.replicates} replicates")
        print(f"  value RMSE: CRN {v_c:.2f}, independent {v_i:.2f} (ratio {v_i / v_c:.2f})")
        print(f"  shape RMSE (neighbour differences): CRN {s_c:.2f}, independent {s_i:.2f} (ratio {s_i / s_c:.2f})")
    result("CRN shape-error ratio (independent / CRN), " + " | ".join(
        f"{e} {r:.2f}×" for e, r in zip(args.envs.split(","), ratios, strict=True)), f"{min(ratios):.2f}× min", "CRN clearly better (> 1)")


if __name__ == "__main__":
    main()
