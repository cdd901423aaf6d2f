"""Speed round two, benchmark 2: adaptive episode budgets vs fixed ones at the same worst-point error.

On a plane of a trained agent (CartPole-v1 or Pendulum-v1, 15×15, ±1 filter-normalised random
directions):

- reference: 400 episodes per point with **another seed** (its episodes are independent of the
  candidates', so their errors do not cancel);
- fixed budgets E = 10 … 320: one 320-episode run; replicate i of budget E is the mean of
  episodes iE … (i+1)E−1 (episode ranges of an E-episode budget: common random numbers, fixed
  forward blocks), all 320 / E disjoint replicates;
- adaptive: ``--episodes auto --target-sem S`` for a few S (min 10, max 400 episodes), one run
  per replicate with its own seed.

The worst-point error max_k |mean_k − ref_k| of one run is a maximum over points, so it is noisy:
each budget's figure is the mean over its replicates. For each S: the smallest fixed budget whose
mean worst-point error is at most the adaptive one's — searched over every E from 10 to 320, not
only the printed ladder (a coarse ladder would flatter the adaptive budget: an error between
E = 30 and E = 40 would be charged 40) — and the ratio of episodes used (adaptive mean total /
fixed E × points). An oracle line shows what a rule that knew every point's variance would use
(the best of 60 targets, so an optimistic floor; the adaptive figure is also the best of its
targets). The reference's own noise (its SEM, shown) is part of every error alike.

    .venv/bin/python benchmarks/adaptive_budgets.py --env CartPole-v1 [--grid 15] [--targets 4,8,16]

Last line: the best (lowest) ratio over the targets whose worst-point error a fixed budget
reaches (target ≤ 40 %).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import agent, cores, result  # noqa: E402

FIXED = (10, 15, 20, 30, 40, 60, 80, 120, 160, 240, 320)  # printed; the comparison uses every E from 10 to 320
EVERY = range(10, max(FIXED) + 1)


def oracle(returns: np.ndarray, ref_returns: np.ndarray, r: np.ndarray, worst: dict[int, float], m: int) -> str:
    """What any rule that equalises the SEM could save at best: each point's σ_k known in advance (from
    the independent reference), n_k = max(m, ⌈σ_k² / S²⌉), its error measured on the fixed run's
    episodes (disjoint replicates of the prefix structure, common random numbers intact)."""
    sigma2 = np.var(ref_returns, axis=1, ddof=1)
    best = None
    for S in np.geomspace(2, 200, 60):
        n = np.clip(np.ceil(sigma2 / S**2), m, 400).astype(int)
        width = int(n.max())
        reps = returns.shape[1] // width
        if reps < 1:
            continue
        mask = np.arange(width)[None, :] < n[:, None]
        errs = [np.max(np.abs((returns[:, i * width:(i + 1) * width] * mask).sum(axis=1) / n - r)) for i in range(reps)]
        err = float(np.mean(errs))
        enough = [E for E in EVERY if worst[E] <= err]
        if enough:
            ratio = n.sum() / (enough[0] * r.size)
            if best is None or ratio < best[0]:
                best = (ratio, S, err, enough[0], reps)
    if best is None:
        return "oracle allocation: no target comparable to a fixed budget"
    ratio, S, err, E, reps = best
    return (f"oracle allocation (σ_k known from the reference, n_k = max({m}, ⌈σ_k²/S²⌉), best S = {S:.1f}): worst-point "
            f"error {err:.1f} ({reps} replicates) as good as E={E} with {100 * ratio:.0f} % of its episodes — the floor "
            f"for any rule that equalises the SEM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1", choices=["CartPole-v1", "Pendulum-v1"])
    parser.add_argument("--grid", type=int, default=15)
    parser.add_argument("--targets", default=None, help="target SEMs, comma-separated (default per env)")
    parser.add_argument("--replicates", type=int, default=8, help="independent repeats behind each worst-point error")
    parser.add_argument("--min-episodes", type=int, default=10, help="--min-episodes of the adaptive runs")
    args = parser.parse_args()
    import rlscape

    targets = [float(x) for x in (args.targets or ("8,16,32" if args.env == "CartPole-v1" else "24,40,64")).split(",")]
    ckpt = agent(args.env)
    a = rlscape.load_checkpoint(ckpt)
    kw = {"grid": args.grid, "magnitude": 1.0, "workers": cores(), "progress": False}
    t0 = time.perf_counter()
    theta = a.parameters("actor")
    dirs = {f"dir{i}": rlscape.random_direction(theta, 1, i - 1) for i in (1, 2)}  # given to every run: one plane
    ref = rlscape.plane(a, dir1=dirs["dir1"], dir2=dirs["dir2"], episodes=400, seed=1, **kw)
    fixed = rlscape.plane(a, dir1=dirs["dir1"], dir2=dirs["dir2"], episodes=max(FIXED), seed=0, **kw)
    print(f"{args.env}: {args.grid}×{args.grid} plane of a trained PPO agent, {cores()} cores "
          f"(reference 400 episodes, seed 1: {time.perf_counter() - t0:.0f} s with the 320-episode run)")
    r = ref.return_mean.values.ravel()
    print(f"reference SEM: median {np.median(ref.return_sem.values):.2f}, max {np.max(ref.return_sem.values):.2f}; "
          f"return range {r.min():.1f} … {r.max():.1f}")
    returns = fixed.returns.values.reshape(r.size, -1)
    # fixed budget E: the mean over disjoint replicates (episodes rE … (r+1)E−1) of the worst-point error
    worst = {E: float(np.mean([np.max(np.abs(returns[:, i * E : (i + 1) * E].mean(axis=1) - r))
                               for i in range(max(FIXED) // E)])) for E in EVERY}
    print("fixed budgets, worst-point error (mean of replicates): " + ", ".join(f"E={E}: {worst[E]:.1f}" for E in FIXED))
    print(oracle(returns, ref.returns.values.reshape(r.size, -1), r, worst, args.min_episodes))
    ratios = []
    for S in targets:
        t1 = time.perf_counter()
        errs, used, ranges = [], [], []
        for rep in range(args.replicates):  # independent episodes: seeds 10, 11, …
            ad = rlscape.plane(a, dir1=dirs["dir1"], dir2=dirs["dir2"], episodes="auto", target_sem=S, min_episodes=args.min_episodes,
                               max_episodes=400, seed=10 + rep, **kw)
            n = ad.n_episodes.values.ravel()
            errs.append(float(np.max(np.abs(ad.return_mean.values.ravel() - r))))
            used.append(int(n.sum()))
            ranges.append((int(n.min()), int(n.max()), int(np.median(n))))
        err, n_used = float(np.mean(errs)), float(np.mean(used))
        enough = [E for E in EVERY if worst[E] <= err]
        line = (f"adaptive S={S:g}: {n_used:,.0f} episodes (per point min/max/median by replicate {ranges}), "
                f"worst-point error {err:.1f} (replicates {', '.join(f'{e:.1f}' for e in errs)}), "
                f"{(time.perf_counter() - t1) / args.replicates:.1f} s per run")
        if enough:
            E = enough[0]
            ratio = n_used / (E * r.size)
            ratios.append(ratio)
            line += f"; smallest fixed budget as good: E={E} ({E * r.size:,} episodes) → {100 * ratio:.0f} %"
        else:
            line += f"; no fixed budget up to {max(FIXED)} reaches it"
        print(line)
    figure = f"{100 * min(ratios):.0f} % of the episodes ({args.env})" if ratios else "no comparable fixed budget"
    result(f"adaptive vs fixed budget, {args.env}", figure, "≤ 40 %")


if __name__ == "__main__":
    main()
