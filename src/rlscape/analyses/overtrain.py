"""Landscapes over training: a training curve, and planes or lines around every checkpoint of a run.

The input is a training run (see :mod:`rlscape.core.runs`): ``DIR/checkpoints/<10-digit step>/``.

* :func:`run_curve` evaluates θ of each checkpoint (a single point, with the batched evaluator and
  common random numbers: episode e has the same reset seed and action noise at every step) →
  Dataset with dims ``step``, ``episode``.
* :func:`run_surface_over_training` runs one ordinary plane or line per checkpoint, each a complete
  run directory of its own in ``OUT/steps/<10-digit step>/`` (resumable, self-describing), and
  combines them into ``OUT/results.zarr`` with a leading ``step`` dim and the same variables as a
  single run. Random directions are drawn for every checkpoint from the same seed, so each one is
  filter-normalised to that checkpoint's own weights (and saved with its sub-run).

Per-checkpoint direction files (``--dir1``/``--dir2``/``--direction``): a template holding
``{step}`` (Python format syntax, e.g. ``grads/{step:010d}/grad.npz``), or a folder holding one
``<10-digit step>.npz`` (or ``<step>.npz``) per checkpoint. A single ``.npz`` is used at every step.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from pydantic import BaseModel, ConfigDict, field_validator

from rlscape.analyses.surface import build_dataset, evaluate_surface, prepare_surface
from rlscape.core.budgets import budget_attrs, evaluate_budget
from rlscape.core.dask_executor import check_workers, is_client
from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import episode_seeds
from rlscape.core.kinds import kind_attrs
from rlscape.core.lifecycle import Run, over_checkpoints
from rlscape.core.params import check_finite
from rlscape.core.policy import load_checkpoint
from rlscape.core.runs import checkpoint_name, checkpoints_label, is_checkpoint, select_checkpoints
from rlscape.core.spec import EvalSpec, SurfaceSpec, validated
from rlscape.core.store import ChunkData, cpu_count, merge_chunks

log = logging.getLogger(__name__)

_CURVE_FIELDS = ("returns", "lengths", "discounted_returns", "value_sums", "td_sq_sums")


# -- directions per checkpoint ---------------------------------------------------------------------

def per_step_source(source: str, step: int) -> str:
    """The direction source for the checkpoint at ``step`` (see the module docstring)."""
    if "{" in source:
        try:
            path = source.format(step=int(step))
        except (KeyError, IndexError, ValueError) as exc:
            raise RlscapeError(f"direction template {source!r} is not valid ({exc}); use {{step}} or {{step:010d}}") from None
        if not Path(path).is_file():
            raise RlscapeError(f"no direction for step {step}: {path} does not exist; give one file per checkpoint")
        return path
    p = Path(source)
    if p.is_dir() and not is_checkpoint(source):
        for cand in (p / f"{checkpoint_name(step)}.npz", p / f"{int(step)}.npz"):
            if cand.is_file():
                return str(cand)
        raise RlscapeError(f"no direction for step {step} in {p}: expected {checkpoint_name(step)}.npz there (or a template with {{step}})")
    return source


# -- combining per-step Datasets -------------------------------------------------------------------

def combine_steps(items: list[tuple[int, xr.Dataset]], attrs: dict[str, Any]) -> xr.Dataset:
    """Stack per-checkpoint Datasets along a leading ``step`` dim.

    Attributes equal at every step stay attributes; those that differ (the checkpoint path,
    direction norms, cos(d1, d2), per-step direction labels) become variables with dim ``step``.
    """
    if not items:
        raise RlscapeError("no checkpoint was evaluated")
    steps = np.array([s for s, _ in items], np.int64)
    parts = []
    for _, ds in items:
        ds = ds.copy()
        ds.attrs = {}
        parts.append(ds)
    out = xr.concat(parts, dim="step", join="outer", combine_attrs="drop")
    out = out.assign_coords(step=("step", steps))
    out["step"].attrs["long_name"] = "training step of the checkpoint"
    common: dict[str, Any] = {}
    keys = {k for _, ds in items for k in ds.attrs}
    for k in sorted(keys):
        values = [ds.attrs.get(k) for _, ds in items]
        if all(v == values[0] for v in values):
            common[k] = values[0]
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[k] = ("step", np.asarray(values, np.float64))
        else:
            out[k] = ("step", np.asarray(["" if v is None else str(v) for v in values]))
    out.attrs = {**common, **attrs}
    return out.transpose("step", ...)


# -- planes and lines over training ----------------------------------------------------------------

def run_surface_over_training(
    spec: SurfaceSpec,
    out: str | Path,
    *,
    checkpoints: str | None = None,
    overwrite: bool = False,
    workers: int | Any | None = None,
    max_envs: int | None = None,
    generic_envs: bool = False,
    progress: bool = True,
) -> xr.Dataset:
    """One plane or line (``spec``) around each selected checkpoint of the training run ``spec.checkpoint``.

    ``checkpoints``: ``None``/``"all"`` or ``"a,b,c"`` (training steps). Returns the combined
    Dataset: dims ``(step, alpha[, beta], episode)``, the variables of a single run.
    """
    run_dir = Path(spec.checkpoint)
    if spec.vecnormalize:
        raise RlscapeError("--vecnormalize does not apply to a training run: each checkpoint's own vecnormalize.pkl is used; drop it")
    check_workers(workers)
    if max_envs is not None and max_envs < 1:
        raise RlscapeError(f"--max-envs must be at least 1, not {max_envs}")
    selected = select_checkpoints(run_dir, checkpoints)
    base = spec.model_dump(mode="json")
    subs: dict[int, SurfaceSpec] = {}
    for step, folder in selected:  # resolve every input before anything is computed
        fields = dict(base, checkpoint=str(folder), directions=tuple(per_step_source(s, step) for s in spec.directions))
        subs[step] = validated(SurfaceSpec, **fields)  # type: ignore[assignment]
    parent_spec = dict(base, over_training=True, checkpoints=checkpoints_label(checkpoints))
    attrs = {"over_training": 1, "training_run": str(run_dir), "checkpoints": parent_spec["checkpoints"]}

    def compute(step: int, folder: Path, run: Run) -> xr.Dataset:
        sub = subs[step]
        return evaluate_surface(run, sub, *prepare_surface(sub), workers=workers, max_envs=max_envs,
                                generic_envs=generic_envs, progress=progress)

    return over_checkpoints(
        out, parent_spec, selected, sub_spec=lambda step, _folder: subs[step].model_dump(mode="json"), compute=compute,
        combine=lambda done: combine_steps(done, attrs), overwrite=overwrite, progress=progress,
        record={"training_run": str(run_dir),
                "directions": "drawn per checkpoint from the same seed (random) or read per step; saved in each sub-run"},
    )


# -- the training curve ----------------------------------------------------------------------------

class CurveSpec(BaseModel):
    """The return of θ at each checkpoint of a training run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["curve"] = "curve"
    run: str
    checkpoints: str = "all"
    env_id: str | None = None
    algo: str | None = None
    evaluation: EvalSpec = EvalSpec()

    @field_validator("run")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return str(Path(v).expanduser().resolve())


def evaluate_checkpoint(spec: CurveSpec, max_envs: int | None, step: int, folder: Path, run: Run | None = None, *,
                        workers: int | Any = 1) -> xr.Dataset:
    """θ of one checkpoint as a single point: its one-step Dataset (dims ``step``, ``episode``).

    ``workers``: 1 (here), or a Dask client that evaluates the point as one task."""
    import torch

    threads = torch.get_num_threads()
    ev = spec.evaluation
    agent = load_checkpoint(folder, spec.env_id, algo=spec.algo)
    agent.check_sampling(ev.deterministic)
    theta = agent.parameters("actor")
    check_finite(theta, f"checkpoint {folder}")
    chunks: list[ChunkData] = []  # (an adaptive budget adds episodes to the one point in rounds)
    env_steps = evaluate_budget(agent, theta, [], np.zeros((1, 0)), 1, ev, chunks, on_chunk=lambda c: None,
                                workers=workers, max_envs=max_envs)
    torch.set_num_threads(threads)
    merged = merge_chunks(chunks, 1)
    arrays = {k: np.asarray(merged[k])[0] for k in _CURVE_FIELDS}
    facts = {"checkpoint": agent.source, "env_id": agent.env.env_id, "algo": agent.algo, "gamma": agent.gamma,
             "has_critic": int(agent.has_value), "env_steps": int(env_steps)}
    if run is not None:
        run.record(env=agent.env.describe(), algo=agent.algo, env_steps_this_session=int(env_steps),
                   seeds=episode_seeds(ev.seed))
    return curve_dataset(spec, [step], [(arrays, facts)])


def run_curve(
    spec: CurveSpec,
    out: str | Path,
    *,
    overwrite: bool = False,
    workers: int | Any | None = None,
    max_envs: int | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """Evaluate θ of every selected checkpoint; Dataset with dims ``step``, ``episode``.

    Every checkpoint sees the same episodes (reset seeds and action noise from ``(seed, episode)``),
    so its numbers equal those of θ0 in a plane or line around that checkpoint with the same
    evaluation flags. Each checkpoint is its own sub-run (``OUT/steps/<step>/``), saved as soon as
    it is done; a rerun skips the finished ones. ``workers`` processes (default: all cores)
    evaluate one checkpoint each at a time.
    """
    check_workers(workers)
    selected = select_checkpoints(spec.run, None if spec.checkpoints == "all" else spec.checkpoints)
    base = spec.model_dump(mode="json")

    def sub_spec(step: int, folder: Path) -> dict[str, Any]:
        return dict(base, kind="curve-checkpoint", checkpoint=str(folder), step=int(step))

    def combine(done: list[tuple[int, xr.Dataset]]) -> xr.Dataset:
        ds = xr.concat([d for _, d in sorted(done, key=lambda x: x[0])], dim="step", combine_attrs="drop_conflicts")
        ds.attrs["has_critic"] = int(all(int(d.attrs.get("has_critic", 0)) for _, d in done))
        return ds

    if is_client(workers):  # one checkpoint at a time, as one task on the cluster
        compute, processes = partial(evaluate_checkpoint, spec, max_envs, workers=workers), 1
    else:
        compute, processes = partial(evaluate_checkpoint, spec, max_envs), cpu_count() if workers is None else workers
    return over_checkpoints(out, base, selected, sub_spec=sub_spec, compute=compute, combine=combine, overwrite=overwrite,
                            progress=progress, workers=processes, record={"training_run": spec.run})


def curve_dataset(spec: CurveSpec, steps: list[int], results: list[tuple[dict[str, np.ndarray], dict[str, Any]]]) -> xr.Dataset:
    """The per-checkpoint arrays as a Dataset (dims ``step``, ``episode``), the statistics of a single run."""
    E = max(len(a["returns"]) for a, _ in results)
    merged: dict[str, np.ndarray] = {}
    for k in _CURVE_FIELDS:
        fill: float | int = 0 if k == "lengths" else np.nan
        m = np.full((len(results), E), fill, np.int64 if k == "lengths" else np.float64)
        for i, (a, _) in enumerate(results):
            m[i, : len(a[k])] = a[k]
        merged[k] = m
    facts = [f for _, f in results]
    ev = spec.evaluation
    attrs: dict[str, Any] = {
        **kind_attrs("curve"), "env_id": facts[0]["env_id"], "algo": facts[0]["algo"], "training_run": spec.run,
        "checkpoints": spec.checkpoints, "seed": ev.seed, "deterministic": int(ev.deterministic),
        **budget_attrs(ev), "gamma": facts[0]["gamma"],
        "has_critic": int(all(f["has_critic"] for f in facts)),
    }
    ds = build_dataset(spec, [np.asarray(steps, np.int64)], merged, attrs).rename(alpha="step")  # type: ignore[arg-type]
    ds["step"].attrs = {"long_name": "training step of the checkpoint"}
    ds["checkpoint"] = ("step", np.asarray([f["checkpoint"] for f in facts]))
    return ds
