"""Benchmarks 1 and 2: a classic-control plane with rlscape vs the reference design.

The reference design evaluated every grid point in a fresh process that loaded the SB3 model,
perturbed it and ran ``evaluate_policy`` on one env. Here it is timed on a sample of points (with
rlscape's own directions) and extrapolated to the grid, assuming one such process per core in
parallel — its most favourable case. rlscape is timed as a user runs it: the ``rlscape plane``
command, start-up and writing the results included.

    .venv/bin/python benchmarks/classic_vs_reference.py --env CartPole-v1 [--grid 31] [--episodes 50] [--sample 3]

Last line: the ratio (reference wall time / rlscape wall time) and its target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import agent, cores, reference_point_seconds, result, save_reference_directions  # noqa: E402

TARGETS = {"CartPole-v1": 200.0, "Pendulum-v1": 100.0, "Acrobot-v1": 100.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1", choices=sorted(TARGETS))
    parser.add_argument("--grid", type=int, default=31)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--sample", type=int, default=3, help="reference points timed (then extrapolated)")
    args = parser.parse_args()
    ckpt = agent(args.env)
    n_points = args.grid**2

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plane"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rlscape.cli", "plane", str(ckpt), "--out", str(out), "--grid", str(args.grid),
                        "--episodes", str(args.episodes), "--no-plot"], check=True, stderr=subprocess.DEVNULL)
        t_ours = time.perf_counter() - t0
        run = json.loads((out / "run.json").read_text())
        steps = run["env_steps_this_session"]
        d1, d2 = ({k: v for k, v in np.load(out / "directions" / f"dir{i}.npz").items() if not k.startswith("__")} for i in (1, 2))
        dirs = save_reference_directions(Path(tmp) / "dirs.npz", d1, d2)
        grid = np.linspace(-1, 1, args.grid)
        rng = np.random.default_rng(0)
        coords = [(float(rng.choice(grid)), float(rng.choice(grid))) for _ in range(args.sample)]
        times = reference_point_seconds(ckpt, dirs, coords, args.episodes)

    per_point = float(np.mean(times))
    t_ref = per_point * n_points / cores()
    print(f"{args.env}: {args.grid}×{args.grid} plane × {args.episodes} episodes, trained PPO, {cores()} cores")
    print(f"rlscape plane (command, start-up included): {t_ours:.1f} s, {steps:,} env steps, {steps / t_ours:,.0f} steps/s "
          f"[{run.get('env_engine', '?')} envs]")
    print(f"reference design: {per_point:.2f} s per point (sample of {args.sample}: {', '.join(f'{t:.1f}' for t in times)} s) "
          f"→ {t_ref:,.0f} s for {n_points} points on {cores()} cores")
    result(f"{args.env} plane vs reference design", f"{t_ref / t_ours:,.0f}×", f"≥ {TARGETS[args.env]:.0f}×")


if __name__ == "__main__":
    main()
