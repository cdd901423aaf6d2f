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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import kind_attrs
from rlscape.stats import mean_sem, welch_t_test

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
            **kind_attrs("cliffs"), "min_relative_fall": float(min_relative_fall), "min_range_fraction": float(min_range_fraction),
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
    from rlscape.core.lifecycle import finished_result, open_run
    from rlscape.core.results import load

    line = load(line_run)
    labels = label_cliffs(line, min_relative_fall=min_relative_fall, min_range_fraction=min_range_fraction,
                          first_step=first_step, side=side)
    out = Path(out) if out is not None else Path(line_run) / CLIFFS_DIR
    spec = {"kind": "cliffs", "line_run": str(Path(line_run).resolve()), "min_relative_fall": float(min_relative_fall),
            "min_range_fraction": float(min_range_fraction), "first_step": first_step, "side": side}
    labels.attrs["line_run"] = spec["line_run"]
    for key in ("env_id", "algo", "direction_label", "seed", "episodes"):
        if key in line.attrs:
            labels.attrs[key] = line.attrs[key]
    same = finished_result(out, spec) is not None  # the same thresholds: rewrite the identical labels
    with open_run(out, spec, overwrite=overwrite or same) as run:
        run.finish(labels, n_cliffs=int(labels["cliff"].sum()), n_checkpoints=int(labels.sizes["step"]))
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

    The core :class:`~rlscape.core.updater.Updater` with the dive's own configuration: the
    checkpoint's policy weights in a fresh A2C/PPO (each algorithm's default optimiser, fresh),
    one rollout of 8 envs × 5 steps in the checkpoint's training pipeline (its wrappers, frozen
    VecNormalize statistics, rewards normalised as trained), then its ``train()``. The checkpoint
    on disk and the caller's global RNGs are left alone.
    """
    from rlscape.core.policy import load_checkpoint
    from rlscape.core.updater import Updater

    if algo not in DIVE_ALGOS:
        raise RlscapeError(f"the cliff dive updates with {' or '.join(DIVE_ALGOS)}, not {algo!r}")
    agent = agent if agent is not None else load_checkpoint(checkpoint)
    if agent.algo not in ("ppo", "a2c", "trpo"):
        raise RlscapeError(f"the cliff dive needs an on-policy actor-critic checkpoint (ppo, a2c, trpo), not {agent.algo}")
    hp = {**DIVE_HYPERPARAMS["common"], **DIVE_HYPERPARAMS[algo]}
    with Updater.from_checkpoint(checkpoint, update_algo=algo, hyperparams=hp, optimizer="fresh", which="all", agent=agent) as up:
        r = up.step(seed)
    return Update(r.params, r.gradient_steps, r.rollout_steps)


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
    changes at cliffs are compared with those elsewhere by Welch's t-test with the checkpoint as
    unit (its trials averaged first; :func:`checkpoint_welch`). Returns a Dataset over
    ``step`` × ``algo`` × ``trial`` (× ``episode``); the t-test as variables over ``algo``.
    """
    from rlscape.core.evaluate import NOISE_STREAM, RESET_STREAM
    from rlscape.core.lifecycle import Run, over_checkpoints
    from rlscape.core.policy import load_checkpoint
    from rlscape.core.population import evaluate_population
    from rlscape.core.runs import select_checkpoints

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
    seeds = {"update_rollout": f"SeedSequence([{seed}, {DIVE_STREAM:#x}, step, trial]).generate_state(1)[0] % (2**31-1)"
                               " (the same for A2C and PPO)",
             "env_reset": f"SeedSequence([{seed}, {RESET_STREAM:#x}, episode]).generate_state(1)[0]",
             "action_noise": f"PCG64(SeedSequence([{seed}, {NOISE_STREAM:#x}, episode]))"}
    A, T = len(DIVE_ALGOS), trials
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chosen) * (A * T + 1), unit="task", desc="cliff dive", dynamic_ncols=True, mininterval=0.5)

    def one_checkpoint(step: int, folder: Path, run: Run | None = None) -> xr.Dataset:
        """θ0 and its A·T updates, evaluated as one population on the same episodes."""
        agent = load_checkpoint(folder)
        theta0 = agent.parameters("all")
        members = [theta0]  # member 0: θ0; member 1 + a·T + t: θ after update (algo a, trial t)
        update_norm = np.full((A, T), np.nan)
        for a, algo in enumerate(DIVE_ALGOS):
            for t in range(T):
                new = one_update(folder, algo, update_seed(seed, step, t), agent=agent).params
                update_norm[a, t] = math.sqrt(sum(float(np.sum((new[n] - theta0[n]).astype(np.float64) ** 2)) for n in theta0))
                members.append({n: new[n] for n in theta0})
                if bar is not None:
                    bar.update(1)
        thetas = {n: np.stack([m[n] for m in members]) for n in theta0}  # O(K·P), all points in one batched call
        got = evaluate_population(agent, thetas, episodes=episodes, seed=seed, deterministic=deterministic,
                                  workers=workers).returns.values
        if bar is not None:
            bar.update(1)
        return xr.Dataset({"before": (("episode",), got[0]), "after": (("algo", "trial", "episode"), got[1:].reshape(A, T, episodes)),
                           "update_norm": (("algo", "trial"), update_norm)}, attrs={"kind": "cliff-dive-checkpoint"})

    def combine(done: list[tuple[int, xr.Dataset]]) -> xr.Dataset:
        ds = dive_dataset([s for s, _ in done], [label[s] for s, _ in done], np.stack([d["before"].values for _, d in done]),
                          np.stack([d["after"].values for _, d in done]), np.stack([d["update_norm"].values for _, d in done]))
        ds.attrs.update({**kind_attrs("cliff-dive"), "run": spec["run"], "seed": seed, "episodes": episodes, "trials": trials,
                         "deterministic": int(deterministic), "hyperparams": json.dumps(DIVE_HYPERPARAMS)})
        return ds

    try:
        if out is None:
            return combine([(step, one_checkpoint(step, folder)) for step, folder in chosen])
        return over_checkpoints(out, spec, chosen, sub_spec=lambda step, folder: {**spec, "step": int(step), "checkpoint": str(folder)},
                                compute=one_checkpoint, combine=combine, overwrite=overwrite, progress=False,
                                record={"seeds": seeds})
    finally:
        if bar is not None:
            bar.close()


def change(r0: np.ndarray, r: np.ndarray) -> np.ndarray:
    """sign(R0)·(R/R0 − 1): the relative change of the mean return, positive = better (NaN where R0 = 0)."""
    r0 = np.asarray(r0, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sign(r0) * (np.asarray(r, np.float64) / r0 - 1.0)
    return np.where(r0 == 0, np.nan, out)


def dive_dataset(steps: Sequence[int], cliff: Sequence[bool], before: np.ndarray, after: np.ndarray,
                 update_norm: np.ndarray) -> xr.Dataset:
    """Changes and Welch t-tests from per-episode returns ``before (S, E)`` and ``after (S, A, T, E)``.

    The unit of the t-test is the checkpoint (methods.md §6): the changes of its T trials share θ
    and R0, so they are averaged first, and Welch's test compares the per-checkpoint means at cliffs
    with those elsewhere (:func:`checkpoint_welch`).
    """
    cliff_arr = np.asarray(cliff, bool)
    r0 = before.mean(axis=1)
    r = after.mean(axis=-1)
    ch = change(r0[:, None, None], r)
    if np.any(r0 == 0):
        log.warning("R0 = 0 at step(s) %s: the relative change is undefined there (NaN)", list(np.asarray(steps)[r0 == 0]))
    A = after.shape[1]
    t_stat, p_val, m_c, m_n, s_c, s_n, n_c, n_n = checkpoint_welch(ch, cliff_arr)
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
            "welch_t": (("algo",), t_stat, {"long_name": "Welch t statistic, cliff − non-cliff mean change per checkpoint"}),
            "welch_p": (("algo",), p_val, {"long_name": "two-sided p-value of the Welch t-test"}),
            "mean_change_cliff": (("algo",), m_c, {"long_name": "mean change at cliffs (mean of the checkpoint means)"}),
            "mean_change_noncliff": (("algo",), m_n, {"long_name": "mean change elsewhere"}),
            "sem_change_cliff": (("algo",), s_c, {"long_name": "SEM of the checkpoint means at cliffs"}),
            "sem_change_noncliff": (("algo",), s_n, {"long_name": "SEM of the checkpoint means elsewhere"}),
            "n_cliff": (("algo",), n_c.astype(np.int64), {"long_name": "cliff checkpoints with a finite change"}),
            "n_noncliff": (("algo",), n_n.astype(np.int64), {"long_name": "non-cliff checkpoints with a finite change"}),
        },
        coords={"step": ("step", np.asarray(steps, np.int64)), "algo": ("algo", list(DIVE_ALGOS[:A])),
                "trial": ("trial", np.arange(T)), "episode": ("episode", np.arange(E))},
    )


def checkpoint_welch(ch: np.ndarray, cliff: np.ndarray) -> tuple[np.ndarray, ...]:
    """Welch's t-test of the changes at cliffs vs elsewhere, per algorithm, the checkpoint as unit.

    ``ch (S, A, T)``: change of trial t of algorithm a at checkpoint s; ``cliff (S,)``. Each
    checkpoint's trials are averaged first (NaN trials ignored; a checkpoint without a finite trial
    drops out). Returns arrays over ``(A,)``: t, p, mean and SEM of the checkpoint means at cliffs
    and elsewhere, and the number of checkpoints in each group. NaN (with a logged warning) where a
    group has fewer than 2 checkpoints.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN checkpoints: NaN, dropped below
        per_ckpt = np.nanmean(ch, axis=2)  # (S, A)
    A = ch.shape[1]
    out = [np.full(A, np.nan) for _ in range(8)]
    for a in range(A):
        groups = [per_ckpt[cliff, a], per_ckpt[~cliff, a]]
        groups = [g[np.isfinite(g)] for g in groups]
        for k, g in enumerate(groups):
            out[6 + k][a] = g.size
            if g.size:
                out[2 + k][a], out[4 + k][a] = mean_sem(g)
        if min(g.size for g in groups) >= 2:
            res = welch_t_test(*groups)
            out[0][a], out[1][a] = res.t, res.p
    if np.isnan(out[0]).all():
        log.warning("the Welch t-test needs at least 2 checkpoints at cliffs and 2 elsewhere (with a finite change); it is NaN")
    return tuple(out)


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
