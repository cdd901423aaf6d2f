"""Reward surfaces: the return on a plane or a line through parameter space (methods.md §1–3).

Read top to bottom: spec → agent → directions → points → batched evaluation (resumable, in
chunks) → Dataset. :func:`run_surface` is what the CLI calls; :func:`plane` and :func:`line` are
the same analysis for a notebook, with a loaded :class:`~rlscape.core.policy.Agent`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from rlscape.core.budgets import budget_attrs, evaluate_budget
from rlscape.core.dask_executor import check_workers, describe_workers
from rlscape.core.directions import DIRECTION_STREAM, Direction, cosine, difference, load_direction, random_direction
from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import episode_seeds, point_summaries
from rlscape.core.kinds import kind_attrs
from rlscape.core.lifecycle import Run, open_run
from rlscape.core.params import check_compatible, check_finite
from rlscape.core.policy import Agent, load_checkpoint, resolve_model_zip
from rlscape.core.runs import is_checkpoint
from rlscape.core.spec import EvalSpec, SurfaceSpec, validated
from rlscape.core.store import ChunkData, merge_chunks

log = logging.getLogger(__name__)

_SAVE_EVERY_S = 5.0


# -- directions ------------------------------------------------------------------------------------

def make_directions(spec: SurfaceSpec, agent: Agent, theta0: dict[str, np.ndarray],
                    given: Sequence[Direction | None] = ()) -> tuple[list[Direction], bool]:
    """The spec's directions, and whether the run interpolates θ1→θ2 (a line toward a checkpoint).

    ``given[i]`` supplies direction i when the spec names it ``given:<hash>`` (notebook use).
    """
    out, interpolate = [], False
    for i, source in enumerate(spec.directions):
        if source.startswith(_GIVEN):
            d = given[i] if i < len(given) else None
            if d is None or _fingerprint(d) != source:
                raise RlscapeError(f"direction {i + 1} was given in memory; pass the same Direction object again")
            check_compatible(theta0, d.values, f"direction {i + 1}")
            check_finite(d.values, f"direction {i + 1}")
            out.append(Direction({n: np.asarray(d.values[n], np.float32) for n in theta0}, dict(d.meta)))
        elif source == "random":
            out.append(random_direction(theta0, spec.evaluation.seed, i, spec.normalization, spec.bias))
        elif source == "gradient":
            from rlscape.analyses.gradient import estimate_gradient

            if spec.params == "critic":
                raise RlscapeError("a gradient direction moves the actor; use --params actor or all with --dir1 gradient")
            log.info("estimating the policy gradient from %d episodes …", spec.gradient_episodes)
            # from the direction episode stream: the evaluation along it then measures the slope out-of-sample
            out.append(estimate_gradient(agent, episodes=spec.gradient_episodes, seed=spec.evaluation.seed, which=spec.params,
                                         stream="direction").direction())
        elif is_checkpoint(source):
            if spec.kind != "line":
                raise RlscapeError("a checkpoint as a plane direction is not supported; use it with `rlscape line --direction`")
            other = load_checkpoint(source, agent.env.env_id, algo=spec.algo)
            theta2 = other.parameters(spec.params)
            check_finite(theta2, f"checkpoint {source}")
            d = difference(theta0, theta2)
            d.meta["source"] = str(resolve_model_zip(source).resolve())
            out.append(d)
            interpolate = True
        elif Path(source).suffix == ".npz" or Path(source).exists():
            out.append(load_direction(source, theta0))
        else:
            raise RlscapeError(f"direction {source!r} is neither 'random', 'gradient' nor an existing .npz or checkpoint; give one of those")
    if not interpolate:
        out = [apply_scale(d, spec, theta0, i) for i, d in enumerate(out)]
    return out, interpolate


def direction_episode_seeds(dirs: Sequence[Direction]) -> dict[str, Any]:
    """``{"direction_episodes": …}`` for run.json when a direction was estimated here from episodes
    (its meta holds ``episode_seeds``), else ``{}``."""
    found = [d.meta["episode_seeds"] for d in dirs if d.meta.get("episode_seeds")]
    return {"direction_episodes": found[0]} if found else {}


def apply_scale(d: Direction, spec: SurfaceSpec, theta0: Mapping[str, np.ndarray], index: int) -> Direction:
    """Rescale a non-random direction by the spec's convention (methods.md §1) and record it.

    ``unit``: ‖d‖ = 1; ``match``: ‖d‖ = the norm of the filter-normalised random direction this
    run would draw at the same index; ``raw``: as computed. Without ``--scale``, gradients use
    ``match`` and files/in-memory directions stay as given. Random directions are never rescaled.
    """
    kind = d.meta.get("kind")
    if kind == "random":
        return d
    scale = spec.scale or ("match" if kind == "gradient" else str(d.meta.get("scale", "raw")))
    n = d.norm
    if scale == "raw" or n == 0:
        factor = 1.0
    elif scale == "unit":
        factor = 1.0 / n
    else:
        ref = random_direction(theta0, spec.evaluation.seed, index, "filter", spec.bias).norm
        factor = ref / n
    values = {k: (v * np.float32(factor)).astype(np.float32) for k, v in d.values.items()} if factor != 1.0 else d.values
    meta = dict(d.meta, scale=scale, scale_factor=float(factor))
    base = Direction(values, {k: v for k, v in meta.items() if k != "label"}).label() if not d.meta.get("label") else str(d.meta["label"])
    meta["label"] = f"{base}, scale {scale}" if (spec.scale is not None or scale != "raw") else base
    return Direction(values, meta)


_GIVEN = "given:"


def _fingerprint(d: Direction) -> str:
    """``given:<sha1>`` of a direction's names, shapes and values: its identity in a spec."""
    h = hashlib.sha1()
    for n in sorted(d.values):
        v = np.ascontiguousarray(d.values[n], np.float32)
        h.update(n.encode())
        h.update(str(v.shape).encode())
        h.update(v.tobytes())
    return _GIVEN + h.hexdigest()


def as_direction(d: Direction | Mapping[str, Any] | str) -> Direction | str:
    """Accept a :class:`Direction`, a mapping name → array (raw scale), or a spec string."""
    if isinstance(d, str | Path):
        return str(d)
    if isinstance(d, Direction):
        return d
    return Direction({n: np.asarray(v, np.float32) for n, v in d.items()}, {"kind": "given", "scale": "raw"})


# -- points ----------------------------------------------------------------------------------------

def axes(spec: SurfaceSpec) -> list[np.ndarray]:
    """Offsets along each direction: ``linspace(lo, hi, g)``; odd plane grids hold 0 exactly."""
    out = []
    for g, (lo, hi) in zip(spec.grid, spec.ranges, strict=True):
        a = np.linspace(lo, hi, g) if g > 1 else np.array([0.0 if spec.kind == "plane" else lo])
        if spec.kind == "plane" and g % 2 == 1:
            a[g // 2] = 0.0
        out.append(a)
    return out


def grid_coords(ax: list[np.ndarray]) -> np.ndarray:
    """Flat ``(N, n_dirs)`` coordinates in ``ij`` order (point k = i·g2 + j)."""
    mesh = np.meshgrid(*ax, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


# -- dataset ---------------------------------------------------------------------------------------

def build_dataset(spec: SurfaceSpec, ax: list[np.ndarray], merged: dict[str, np.ndarray], attrs: dict[str, Any]) -> xr.Dataset:
    """The results as an xarray Dataset: per-episode arrays and per-point summaries; NaN = not run."""
    dims = ["alpha", "beta"][: len(ax)]
    shape = tuple(len(a) for a in ax)
    E = merged["returns"].shape[1]
    data = {name: (dims + ["episode"] if per_ep else dims, a.reshape(*shape, *a.shape[1:]), meta)
            for name, (per_ep, a, meta) in point_summaries(merged, attrs["gamma"], bool(attrs.get("has_critic"))).items()}
    coords = {d: (d, a) for d, a in zip(dims, ax, strict=True)}
    coords["episode"] = ("episode", np.arange(E))
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    ds["alpha"].attrs["long_name"] = "offset along dir1" if spec.kind == "plane" else "offset along the direction"
    if "beta" in ds:
        ds["beta"].attrs["long_name"] = "offset along dir2"
    return ds


# -- the analysis ----------------------------------------------------------------------------------

def run_surface(
    spec: SurfaceSpec,
    out: str | Path | None = None,
    *,
    agent: Agent | None = None,
    directions: Sequence[Direction | None] = (),
    overwrite: bool = False,
    workers: int | Any | None = None,
    max_envs: int | None = None,
    generic_envs: bool = False,
    progress: bool = True,
) -> xr.Dataset:
    """Evaluate ``spec`` and return its Dataset; with ``out``, store (and resume) a run directory.

    ``agent`` overrides loading ``spec.checkpoint`` (for policies that are not SB3 checkpoints);
    ``directions`` supplies the in-memory directions that the spec names ``given:<hash>``.
    ``generic_envs`` steps Gymnasium's own envs even where a native batched env exists.
    ``workers``: processes (default: all cores) or a ``dask.distributed.Client`` whose cluster
    runs the same chunks as tasks (core/dask_executor.py; the same numbers).
    """
    check_workers(workers)
    if max_envs is not None and max_envs < 1:
        raise RlscapeError(f"--max-envs must be at least 1, not {max_envs}")
    plan = prepare_surface(spec, agent, directions)
    kwargs: dict[str, Any] = {"workers": workers, "max_envs": max_envs, "generic_envs": generic_envs, "progress": progress}
    if out is None:
        return evaluate_surface(None, spec, *plan, **kwargs)
    # only now, with every input checked, does the run directory get touched
    with open_run(out, spec.model_dump(mode="json"), overwrite=overwrite) as run:
        ds = evaluate_surface(run, spec, *plan, **kwargs)
        run.finish(ds)
    return ds


def prepare_surface(spec: SurfaceSpec, agent: Agent | None = None, directions: Sequence[Direction | None] = ()
                    ) -> tuple[Agent, dict[str, np.ndarray], list[Direction], bool]:
    """Check every input of a surface: (agent, θ0, directions, whether it interpolates θ1→θ2)."""
    if agent is None:
        agent = load_checkpoint(spec.checkpoint, spec.env_id, vecnormalize=spec.vecnormalize, algo=spec.algo)
    agent.check_sampling(spec.evaluation.deterministic)
    theta0 = agent.parameters(spec.params)
    check_finite(theta0, "the policy")
    dirs, interpolate = make_directions(spec, agent, theta0, directions)
    return agent, theta0, dirs, interpolate


def evaluate_surface(run: Run | None, spec: SurfaceSpec, agent: Agent, theta0: dict[str, np.ndarray], dirs: list[Direction],
                     interpolate: bool, *, workers: int | Any | None = None, max_envs: int | None = None,
                     generic_envs: bool = False, progress: bool = True) -> xr.Dataset:
    """The computation of a surface inside an open run (``None``: in memory only); resumes its chunks."""
    max_envs = max_envs or agent.env.default_max_envs()
    ax = axes(spec)
    coords = grid_coords(ax)
    names = [f"dir{i + 1}" for i in range(len(dirs))]

    attrs: dict[str, Any] = {
        **kind_attrs(spec.kind), "env_id": agent.env.env_id, "algo": agent.algo, "checkpoint": agent.source,
        "params": spec.params, "normalization": spec.normalization, "bias": spec.bias,
        "seed": spec.evaluation.seed, "deterministic": int(spec.evaluation.deterministic),
        **budget_attrs(spec.evaluation),
        "gamma": agent.gamma, "has_critic": int(agent.has_value), "critic_reward_units": agent.env.critic_reward_units(),
        "n_parameters": int(sum(v.size for v in theta0.values())),
    }
    if spec.kind == "plane":
        for name, d in zip(names, dirs, strict=True):
            attrs[f"{name}_label"] = f"{name}: {d.label()}"
            attrs[f"{name}_norm"] = d.norm
            attrs[f"{name}_scale"] = str(d.meta.get("scale", "raw"))
        attrs["cos_dir1_dir2"] = cosine(dirs[0], dirs[1])
    else:
        d = dirs[0]
        attrs["direction_kind"] = "interpolation" if interpolate else str(d.meta.get("kind"))
        attrs["direction_label"] = "interpolation θ1→θ2 (α=0: θ1, α=1: θ2)" if interpolate else d.label()
        attrs["direction_norm"] = d.norm
        attrs["direction_scale"] = str(d.meta.get("scale", "raw"))
        if interpolate:
            attrs["checkpoint2"] = str(d.meta.get("source"))

    chunks: list[ChunkData] = []
    if run is not None:
        for name, d in zip(names, dirs, strict=True):
            run.dir.save_direction(name, d, theta0)
        run.record(
            env=agent.env.describe(), algo=agent.algo, parameter_names=list(theta0),
            seeds={"directions": f"SeedSequence([{spec.evaluation.seed}, {DIRECTION_STREAM:#x}, index]) (index 0 = dir1, 1 = dir2)",
                   **episode_seeds(spec.evaluation.seed), **direction_episode_seeds(dirs)},
        )
        chunks = run.dir.read_chunks()

    ev = spec.evaluation
    if chunks:
        log.info("resuming: %d chunks of %d points already done", len(chunks), len(coords))
    bar = _progress_bar(len(coords), enabled=progress)
    last_save = [time.monotonic()]
    t_start = time.perf_counter()
    steps_here = [0]

    def save_dataset() -> None:
        if run is not None:
            run.write_dataset(build_dataset(spec, ax, merge_chunks(chunks, len(coords)), attrs))

    def on_chunk(c: ChunkData) -> None:
        if run is not None:
            run.dir.save_chunk(c)
        if time.monotonic() - last_save[0] > _SAVE_EVERY_S:
            save_dataset()
            last_save[0] = time.monotonic()

    def on_progress(points: int, env_steps: int) -> None:
        steps_here[0] += env_steps
        if bar is not None:
            bar.update(points)
            bar.set_postfix_str(f"{steps_here[0] / max(time.perf_counter() - t_start, 1e-9):,.0f} env-steps/s")

    try:
        evaluate_budget(agent, theta0, [d.values for d in dirs], coords, len(coords), ev, chunks, on_chunk=on_chunk,
                        workers=workers, max_envs=max_envs, generic=generic_envs, on_progress=on_progress,
                        on_round=None if bar is None else partial(_round_bar, bar, ev.adaptive, len(coords)))
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t_start
    ds = build_dataset(spec, ax, merge_chunks(chunks, len(coords)), attrs)
    if run is not None:
        run.record(env_steps_this_session=steps_here[0], env_steps_per_s=round(steps_here[0] / max(wall, 1e-9), 1),
                   workers=describe_workers(workers), max_envs=max_envs, env_engine=agent.env.vec_engine(generic_envs))
    log.info("%s done: %d points, %d env steps in %.1f s (%.0f steps/s)", spec.kind, len(coords), steps_here[0], wall,
             steps_here[0] / max(wall, 1e-9))
    return ds


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="pt", desc="points", dynamic_ncols=True, mininterval=0.5)


def _round_bar(bar: Any, adaptive: bool, n_points: int, points: int, first: int, episodes: int) -> None:
    """Show the round about to run: the points left of a fixed budget, or an adaptive round's episodes."""
    if adaptive:
        bar.reset(total=points)
        bar.set_description(f"episodes {first}–{first + episodes - 1}")
    else:
        bar.reset(total=n_points)
        bar.update(n_points - points)


# -- notebook API ----------------------------------------------------------------------------------

def plane(
    agent: Agent | str | Path,
    *,
    dir1: Direction | Mapping[str, Any] | str = "random",
    dir2: Direction | Mapping[str, Any] | str = "random",
    grid: int | tuple[int, int] = 21,
    magnitude: float | tuple[float, float] = 1.0,
    episodes: int | str | None = None,
    steps: int | None = None,
    seed: int = 0,
    deterministic: bool = False,
    normalization: str = "filter",
    params: str = "actor",
    out: str | Path | None = None,
    overwrite: bool = False,
    workers: int | Any | None = None,
    env_id: str | None = None,
    progress: bool = True,
    target_sem: float | None = None,
    min_episodes: int | None = None,
    max_episodes: int | None = None,
) -> xr.Dataset:
    """Mean return on the plane θ0 + α·d1 + β·d2 around an agent (or a checkpoint path).

    Returns a Dataset with dims ``alpha`` (g1), ``beta`` (g2), ``episode`` (E). Directions are
    ``"random"`` (seeded Gaussian, normalised), a path to a direction ``.npz``, or a
    :class:`~rlscape.core.directions.Direction` / mapping name → array, used as given.
    ``episodes="auto"`` with ``target_sem`` (and ``min_episodes``, ``max_episodes``): an adaptive
    budget (:mod:`rlscape.core.budgets`); ``n_episodes`` then differs per point.
    ``workers``: processes (default: all cores) or a ``dask.distributed.Client`` (the same numbers).
    """
    d1, d2 = as_direction(dir1), as_direction(dir2)
    g = (grid, grid) if isinstance(grid, int) else tuple(grid)
    m = (magnitude, magnitude) if isinstance(magnitude, int | float) else tuple(magnitude)
    loaded = agent if isinstance(agent, Agent) else None
    spec = validated(SurfaceSpec, kind="plane", checkpoint=str(agent if loaded is None else loaded.source or "<in-memory>"),
                     env_id=env_id, grid=g, ranges=tuple((-float(x), float(x)) for x in m), directions=_names(d1, d2),
                     normalization=normalization, params=params, evaluation=EvalSpec.from_budget(episodes, steps, seed, deterministic, target_sem, min_episodes, max_episodes))
    return run_surface(spec, out, agent=loaded, directions=_objects(d1, d2), overwrite=overwrite,  # type: ignore[arg-type]
                       workers=workers, progress=progress)


def _names(*dirs: Direction | str) -> tuple[str, ...]:
    return tuple(d if isinstance(d, str) else _fingerprint(d) for d in dirs)


def _objects(*dirs: Direction | str) -> list[Direction | None]:
    return [None if isinstance(d, str) else d for d in dirs]


def line(
    agent: Agent | str | Path,
    *,
    direction: Direction | Mapping[str, Any] | str = "random",
    points: int = 21,
    range: tuple[float, float] | None = None,  # noqa: A002 - mirrors the CLI flag
    episodes: int | str | None = None,
    steps: int | None = None,
    seed: int = 0,
    deterministic: bool = False,
    normalization: str = "filter",
    params: str = "actor",
    out: str | Path | None = None,
    overwrite: bool = False,
    workers: int | Any | None = None,
    env_id: str | None = None,
    progress: bool = True,
    target_sem: float | None = None,
    min_episodes: int | None = None,
    max_episodes: int | None = None,
) -> xr.Dataset:
    """Mean return along θ0 + α·d, or along (1−α)·θ1 + α·θ2 when ``direction`` is a checkpoint.

    Returns a Dataset with dims ``alpha`` (points) and ``episode``. ``range`` defaults to
    (−1, 1) for a direction and (0, 1) for an interpolation. ``direction`` may also be a
    :class:`~rlscape.core.directions.Direction` or a mapping name → array, used as given.
    ``workers``: processes (default: all cores) or a ``dask.distributed.Client`` (the same numbers).
    """
    d = as_direction(direction)
    loaded = agent if isinstance(agent, Agent) else None
    rng = range if range is not None else ((0.0, 1.0) if isinstance(d, str) and is_checkpoint(d) else (-1.0, 1.0))
    spec = validated(SurfaceSpec, kind="line", checkpoint=str(agent if loaded is None else loaded.source or "<in-memory>"),
                     env_id=env_id, grid=(points,), ranges=(tuple(map(float, rng)),), directions=_names(d),
                     normalization=normalization, params=params, evaluation=EvalSpec.from_budget(episodes, steps, seed, deterministic, target_sem, min_episodes, max_episodes))
    return run_surface(spec, out, agent=loaded, directions=_objects(d), overwrite=overwrite,  # type: ignore[arg-type]
                       workers=workers, progress=progress)
