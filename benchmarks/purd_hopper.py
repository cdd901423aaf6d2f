"""Benchmark: the post-update return distribution of a TD3 Hopper-v5 checkpoint — env-steps/s vs raw stepping.

N TD3 actor updates (one Adam step each on a minibatch of 256 from the saved buffer), each
evaluated for one deterministic episode from the fixed initial state, all cores. Raw: one process
per core stepping the same evaluation envs with random actions, resetting finished episodes (the
simulator's cost and nothing else). Reported: env-steps/s over the evaluation vs raw (target
≥ 70 %), and the share of the wall time spent in the updates (target ≤ 10 %).

    .venv/bin/python benchmarks/purd_hopper.py [--checkpoint DIR | --long] [--updates 1000] [--seconds 10] [--workers N]

Without ``--checkpoint`` a small TD3 Hopper-v5 run (4 000 steps, ~1 min) is trained once into
``benchmarks/.cache/``; its agents fall within ~95 steps. ``--long`` trains (once, ~45 min on 2
cores) a 120 000-step run with the RL-Zoo settings, whose episodes are longer, as the paper's trained
agents are: the share of the updates falls with the episode length (an update costs the same
whatever the episode). Last line: evaluation env-steps/s / raw.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE, cores, result  # noqa: E402
from mujoco_vs_raw import _raw_worker  # noqa: E402


def td3_checkpoint(steps: int = 4000, save_every: int = 4000, learning_starts: int = 1000) -> Path:
    """A TD3 Hopper-v5 checkpoint with optimizer state and replay buffer at ``steps`` (trained once, cached).

    The default: a 4 000-step run (agents fall within ~95 steps). ``--long``: 120 000 steps with the
    RL-Zoo settings (10 000 random steps first)."""
    run = CACHE / ("td3-Hopper-v5" if steps == 4000 else f"td3-Hopper-v5-{steps // 1000}k")
    last = run / "checkpoints" / f"{steps:010d}"
    if (last / "model.zip").is_file():
        return last
    from rlscape.training.train import train

    t0 = time.perf_counter()
    train("Hopper-v5", "td3", steps=steps, out=run, save_every=save_every, seed=0, n_envs=1,
          hyperparams={"learning_starts": learning_starts}, device="cpu", progress=steps > 4000)
    print(f"(trained the {steps}-step TD3 Hopper-v5 agent in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--long", action="store_true", help="a 120k-step checkpoint (trained once, ~45 min)")
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0, help="raw stepping time")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args()
    ckpt = args.checkpoint or (td3_checkpoint(120_000, 20_000, 10_000) if args.long else td3_checkpoint())
    n = args.workers or cores()

    from rlscape.analyses.purd import PurdSpec, purd

    with mp.get_context("fork").Pool(n) as pool:
        raw = sum(pool.map(_raw_worker, [(str(ckpt), 64, args.seconds, s) for s in range(n)]))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        purd(PurdSpec(checkpoint=str(ckpt), updates=args.updates), Path(tmp) / "purd", workers=n, progress=False)
        wall = time.perf_counter() - t0
        run = json.loads((Path(tmp) / "purd" / "run.json").read_text())
    steps, t_upd, t_eval = run["env_steps_this_session"], run["update_time_s"], run["eval_time_s"]
    ours = steps / t_eval
    print(f"Hopper-v5 TD3 {ckpt}, {n} processes: raw random-action stepping {raw:,} env-steps/s")
    print(f"rlscape purd, {args.updates} updates × 1 deterministic episode: {steps:,} env steps "
          f"({steps / (args.updates + 1):.0f} per episode); evaluation {t_eval:.1f} s "
          f"({ours:,.0f} env-steps/s), updates {t_upd:.1f} s ({1e3 * t_upd / args.updates:.1f} ms each, "
          f"{100 * t_upd / (t_upd + t_eval):.0f} % of updates + evaluation; target ≤ 10 %); {wall:.1f} s in all")
    print(f"overall (updates included): {steps / (t_upd + t_eval):,.0f} env-steps/s = {100 * steps / (t_upd + t_eval) / raw:.0f} % of raw")
    result("purd Hopper-v5 evaluation vs raw stepping", f"{100 * ours / raw:.0f} %", "≥ 70 %")


if __name__ == "__main__":
    main()
