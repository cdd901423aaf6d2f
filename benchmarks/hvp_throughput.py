"""Policy-Hessian-vector products per second: rlscape's operator on a fixed batch vs a naive loop.

rlscape (``PolicyHessian``): the per-episode scores J and the graph of Σ_τ A_τ g_τ are built once
from one batched forward over every step of every episode; each product is two J-matvecs and one
backward. Baseline: the seed's Algorithm 1 as written, one episode at a time (its steps batched),
a create_graph backward and a double-backward per episode for every product. Both give the same
vector (checked). Run on the quickstart CartPole PPO agent (trained first if missing):

    .venv/bin/python benchmarks/hvp_throughput.py [CHECKPOINT] [--episodes 100] [--products 50]

Last line: the ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="runs/quickstart/agent")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--products", type=int, default=50, help="HVPs timed for rlscape")
    parser.add_argument("--baseline-products", type=int, default=3, help="HVPs timed for the naive loop")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import rlscape
    from rlscape.core.pg import FlatPolicy, PolicyHessian, batch_tensors
    from rlscape.core.trajectories import collect
    from rlscape.training.quickstart import train_quickstart_agent

    ckpt = Path(args.checkpoint)
    if not ckpt.exists():
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _common import AGENTS, agent

        agent(ckpt.name) if ckpt.name in AGENTS and ckpt.parent.name == ".cache" else train_quickstart_agent(ckpt)
    agent = rlscape.load_checkpoint(ckpt)
    traj = collect(agent, args.episodes, seed=0)
    print(f"{agent.env.env_id} {agent.algo.upper()}: {traj.n_episodes} episodes, {int(traj.lengths.sum())} steps, "
          f"mean return {traj.returns.mean():.1f}")

    t0 = time.perf_counter()
    op = PolicyHessian(agent, traj)
    setup = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    vs = rng.standard_normal((args.products, op.size))
    t0 = time.perf_counter()
    for v in vs:
        op.matvec(v)
    ours = args.products / (time.perf_counter() - t0)
    print(f"rlscape: {op.size} parameters, set-up {setup:.2f} s, {ours:.1f} HVPs/s ({op.mode})")

    # -- the naive per-episode loop (seed 004, Algorithm 1, averaged) --
    fp = FlatPolicy(agent)
    obs, actions, ep = batch_tensors(traj, fp.dtype)
    A = traj.returns - traj.returns.mean()
    starts = np.concatenate([[0], np.cumsum(traj.lengths)])

    def naive(v: np.ndarray) -> np.ndarray:
        vt = torch.as_tensor(v, dtype=fp.dtype)
        acc = torch.zeros(fp.size, dtype=fp.dtype)
        for i in range(traj.n_episodes):
            theta = fp.theta.clone().requires_grad_(True)
            sl = slice(int(starts[i]), int(starts[i + 1]))
            lp = fp.step_log_probs(theta, obs[sl], actions[sl]).sum()
            (g,) = torch.autograd.grad(lp, theta, create_graph=True)
            gv = g @ vt
            (hv,) = torch.autograd.grad(gv, theta)
            acc += (g.detach() * gv.detach() + hv) * float(A[i])
        return (acc / traj.n_episodes).double().numpy()

    t0 = time.perf_counter()
    for v in vs[: args.baseline_products]:
        ref = naive(v)
    theirs = args.baseline_products / (time.perf_counter() - t0)
    ok = np.abs(ref - op.matvec(vs[args.baseline_products - 1])).max() / np.abs(ref).max()
    print(f"naive per-episode loop: {theirs:.2f} HVPs/s (max relative difference to rlscape {ok:.1e})")
    print(f"ratio rlscape / naive: {ours / theirs:.1f}x")


if __name__ == "__main__":
    main()
