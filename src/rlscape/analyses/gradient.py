"""Policy gradients (methods.md §4): REINFORCE at θ, the algorithm's own update step, over training.

Read top to bottom: sample a batch of episodes at θ from the *direction* episode stream
(:func:`rlscape.core.trajectories.collect`, independent of the episodes any evaluation along the
result uses) → the REINFORCE estimate with reward-to-go and a leave-one-out baseline, with a
standard error from independent batches (:func:`rlscape.core.pg.reinforce`) → a named
:class:`~rlscape.core.directions.Direction`.

``kind='update'`` instead takes the algorithm's own next update from the checkpoint's saved state
(:class:`rlscape.core.updater.Updater`) and returns the step Δθ it takes.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import kind_attrs
from rlscape.core.lifecycle import Run
from rlscape.core.params import NamedArrays
from rlscape.core.pg import BASELINES, FlatPolicy, GradientEstimate, reinforce, torch_threads
from rlscape.core.policy import Agent
from rlscape.core.trajectories import check_stochastic, collect, collect_steps, stream_seeds

log = logging.getLogger(__name__)

KINDS = ("reinforce", "update")
UPDATE_BATCH_STREAM = 0x0BA7C4  # seed-sequence tag of the independent updates of update_step


def estimate_gradient(agent: Agent, *, episodes: int = 100, seed: int = 0, kind: str = "reinforce", baseline: str = "mean",
                      gamma: float = 1.0, which: str = "actor", n_batches: int = 10, checkpoint: str | Path | None = None,
                      progress: bool = False, stream: str = "direction") -> GradientEstimate:
    """The policy-gradient estimate at the agent's θ (``reinforce``) or the algorithm's update step (``update``).

    ``reinforce`` samples ``episodes`` episodes of ``stream`` (default ``direction``: independent of
    the evaluation episodes of the same ``seed``, so a slope measured along the estimate is
    out-of-sample). ``update`` needs ``checkpoint`` (the SB3 model with its optimizer state) and ignores
    ``baseline``/``gamma``: it runs the algorithm's own ``train()`` on a copy of the model.
    """
    if kind not in KINDS:
        raise RlscapeError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if episodes < 1:
        raise RlscapeError(f"--episodes must be a positive integer, not {episodes}")
    if kind == "update":
        if checkpoint is None:
            raise RlscapeError("--kind update needs an SB3 checkpoint (its optimizer state); give a checkpoint folder or .zip")
        return update_step(agent, checkpoint, seed=seed, which=which, n_batches=n_batches)
    traj = collect(agent, episodes, seed, stream=stream, progress=progress)
    return reinforce(agent, traj, baseline=baseline, gamma=gamma, which=which, n_batches=n_batches)


# -- the algorithm's own update step ---------------------------------------------------------------

def update_seed(seed: int, batch: int) -> int:
    """The seed of the ``batch``-th independent update of ``update_step`` (its rollout, minibatches, noise)."""
    return int(np.random.SeedSequence([int(seed), UPDATE_BATCH_STREAM, int(batch)]).generate_state(1)[0])


def update_step(agent: Agent, checkpoint: str | Path, *, seed: int = 0, which: str = "actor", n_batches: int = 10) -> GradientEstimate:
    """Δθ of the algorithm's own next update from the saved state (methods.md §4), via :class:`~rlscape.core.updater.Updater`.

    PPO/A2C/TRPO: ``train()`` on a fresh rollout of the training size (``n_steps × n_envs``) in
    the checkpoint's training pipeline (VecNormalize frozen, rewards normalised as trained).
    SAC/TD3/DDPG/DQN: one gradient step of ``train()`` on a replay minibatch from the checkpoint's
    ``replay_buffer.pkl``. Each of ``n_batches`` updates starts from the saved state (optimizer
    included) with its own seed (:func:`update_seed`); the step saved is their mean, its standard
    error their standard deviation / √n_batches.
    """
    from rlscape.core.updater import Updater

    B = max(2, int(n_batches))
    with Updater.from_checkpoint(checkpoint, which=which, agent=agent) as up:
        results = [up.step(update_seed(seed, b)) for b in range(B)]
        info = dict(up.info)
    names = list(results[0].delta)
    stack = np.stack([np.concatenate([r.delta[n].astype(np.float64).reshape(-1) for n in names]) for r in results])
    shapes = {n: results[0].delta[n].shape for n in names}
    sizes = [int(np.prod(shapes[n])) for n in names]

    def named(v: np.ndarray) -> NamedArrays:
        return {n: p.reshape(shapes[n]).astype(np.float32) for n, p in zip(names, np.split(v, np.cumsum(sizes)[:-1]), strict=True)}

    meta = {"kind": "update", "estimator": f"{agent.algo} train()", "n_batches": B, "seed": seed, "params": which,
            "optimizer": info["optimizer"], "norm_reward": info["norm_reward"], "rollout_steps": results[0].rollout_steps,
            "gradient_steps": results[0].gradient_steps, "label": f"{agent.algo.upper()} update step Δθ (mean of {B})"}
    return GradientEstimate(named(stack.mean(0)), named(stack.std(0, ddof=1) / math.sqrt(B)), B, meta)


# -- the analysis as the CLI runs it ---------------------------------------------------------------

def train_curve(folder: Path) -> tuple[float, int]:
    """(mean of the recent training returns, episodes so far) from a run checkpoint's checkpoint.json."""
    f = folder / "checkpoint.json"
    if not f.is_file():
        return float("nan"), 0
    try:
        info = json.loads(f.read_text())
    except json.JSONDecodeError:
        return float("nan"), 0
    recent = info.get("recent_returns") or []
    return (float(np.mean(recent)) if recent else float("nan")), int(info.get("episodes", 0))


def run_gradient(source: str | Path, out: str | Path, *, episodes: int | None = 100, steps: int | None = None, kind: str = "reinforce",
                 baseline: str = "mean", gamma: float = 1.0, which: str = "actor", seed: int = 0, n_batches: int = 10,
                 checkpoints: str | None = None, env_id: str | None = None, algo: str | None = None,
                 overwrite: bool = False, progress: bool = True) -> xr.Dataset:
    """Gradient (or update-step) directions of a checkpoint or of every checkpoint of a training run.

    Writes ``directions/gradient.npz`` (``steps/<step>/directions/gradient.npz`` per checkpoint of a
    run) and ``results.zarr`` with ``grad_norm``, ``grad_stderr``, ``return_mean`` (dim ``step`` for
    a run). ``steps`` (instead of ``episodes``) collects episodes until at least that many steps.
    """
    from rlscape.core.lifecycle import checkpoint_or_run
    from rlscape.core.policy import load_checkpoint
    from rlscape.core.runs import first_checkpoint

    if kind not in KINDS:
        raise RlscapeError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if baseline not in BASELINES:
        raise RlscapeError(f"--baseline must be one of {', '.join(BASELINES)}, not {baseline!r}")
    if episodes is not None and steps is not None:
        raise RlscapeError("give --episodes or --steps, not both")
    if steps is not None and steps < 1:
        raise RlscapeError(f"--steps must be a positive integer, not {steps}")
    if episodes is not None and episodes < 1:
        raise RlscapeError(f"--episodes must be a positive integer, not {episodes}")
    if seed < 0:
        raise RlscapeError(f"--seed must be ≥ 0, not {seed}")
    first = first_checkpoint(source, checkpoints)[1]
    agent0 = load_checkpoint(first, env_id, algo=algo)  # check the first before touching --out
    if kind == "reinforce":
        check_stochastic(agent0, "the policy gradient")
    FlatPolicy(agent0, which)
    spec = {"kind": "gradient", "source": str(Path(source).resolve()), "episodes": episodes, "steps": steps, "estimator": kind,
            "baseline": baseline, "gamma": gamma, "params": which, "seed": seed, "n_batches": n_batches,
            "env_id": env_id, "algo": algo}
    seeds: dict[str, Any] = {"batches": "episodes split in order into n_batches contiguous batches",
             "baseline": "mean: leave-one-out mean return of the other episodes of the batch"}
    seeds.update({"update": f"SeedSequence([{seed}, {UPDATE_BATCH_STREAM:#x}, batch]) per independent update"} if kind == "update"
                 else {"direction_episodes": stream_seeds(seed, "direction")})
    attrs = {**kind_attrs("gradient"), "estimator": kind, "baseline": baseline, "gamma": gamma, "params": which, "seed": seed,
             "source": str(Path(source).resolve())}

    def compute(step: int | None, path: Path, run: Run) -> xr.Dataset:
        agent = agent0 if Path(path) == first else load_checkpoint(path, env_id, algo=algo)
        with torch_threads(sum(v.size for v in agent.parameters(which).values())):
            est = _estimate(agent, path, kind, episodes, steps, seed, which, n_batches, baseline, gamma, progress)
        d = est.direction()
        d.meta.update(checkpoint=str(Path(path).resolve()), step=step)
        run.dir.save_direction("gradient", d, agent.parameters(which), replace=True)
        np.savez(run.path / "directions" / "gradient_se.npz", **est.se)  # type: ignore[arg-type]
        tr, tr_eps = train_curve(Path(path))
        row = {"grad_norm": est.norm, "grad_stderr": est.stderr,
               "return_mean": float(est.meta.get("return_mean", float("nan"))), "episodes": int(est.meta.get("episodes", 0)),
               "env_steps": int(est.meta.get("steps", 0)), "n_batches": est.n_batches, "train_return": tr, "train_episodes": tr_eps}
        log.info("%s: ‖g‖ = %.4g ± %.2g (stderr)", f"step {step}" if step is not None else Path(path).name, est.norm, est.stderr)
        ds = xr.Dataset({k: ((), np.asarray(v)) for k, v in row.items()}, attrs=attrs)
        ds["grad_norm"].attrs["long_name"] = "‖g‖ (mean over episodes)"
        ds["grad_stderr"].attrs["long_name"] = "standard error of g: sqrt(Σ se_i²), se from independent batches"
        return ds

    return checkpoint_or_run(source, out, spec, compute, checkpoints=checkpoints, overwrite=overwrite, progress=progress,
                             record={"seeds": seeds})


def _estimate(agent: Agent, path: Path, kind: str, episodes: int | None, steps: int | None, seed: int, which: str,
              n_batches: int, baseline: str, gamma: float, progress: bool) -> GradientEstimate:
    if kind == "update":
        return update_step(agent, path, seed=seed, which=which, n_batches=n_batches)
    if episodes is not None:
        traj = collect(agent, episodes, seed, stream="direction", progress=progress)
    else:
        traj = collect_steps(agent, int(steps or 1), seed, stream="direction")
    return reinforce(agent, traj, baseline=baseline, gamma=gamma, which=which, n_batches=n_batches)
