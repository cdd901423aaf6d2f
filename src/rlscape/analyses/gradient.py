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
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import kind_attrs
from rlscape.core.params import NamedArrays
from rlscape.core.pg import BASELINES, FlatPolicy, GradientEstimate, reinforce, torch_threads
from rlscape.core.policy import Agent
from rlscape.core.runs import is_training_run, select_checkpoints
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


# -- checkpoints and training runs ------------------------------------------------------------------
# A minimal private copy of rlscape.core.runs (same semantics) until that module is merged.

def targets(source: str | Path, checkpoints: str | None = None) -> list[tuple[int | None, Path]]:
    """``[(None, checkpoint)]`` for one checkpoint, or ``[(step, folder), ...]`` for a training run."""
    path = Path(source)
    if path.is_dir() and is_training_run(path):
        found = select_checkpoints(path, checkpoints)
        if not found:
            raise RlscapeError(f"{path} is a training run without readable checkpoints (checkpoints/<step>/model.zip)")
        return [(s, p) for s, p in found]
    if checkpoints is not None:
        raise RlscapeError("--checkpoints applies to a training run directory (with checkpoints/); drop it for a single checkpoint")
    return [(None, path)]


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


def step_dir(out: Path, step: int | None) -> Path:
    """Where one checkpoint's outputs go: ``OUT`` or ``OUT/steps/<10-digit step>``."""
    return out if step is None else out / "steps" / f"{step:010d}"


def prepare_run(out: Path, spec: dict[str, Any], overwrite: bool, summary_name: str) -> Any:
    """``RunDir.prepare`` plus: per-checkpoint outputs of another spec (or on ``--overwrite``) are removed,
    so a resumed run reuses only what this very spec computed."""
    import shutil

    from rlscape.core.store import RunDir

    old = RunDir(out).read_spec() if Path(out).is_dir() else None
    run = RunDir.prepare(out, spec, overwrite)
    if overwrite or old != spec:
        if (out / "steps").is_dir():
            shutil.rmtree(out / "steps")
        (out / summary_name).unlink(missing_ok=True)
    return run


def write_json(path: Path, fields: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(fields), indent=2, default=float))
    tmp.replace(path)


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# -- the analysis as the CLI runs it ---------------------------------------------------------------

def run_gradient(source: str | Path, out: str | Path, *, episodes: int | None = 100, steps: int | None = None, kind: str = "reinforce",
                 baseline: str = "mean", gamma: float = 1.0, which: str = "actor", seed: int = 0, n_batches: int = 10,
                 checkpoints: str | None = None, env_id: str | None = None, algo: str | None = None,
                 overwrite: bool = False, progress: bool = True) -> Any:
    """Gradient (or update-step) directions of a checkpoint or of every checkpoint of a training run.

    Writes ``directions/gradient.npz`` (or ``steps/<step>/gradient.npz`` per checkpoint of a run)
    and ``results.zarr`` with ``grad_norm``, ``grad_stderr``, ``return_mean`` (dim ``step`` for a run).
    ``steps`` (instead of ``episodes``) collects episodes until at least that many steps.
    """
    import xarray as xr

    from rlscape.core.policy import load_checkpoint
    from rlscape.core.store import package_versions

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
    todo = targets(source, checkpoints)
    agents = {}
    for step, path in todo[:1]:  # check the first before touching --out
        agents[step] = load_checkpoint(path, env_id, algo=algo)
        if kind == "reinforce":
            check_stochastic(agents[step], "the policy gradient")
        FlatPolicy(agents[step], which)
    spec = {"analysis": "gradient", "source": str(Path(source).resolve()), "episodes": episodes, "steps": steps, "kind": kind,
            "baseline": baseline, "gamma": gamma, "params": which, "seed": seed, "n_batches": n_batches,
            "checkpoints": [s for s, _ in todo] if todo[0][0] is not None else None, "env_id": env_id, "algo": algo}
    out = Path(out)
    run = prepare_run(out, spec, overwrite, "gradient.json")
    run.update_run(status="running", versions=package_versions(), started=stamp(),
                   seeds={"direction_episodes": stream_seeds(seed, "direction"),
                          "batches": "episodes split in order into n_batches contiguous batches",
                          "baseline": "mean: leave-one-out mean return of the other episodes of the batch"})
    rows = []
    for step, path in todo:
        here = step_dir(out, step)
        summary = here / "gradient.json"
        if summary.is_file() and (here / ("gradient.npz" if step is not None else "directions/gradient.npz")).is_file():
            rows.append(json.loads(summary.read_text()))
            continue
        agent = agents.get(step) or load_checkpoint(path, env_id, algo=algo)
        with torch_threads(sum(v.size for v in agent.parameters(which).values())):
            est = _estimate(agent, path, kind, episodes, steps, seed, which, n_batches, baseline, gamma, progress)
        d = est.direction()
        d.meta.update(checkpoint=str(Path(path).resolve()), step=step)
        d.save(here / "gradient.npz" if step is not None else out / "directions" / "gradient.npz")
        np.savez(here / ("gradient_se.npz" if step is not None else "directions/gradient_se.npz"), **est.se)
        tr, tr_eps = train_curve(Path(path))
        row = {"step": -1 if step is None else step, "grad_norm": est.norm, "grad_stderr": est.stderr,
               "return_mean": float(est.meta.get("return_mean", float("nan"))), "episodes": int(est.meta.get("episodes", 0)),
               "env_steps": int(est.meta.get("steps", 0)), "n_batches": est.n_batches, "train_return": tr, "train_episodes": tr_eps}
        write_json(summary, row)
        rows.append(row)
        log.info("%s: ‖g‖ = %.4g ± %.2g (stderr)", f"step {step}" if step is not None else Path(path).name, est.norm, est.stderr)
    ds = xr.Dataset({k: ("step", np.array([r[k] for r in rows])) for k in rows[0] if k != "step"},
                    coords={"step": np.array([r["step"] for r in rows], np.int64)})
    ds["grad_norm"].attrs["long_name"] = "‖g‖ (mean over episodes)"
    ds["grad_stderr"].attrs["long_name"] = "standard error of g: sqrt(Σ se_i²), se from independent batches"
    if todo[0][0] is None:
        ds = ds.isel(step=0, drop=True)
    ds.attrs.update(**kind_attrs("gradient"), estimator=kind, baseline=baseline, gamma=gamma, params=which, seed=seed,
                    source=str(Path(source).resolve()), over_training=int(todo[0][0] is not None))
    run.write_dataset(ds)
    run.update_run(status="complete", finished=stamp())
    return ds


def _estimate(agent: Agent, path: Path, kind: str, episodes: int | None, steps: int | None, seed: int, which: str,
              n_batches: int, baseline: str, gamma: float, progress: bool) -> GradientEstimate:
    if kind == "update":
        return update_step(agent, path, seed=seed, which=which, n_batches=n_batches)
    if episodes is not None:
        traj = collect(agent, episodes, seed, stream="direction", progress=progress)
    else:
        traj = collect_steps(agent, int(steps or 1), seed, stream="direction")
    return reinforce(agent, traj, baseline=baseline, gamma=gamma, which=which, n_batches=n_batches)
