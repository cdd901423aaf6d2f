"""Cliffs (methods.md §6, seed 000): label checkpoints by how sharply the return falls along a line,
and the A2C-vs-PPO "cliff dive": does one update hurt more at a cliff than elsewhere?

Read top to bottom: :func:`label_cliffs` (pure, on a line-over-training Dataset) →
:func:`run_cliffs` (store labels + figure) → :func:`one_update` (one A2C or PPO update from a
copy of a checkpoint) → :func:`cliff_dive` (updates, batched evaluation before/after with common
random numbers, Welch t-test) → :func:`dive_table`.

The cliff criterion, as read here (thresholds are parameters). For a checkpoint with mean return
J(α) along the line θ + α·d (α = 0 is the checkpoint):

* *the first step* is the offsets in (0, α₁], where α₁ is the smallest positive offset of the
  line's grid (or ``first_step`` when given); ``side="negative"`` mirrors it, ``"both"`` uses both;
* *fall* = J(0) − min J over the first step (positive = the return dropped);
* a cliff iff fall ≥ ``min_relative_fall``·|J(0)| (50 %: "J falls by ≥ 50 %", with |J(0)| so that
  the rule is right for negative returns) **and** fall > ``min_range_fraction``·R (25 %), where R
  is the global range, max − min of J over every checkpoint and every offset of the line.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from rlscape.core.errors import RlscapeError

log = logging.getLogger(__name__)

SIDES = ("positive", "negative", "both")
CLIFFS_DIR = "cliffs"


# -- labels ----------------------------------------------------------------------------------------

def _mean_returns(ds: xr.Dataset) -> xr.DataArray:
    if "step" not in ds.dims or "alpha" not in ds.dims:
        raise RlscapeError(f"a line over training has dims (step, alpha[, episode]); this one has ({', '.join(map(str, ds.dims))}) — "
                           "give the output of `rlscape line RUN --all-checkpoints`")
    if "return_mean" in ds:
        return ds["return_mean"].transpose("step", "alpha")
    if "returns" in ds and "episode" in ds["returns"].dims:
        return ds["returns"].mean("episode", skipna=True).transpose("step", "alpha")
    raise RlscapeError("the line over training holds neither `return_mean` nor per-episode `returns`")


def label_cliffs(
    ds: xr.Dataset,
    *,
    min_relative_fall: float = 0.5,
    min_range_fraction: float = 0.25,
    first_step: float | None = None,
    side: Literal["positive", "negative", "both"] = "positive",
) -> xr.Dataset:
    """Cliff / non-cliff per checkpoint of a line over training (see the module docstring).

    ``ds``: ``returns`` ``(step, alpha, episode)`` or ``return_mean`` ``(step, alpha)``; the
    grid must hold α = 0. Returns a Dataset over ``step``: ``cliff`` (bool), ``j0``,
    ``j_first`` (min J within the first step), ``fall``, ``relative_fall`` (fall / |J(0)|),
    ``range_fraction`` (fall / global range); thresholds and the global range as attributes.
    """
    if side not in SIDES:
        raise RlscapeError(f"--side must be one of {', '.join(SIDES)}, not {side!r}")
    for name, v in (("--min-fall", min_relative_fall), ("--min-range-fraction", min_range_fraction)):
        if not (math.isfinite(v) and v >= 0):
            raise RlscapeError(f"{name} must be a finite number ≥ 0, not {v}")
    mean = _mean_returns(ds)
    alpha = np.asarray(mean["alpha"].values, np.float64)
    zero = np.flatnonzero(np.isclose(alpha, 0.0, rtol=0, atol=1e-12))
    if zero.size != 1:
        raise RlscapeError("the line's offsets must include α = 0 (the checkpoint itself), e.g. --range=-1,1 with an odd --points")
    i0 = int(zero[0])
    sides = {"positive": (1,), "negative": (-1,), "both": (1, -1)}[side]
    window = np.zeros(alpha.size, bool)
    widths = []
    for sgn in sides:
        on_side = sgn * alpha > 1e-12
        if not on_side.any():
            raise RlscapeError(f"the line has no {'positive' if sgn > 0 else 'negative'} offsets; choose --side to match its range")
        width = float(np.min(sgn * alpha[on_side])) if first_step is None else float(first_step)
        if not width > 0:
            raise RlscapeError(f"--first-step must be positive, not {first_step}")
        inside = on_side & (sgn * alpha <= width * (1 + 1e-9))
        if not inside.any():
            raise RlscapeError(f"--first-step {first_step} holds no offset of the line (the nearest is {np.min(sgn * alpha[on_side]):g})")
        window |= inside
        widths.append(width)
    values = np.asarray(mean.values, np.float64)
    if not np.isfinite(values[:, i0]).all():
        raise RlscapeError("some checkpoints have no finite return at α = 0; finish the line run first")
    j0 = values[:, i0]
    j_first = np.nanmin(np.where(window[None, :], values, np.nan), axis=1)
    global_range = float(np.nanmax(values) - np.nanmin(values))
    fall = j0 - j_first
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = fall / np.abs(j0)
        range_fraction = fall / global_range if global_range > 0 else np.full_like(fall, np.nan)
    cliff = (fall >= min_relative_fall * np.abs(j0)) & (fall > min_range_fraction * global_range)
    out = xr.Dataset(
        {
            "cliff": (("step",), cliff, {"long_name": "cliff (True) or not"}),
            "j0": (("step",), j0, {"long_name": "mean return at the checkpoint (α = 0)"}),
            "j_first": (("step",), j_first, {"long_name": "lowest mean return within the first step"}),
            "fall": (("step",), fall, {"long_name": "J(0) − min J within the first step"}),
            "relative_fall": (("step",), relative, {"long_name": "fall / |J(0)|"}),
            "range_fraction": (("step",), range_fraction, {"long_name": "fall / global range"}),
        },
        coords={"step": ("step", np.asarray(mean["step"].values))},
        attrs={
            "kind": "cliffs", "min_relative_fall": float(min_relative_fall), "min_range_fraction": float(min_range_fraction),
            "first_step": float(max(widths)), "side": side, "global_range": global_range,
            "criterion": "fall = J(0) − min J over offsets in the first step; cliff iff fall ≥ min_relative_fall·|J(0)| "
                         "and fall > min_range_fraction·(max − min of J over all checkpoints and offsets)",
        },
    )
    return out


def run_cliffs(
    line_run: str | Path,
    out: str | Path | None = None,
    *,
    min_relative_fall: float = 0.5,
    min_range_fraction: float = 0.25,
    first_step: float | None = None,
    side: Literal["positive", "negative", "both"] = "positive",
    overwrite: bool = False,
) -> tuple[xr.Dataset, xr.Dataset, Path]:
    """Label the checkpoints of a stored line over training; store the labels in ``out``.

    ``out`` defaults to ``LINE_RUN/cliffs`` (the line's own results are never touched). Returns
    (labels, line, out). The same thresholds rewrite identical labels; other thresholds in an
    existing ``out`` are refused unless ``overwrite``.
    """
    from rlscape.core.results import load
    from rlscape.core.store import RunDir, package_versions

    line = load(line_run)
    labels = label_cliffs(line, min_relative_fall=min_relative_fall, min_range_fraction=min_range_fraction,
                          first_step=first_step, side=side)
    out = Path(out) if out is not None else Path(line_run) / CLIFFS_DIR
    spec = {"kind": "cliffs", "line_run": str(Path(line_run).resolve()), "min_relative_fall": float(min_relative_fall),
            "min_range_fraction": float(min_range_fraction), "first_step": first_step, "side": side}
    same = RunDir(out).read_spec() == spec
    run = RunDir.prepare(out, spec, overwrite or same)
    labels.attrs["line_run"] = spec["line_run"]
    for key in ("env_id", "algo", "direction_label", "seed", "episodes"):
        if key in line.attrs:
            labels.attrs[key] = line.attrs[key]
    run.write_dataset(labels)
    run.update_run(status="complete", versions=package_versions(), finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   n_cliffs=int(labels["cliff"].sum()), n_checkpoints=int(labels.sizes["step"]))
    return labels, line, out


def read_labels(path: str | Path) -> xr.Dataset:
    """Cliff labels from a ``rlscape cliffs`` output, or from a line run holding ``cliffs/``."""
    from rlscape.core.results import load

    p = Path(path)
    if (p / CLIFFS_DIR / "results.zarr").exists() and not (p / "results.zarr").exists():
        p = p / CLIFFS_DIR
    elif (p / "results.zarr").exists() and "cliff" not in load(p) and (p / CLIFFS_DIR / "results.zarr").exists():
        p = p / CLIFFS_DIR
    ds = load(p)
    if "cliff" not in ds or ds["cliff"].dims != ("step",):
        raise RlscapeError(f"{path} holds no cliff labels (a `cliff` variable over `step`); run `rlscape cliffs LINE-RUN` first")
    return ds


# -- the cliff dive: one A2C and one PPO update ----------------------------------------------------

DIVE_STREAM = 0xC11F  # seed-sequence tag of the update rollouts
DIVE_ALGOS = ("a2c", "ppo")
#: methods.md §6: configured alike; the optimisers stay each algorithm's SB3 default (A2C: RMSprop, PPO: Adam)
DIVE_HYPERPARAMS: dict[str, dict[str, Any]] = {
    "common": {"n_envs": 8, "n_steps": 5, "learning_rate": 7e-4, "gae_lambda": 1.0, "ent_coef": 0.0, "vf_coef": 0.5,
               "max_grad_norm": 0.5},
    "a2c": {"normalize_advantage": False},
    "ppo": {"n_epochs": 1, "batch_size": 5, "clip_range": 0.2, "normalize_advantage": False},
}


def update_seed(seed: int, step: int, trial: int) -> int:
    """The rollout seed of one trial (the same for A2C and PPO: both see the same first rollout)."""
    return int(np.random.SeedSequence([int(seed), DIVE_STREAM, int(step), int(trial)]).generate_state(1)[0] % (2**31 - 1))


@dataclass(frozen=True)
class Update:
    """One update: every policy parameter after it, and what it took."""

    params: dict[str, np.ndarray]
    gradient_steps: int  # optimiser steps (A2C: 1; PPO: 1 epoch × 40/5 minibatches = 8)
    rollout_steps: int  # env steps collected (8 envs × 5 steps)


def one_update(checkpoint: str | Path, algo: str, seed: int, agent: Any = None) -> Update:
    """Every policy parameter after one ``algo`` update (A2C or PPO, :data:`DIVE_HYPERPARAMS`) from a checkpoint.

    The checkpoint is loaded into a fresh model (the file is only read); its policy weights are
    copied into a new A2C/PPO with a fresh optimiser, which collects one rollout of 8 envs × 5
    steps in the checkpoint's evaluation pipeline (its wrappers and frozen observation
    normalisation; raw rewards) and makes its update.
    """
    import torch
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rlscape.core.policy import algo_class, load_checkpoint, resolve_model_zip

    if algo not in DIVE_ALGOS:
        raise RlscapeError(f"the cliff dive updates with {' or '.join(DIVE_ALGOS)}, not {algo!r}")
    agent = agent if agent is not None else load_checkpoint(checkpoint)
    if agent.algo not in ("ppo", "a2c", "trpo"):
        raise RlscapeError(f"the cliff dive needs an on-policy actor-critic checkpoint (ppo, a2c, trpo), not {agent.algo}")
    src = algo_class(agent.algo).load(resolve_model_zip(checkpoint), device="cpu")
    hp = {**DIVE_HYPERPARAMS["common"], **DIVE_HYPERPARAMS[algo]}
    n_envs = hp.pop("n_envs")
    policy_kwargs = {k: v for k, v in (src.policy_kwargs or {}).items() if k not in ("optimizer_class", "optimizer_kwargs")}
    venv = DummyVecEnv([agent.env.make for _ in range(n_envs)])
    cls = A2C if algo == "a2c" else PPO
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng():  # SB3 seeds the global RNGs; they are the caller's, so restore them after
            model = cls(type(src.policy), venv, gamma=float(src.gamma), policy_kwargs=policy_kwargs, seed=int(seed),
                        device="cpu", verbose=0, **hp)
            model.policy.load_state_dict(src.policy.state_dict(), strict=True)
            steps_taken = [0]
            optimizer_step = model.policy.optimizer.step

            def counted(*args: Any, **kwargs: Any) -> Any:
                steps_taken[0] += 1
                return optimizer_step(*args, **kwargs)

            model.policy.optimizer.step = counted  # type: ignore[method-assign]
            model.learn(total_timesteps=hp["n_steps"] * n_envs)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        venv.close()
    return Update({n: p.detach().numpy().copy() for n, p in model.policy.named_parameters()},
                  steps_taken[0], int(model.num_timesteps))


def cliff_dive(
    run_dir: str | Path,
    steps: Sequence[int],
    cliff: Sequence[bool],
    out: str | Path | None = None,
    *,
    trials: int = 5,
    episodes: int = 100,
    seed: int = 0,
    deterministic: bool = False,
    workers: int | Any | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> xr.Dataset:
    """One A2C and one PPO update at each labelled checkpoint, ``trials`` times; return changes and Welch t-tests.

    Before and after every update the policy is evaluated on the same ``episodes`` episodes
    (common random numbers), all points of a checkpoint in one batched call. change =
    sign(R0)·(R/R0 − 1) with R0, R the mean returns before and after. For each algorithm the
    changes (all trials of all checkpoints) at cliffs are compared with those elsewhere by
    Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``). Returns a Dataset over
    ``step`` × ``algo`` × ``trial`` (× ``episode``); the t-test as variables over ``algo``.
    """
    from rlscape.core.evaluate import NOISE_STREAM, RESET_STREAM, Budget
    from rlscape.core.execute import evaluate_points
    from rlscape.core.policy import load_checkpoint
    from rlscape.core.runs import select_checkpoints
    from rlscape.core.store import RunDir, package_versions

    if trials < 1:
        raise RlscapeError(f"--trials must be at least 1, not {trials}")
    if episodes < 2:
        raise RlscapeError(f"--episodes must be at least 2 (a mean and its spread), not {episodes}")
    if len(steps) != len(cliff) or not len(steps):
        raise RlscapeError("give at least one labelled checkpoint")
    chosen = select_checkpoints(run_dir, ",".join(str(int(s)) for s in steps))
    label = {int(s): bool(c) for s, c in zip(steps, cliff, strict=True)}
    spec = {"kind": "cliff-dive", "run": str(Path(run_dir).resolve()), "steps": [s for s, _ in chosen],
            "cliff": [label[s] for s, _ in chosen], "trials": trials, "episodes": episodes, "seed": seed,
            "deterministic": deterministic, "hyperparams": DIVE_HYPERPARAMS}
    spec = json.loads(json.dumps(spec))
    if out is not None:
        # finished checkpoints belong to one spec: never reuse them for another
        done = Path(out) / "steps"
        if done.is_dir() and any(done.glob("*.npz")) and (overwrite or RunDir(Path(out)).read_spec() != spec):
            if not overwrite:
                raise RlscapeError(f"{out} holds a different cliff dive; choose another --out, or pass --overwrite to replace it")
            shutil.rmtree(done)
    run = RunDir.prepare(out, spec, overwrite) if out is not None else None
    if run is not None:
        run.update_run(status="running", versions=package_versions(), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       seeds={"update_rollout": f"SeedSequence([{seed}, {DIVE_STREAM:#x}, step, trial]).generate_state(1)[0] % (2**31-1)"
                                                " (the same for A2C and PPO)",
                              "env_reset": f"SeedSequence([{seed}, {RESET_STREAM:#x}, episode]).generate_state(1)[0]",
                              "action_noise": f"PCG64(SeedSequence([{seed}, {NOISE_STREAM:#x}, episode]))"})
    A, T = len(DIVE_ALGOS), trials
    before = np.full((len(chosen), episodes), np.nan)
    after = np.full((len(chosen), A, T, episodes), np.nan)
    update_norm = np.full((len(chosen), A, T), np.nan)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chosen) * (A * T + 1), unit="task", desc="cliff dive", dynamic_ncols=True, mininterval=0.5)
    try:
        for i, (step, folder) in enumerate(chosen):
            part = run.path / "steps" / f"{step:010d}.npz" if run is not None else None
            if part is not None and part.is_file():
                with np.load(part) as z:
                    before[i], after[i], update_norm[i] = z["before"], z["after"], z["update_norm"]
                if bar is not None:
                    bar.update(A * T + 1)
                continue
            agent = load_checkpoint(folder)
            theta0 = agent.parameters("all")
            deltas = []
            for a, algo in enumerate(DIVE_ALGOS):
                for t in range(T):
                    new = one_update(folder, algo, update_seed(seed, step, t), agent=agent).params
                    d = {n: new[n] - theta0[n] for n in theta0}
                    update_norm[i, a, t] = math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in d.values()))
                    deltas.append(d)
                    if bar is not None:
                        bar.update(1)
            K = len(deltas)
            coords = np.vstack([np.zeros((1, K)), np.eye(K)])  # point 0: θ0; point k: θ0 + Δ_k
            got = np.full((K + 1, episodes), np.nan)

            def on_chunk(points: np.ndarray, res: Any, got: np.ndarray = got) -> None:
                got[points] = res.returns

            evaluate_points(agent, theta0, deltas, coords, np.arange(K + 1), Budget(episodes=episodes), seed=seed,
                            deterministic=deterministic, workers=workers, on_chunk=on_chunk)
            before[i], after[i] = got[0], got[1:].reshape(A, T, episodes)
            if bar is not None:
                bar.update(1)
            if part is not None:
                part.parent.mkdir(exist_ok=True)
                tmp = part.with_name(part.stem + ".tmp.npz")
                np.savez(tmp, before=before[i], after=after[i], update_norm=update_norm[i])
                tmp.replace(part)
    finally:
        if bar is not None:
            bar.close()
    ds = dive_dataset([s for s, _ in chosen], [label[s] for s, _ in chosen], before, after, update_norm)
    ds.attrs.update({"kind": "cliff-dive", "run": spec["run"], "seed": seed, "episodes": episodes, "trials": trials,
                     "deterministic": int(deterministic), "hyperparams": json.dumps(DIVE_HYPERPARAMS)})
    if run is not None:
        run.write_dataset(ds)
        run.update_run(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return ds


def change(r0: np.ndarray, r: np.ndarray) -> np.ndarray:
    """sign(R0)·(R/R0 − 1): the relative change of the mean return, positive = better (NaN where R0 = 0)."""
    r0 = np.asarray(r0, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sign(r0) * (np.asarray(r, np.float64) / r0 - 1.0)
    return np.where(r0 == 0, np.nan, out)


def dive_dataset(steps: Sequence[int], cliff: Sequence[bool], before: np.ndarray, after: np.ndarray,
                 update_norm: np.ndarray) -> xr.Dataset:
    """Changes and Welch t-tests from per-episode returns ``before (S, E)`` and ``after (S, A, T, E)``."""
    from scipy import stats

    cliff_arr = np.asarray(cliff, bool)
    r0 = before.mean(axis=1)
    r = after.mean(axis=-1)
    ch = change(r0[:, None, None], r)
    if np.any(r0 == 0):
        log.warning("R0 = 0 at step(s) %s: the relative change is undefined there (NaN)", list(np.asarray(steps)[r0 == 0]))
    A = after.shape[1]
    t_stat, p_val = np.full(A, np.nan), np.full(A, np.nan)
    m_c, m_n, s_c, s_n, n_c, n_n = (np.full(A, np.nan) for _ in range(6))
    for a in range(A):
        x = ch[cliff_arr, a].ravel()
        y = ch[~cliff_arr, a].ravel()
        x, y = x[np.isfinite(x)], y[np.isfinite(y)]
        n_c[a], n_n[a] = x.size, y.size
        if x.size:
            m_c[a] = x.mean()
            s_c[a] = x.std(ddof=1) / math.sqrt(x.size) if x.size > 1 else np.nan
        if y.size:
            m_n[a] = y.mean()
            s_n[a] = y.std(ddof=1) / math.sqrt(y.size) if y.size > 1 else np.nan
        if x.size >= 2 and y.size >= 2:
            res = stats.ttest_ind(x, y, equal_var=False)
            t_stat[a], p_val[a] = float(res.statistic), float(res.pvalue)
    if np.isnan(t_stat).all():
        log.warning("the Welch t-test needs at least 2 changes at cliffs and 2 elsewhere; it is NaN")
    E, T = before.shape[1], after.shape[2]
    return xr.Dataset(
        {
            "cliff": (("step",), cliff_arr, {"long_name": "cliff label of the checkpoint"}),
            "returns_before": (("step", "episode"), before, {"long_name": "episode returns before the update"}),
            "returns_after": (("step", "algo", "trial", "episode"), after, {"long_name": "episode returns after one update"}),
            "r0": (("step",), r0, {"long_name": "mean return before (R0)"}),
            "r": (("step", "algo", "trial"), r, {"long_name": "mean return after (R)"}),
            "change": (("step", "algo", "trial"), ch, {"long_name": "sign(R0)·(R/R0 − 1)"}),
            "update_norm": (("step", "algo", "trial"), update_norm, {"long_name": "‖Δθ‖ of the update (all parameters)"}),
            "welch_t": (("algo",), t_stat, {"long_name": "Welch t statistic, cliff − non-cliff changes"}),
            "welch_p": (("algo",), p_val, {"long_name": "two-sided p-value of the Welch t-test"}),
            "mean_change_cliff": (("algo",), m_c, {"long_name": "mean change at cliffs"}),
            "mean_change_noncliff": (("algo",), m_n, {"long_name": "mean change elsewhere"}),
            "sem_change_cliff": (("algo",), s_c, {"long_name": "SEM of the change at cliffs"}),
            "sem_change_noncliff": (("algo",), s_n, {"long_name": "SEM of the change elsewhere"}),
            "n_cliff": (("algo",), n_c.astype(np.int64), {"long_name": "changes at cliffs (checkpoints × trials)"}),
            "n_noncliff": (("algo",), n_n.astype(np.int64), {"long_name": "changes elsewhere"}),
        },
        coords={"step": ("step", np.asarray(steps, np.int64)), "algo": ("algo", list(DIVE_ALGOS[:A])),
                "trial": ("trial", np.arange(T)), "episode": ("episode", np.arange(E))},
    )


def dive_table(ds: xr.Dataset) -> str:
    """The cliff dive's summary as a small plain-text table."""
    lines = [f"{'algo':<5} {'cliff: mean change ± SEM (n)':>30} {'non-cliff: mean change ± SEM (n)':>34} {'Welch t':>9} {'p':>8}"]
    for a in ds["algo"].values:
        row = ds.sel(algo=a)

        def cell(m: Any, s: Any, n: Any) -> str:
            return f"{float(m):+.3f} ± {float(s):.3f} ({int(n)})"

        lines.append(f"{str(a).upper():<5} {cell(row.mean_change_cliff, row.sem_change_cliff, row.n_cliff):>30} "
                     f"{cell(row.mean_change_noncliff, row.sem_change_noncliff, row.n_noncliff):>34} "
                     f"{float(row.welch_t):>9.3f} {float(row.welch_p):>8.3g}")
    return "\n".join(lines)
