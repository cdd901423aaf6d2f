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

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from pydantic import BaseModel, ConfigDict, field_validator

from rlscape.analyses.surface import _is_checkpoint, build_dataset, run_surface
from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import BlockResult, Budget, episode_seeds
from rlscape.core.execute import evaluate_points
from rlscape.core.kinds import kind_attrs
from rlscape.core.params import check_finite
from rlscape.core.policy import load_checkpoint
from rlscape.core.results import load
from rlscape.core.runs import select_checkpoints
from rlscape.core.spec import EvalSpec, SurfaceSpec, validated
from rlscape.core.store import CHUNKS, RESULTS, RUN_FILE, SPEC_FILE, RunDir, cpu_count, package_versions

log = logging.getLogger(__name__)

STEPS = "steps"  # OUT/steps/<10-digit step>/: one ordinary run directory per checkpoint
_PARENT_OWNED = (SPEC_FILE, RUN_FILE, RESULTS, CHUNKS, STEPS, "plots")
_CURVE_FIELDS = ("returns", "lengths", "discounted_returns", "value_sums", "td_sq_sums")


def step_name(step: int) -> str:
    """A checkpoint's folder name: the step zero-padded to 10 digits."""
    return f"{int(step):010d}"


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
    if p.is_dir() and not _is_checkpoint(source):
        for cand in (p / f"{step_name(step)}.npz", p / f"{int(step)}.npz"):
            if cand.is_file():
                return str(cand)
        raise RlscapeError(f"no direction for step {step} in {p}: expected {step_name(step)}.npz there (or a template with {{step}})")
    return source


# -- the parent run directory ----------------------------------------------------------------------

def _prepare_parent(out: str | Path, spec: dict[str, Any], steps: list[int], overwrite: bool) -> RunDir:
    """Open OUT for a run over checkpoints: new, resumable, extended with new steps, or refused."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RlscapeError(f"--out {path} is a file; give a folder path")
    run = RunDir(path)
    old = run.read_spec()
    if old is not None and not overwrite:
        if old != spec:
            changed = sorted(k for k in set(old) | set(spec) if old.get(k) != spec.get(k))
            raise RlscapeError(f"{path} holds a different run (differs in: {', '.join(changed)}); "
                               "choose another --out, or pass --overwrite to replace it")
        if run.status() == "complete" and run.read_run().get("steps") == steps:
            raise RlscapeError(f"{path} already holds this finished run; pass --overwrite to recompute it or choose another --out")
        log.info("resuming the run in %s", path)
    if overwrite:
        for name in _PARENT_OWNED:
            p = path / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    try:
        (path / STEPS).mkdir(parents=True, exist_ok=True)
        probe = path / ".rlscape-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RlscapeError(f"cannot write to {path} ({exc.strerror or exc}); choose a writable --out") from None
    tmp = path / (SPEC_FILE + ".tmp")
    tmp.write_text(json.dumps(spec, indent=2, sort_keys=True))
    tmp.replace(path / SPEC_FILE)
    return run


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
    workers: int | None = None,
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
    selected = select_checkpoints(run_dir, checkpoints)
    base = spec.model_dump(mode="json")
    subs: list[tuple[int, SurfaceSpec]] = []
    for step, folder in selected:  # resolve every input before anything is computed
        fields = dict(base, checkpoint=str(folder), directions=tuple(per_step_source(s, step) for s in spec.directions))
        subs.append((step, validated(SurfaceSpec, **fields)))  # type: ignore[arg-type]
    steps = [s for s, _ in subs]
    parent_spec = dict(base, over_training=True, checkpoints="all" if checkpoints is None else checkpoints.strip())
    parent = _prepare_parent(out, parent_spec, steps, overwrite)
    parent.update_run(status="running", training_run=str(run_dir), steps=steps, versions=package_versions(), cores=cpu_count(),
                      sub_runs={str(s): f"{STEPS}/{step_name(s)}" for s in steps},
                      directions="drawn per checkpoint from the same seed (random) or read per step; saved in each sub-run",
                      started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    t0 = time.perf_counter()
    attrs = {"over_training": 1, "training_run": str(run_dir), "checkpoints": parent_spec["checkpoints"]}
    done: list[tuple[int, xr.Dataset]] = []
    for i, (step, sub) in enumerate(subs):
        sub_out = parent.path / STEPS / step_name(step)
        sub_run = RunDir(sub_out)
        if sub_run.status() == "complete" and sub_run.read_spec() == sub.model_dump(mode="json"):
            log.info("checkpoint %d/%d (step %d): already done", i + 1, len(subs), step)
            ds = load(sub_out)
        else:
            log.info("checkpoint %d/%d (step %d) → %s", i + 1, len(subs), step, sub_out)
            ds = run_surface(sub, sub_out, workers=workers, max_envs=max_envs, generic_envs=generic_envs, progress=progress)
        done.append((step, ds))
        parent.write_dataset(combine_steps(done, attrs))  # finished steps are readable at any time
    combined = combine_steps(done, attrs)
    parent.write_dataset(combined)
    parent.update_run(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), wall_time_s=round(time.perf_counter() - t0, 3))
    return combined


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


def _curve_file(run: RunDir, step: int) -> Path:
    return run.path / CHUNKS / f"step-{step_name(step)}.npz"


def _init_curve_worker() -> None:
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(1)


def _evaluate_checkpoint(spec: CurveSpec, folder: Path, max_envs: int | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """θ of one checkpoint as a single point: per-episode arrays ``(E,)`` and facts about the agent."""
    ev = spec.evaluation
    agent = load_checkpoint(folder, spec.env_id, algo=spec.algo)
    agent.check_sampling(ev.deterministic)
    theta = agent.parameters("actor")
    check_finite(theta, f"checkpoint {folder}")
    got: list[BlockResult] = []
    evaluate_points(agent, theta, [], np.zeros((1, 0)), np.array([0]), Budget(episodes=ev.episodes, steps=ev.steps),
                    seed=ev.seed, deterministic=ev.deterministic, workers=1, max_envs=max_envs,
                    on_chunk=lambda _pts, res: got.append(res))
    res = got[0]
    arrays = {k: np.asarray(getattr(res, k))[0] for k in _CURVE_FIELDS}
    facts = {"checkpoint": agent.source, "env_id": agent.env.env_id, "algo": agent.algo, "gamma": agent.gamma,
             "has_critic": int(agent.has_value), "env_steps": int(res.env_steps)}
    return arrays, facts


def run_curve(
    spec: CurveSpec,
    out: str | Path,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    max_envs: int | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """Evaluate θ of every selected checkpoint; Dataset with dims ``step``, ``episode``.

    ``workers`` processes (default: all cores) evaluate one checkpoint each at a time.

    Every checkpoint sees the same episodes (reset seeds and action noise from ``(seed, episode)``),
    so its numbers equal those of θ0 in a plane or line around that checkpoint with the same
    evaluation flags. Each finished checkpoint is saved at once (``OUT/chunks/step-<step>.npz``);
    a rerun skips them.
    """
    if workers is not None and workers < 1:
        raise RlscapeError(f"--workers must be at least 1, not {workers}")
    selected = select_checkpoints(spec.run, None if spec.checkpoints == "all" else spec.checkpoints)
    steps = [s for s, _ in selected]
    run = _prepare_parent(out, spec.model_dump(mode="json"), steps, overwrite)
    (run.path / CHUNKS).mkdir(exist_ok=True)
    ev = spec.evaluation
    run.update_run(status="running", training_run=spec.run, steps=steps, versions=package_versions(), cores=cpu_count(),
                   seeds={**episode_seeds(ev.seed)},
                   started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    from tqdm.auto import tqdm

    t0, env_steps = time.perf_counter(), 0
    results: dict[int, tuple[dict[str, np.ndarray], dict[str, Any]]] = {}
    for step, _ in selected:
        f = _curve_file(run, step)
        if f.is_file():
            with np.load(f, allow_pickle=False) as z:
                results[step] = ({k: z[k] for k in _CURVE_FIELDS}, json.loads(str(z["facts"])))
    if results:
        log.info("resuming: %d of %d checkpoints already evaluated", len(results), len(selected))
    bar = tqdm(total=len(selected), initial=len(results), unit="ckpt", desc="checkpoints", disable=not progress, dynamic_ncols=True)
    todo = [(step, folder) for step, folder in selected if step not in results]
    workers = max(1, min(cpu_count() if workers is None else int(workers), len(todo) or 1))

    def finished(step: int, arrays: dict[str, np.ndarray], facts: dict[str, Any]) -> None:
        nonlocal env_steps
        tmp = _curve_file(run, step).with_suffix(".tmp.npz")
        np.savez(tmp, **arrays, facts=np.array(json.dumps(facts)))
        tmp.replace(_curve_file(run, step))
        results[step] = (arrays, facts)
        env_steps += facts["env_steps"]
        bar.update(1)
        bar.set_postfix_str(f"step {step}: mean return {np.nanmean(arrays['returns']):.4g}")

    try:
        if workers == 1:
            for step, folder in todo:
                finished(step, *_evaluate_checkpoint(spec, folder, max_envs))
        else:  # one checkpoint per worker process at a time; each is saved as soon as it is done
            from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

            from rlscape.core.execute import _context

            pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context(), initializer=_init_curve_worker)
            try:
                futures = {pool.submit(_evaluate_checkpoint, spec, folder, max_envs): step for step, folder in todo}
                pending = set(futures)
                while pending:
                    done_now, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done_now:
                        finished(futures[fut], *fut.result())  # a worker's exception surfaces here
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
    ds = curve_dataset(spec, steps, [results[s] for s in steps])
    run.write_dataset(ds)
    wall = time.perf_counter() - t0
    run.update_run(status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), wall_time_s=round(wall, 3),
                   env_steps_this_session=env_steps, env_steps_per_s=round(env_steps / max(wall, 1e-9), 1))
    return ds


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
        "episodes": ev.episodes or 0, "steps": ev.steps or 0, "gamma": facts[0]["gamma"],
        "has_critic": int(all(f["has_critic"] for f in facts)),
    }
    ds = build_dataset(spec, [np.asarray(steps, np.int64)], merged, attrs).rename(alpha="step")  # type: ignore[arg-type]
    ds["step"].attrs = {"long_name": "training step of the checkpoint"}
    ds["checkpoint"] = ("step", np.asarray([f["checkpoint"] for f in facts]))
    return ds
