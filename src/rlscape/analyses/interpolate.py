"""The return landscape between two policies (methods.md §8, seed 002 "paths between policies").

Along θ(α) = (1 − α)·θ_A + α·θ_B, α ∈ [0, 1] (``points`` values), each point is surrounded by
``samples`` Gaussian parameter perturbations θ(α) + σ·ε_s: ε_s is drawn independently per tensor
(tensor t of sample s from ``SeedSequence([seed, INTERP_STREAM, s, t])``) and is the *same* at every
α, so the distributions at neighbouring α differ only by the path. Every perturbed policy is
evaluated as a PURD sample is (one deterministic episode from the fixed initial state by default),
with the batched evaluator over populations of whole α rows. ``sigma = 0`` evaluates the bare path
(one sample per α: the perturbations would all be equal).

The actor's parameters are interpolated; the evaluation runs in A's env pipeline (its observation
normalisation), which is right for checkpoints of one run without VecNormalize (TD3/SAC/DDPG).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
import xarray as xr
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from rlscape.analyses.purd import PartialResults, eval_seed, evaluate_members, purd_summary, summary_variables
from rlscape.core.kinds import kind_attrs
from rlscape.core.lifecycle import Run, open_run
from rlscape.core.params import check_compatible, check_finite
from rlscape.core.policy import Agent, load_checkpoint

log = logging.getLogger(__name__)

INTERP_STREAM = 0x1A7E  # SeedSequence([seed, INTERP_STREAM, sample, tensor]): the perturbations
_ROWS = "rows.npz"


class InterpolationSpec(BaseModel):
    """What one interpolation asks for (the identity of its run directory)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["interpolation"] = "interpolation"
    checkpoint_a: str
    checkpoint_b: str
    env_id: str | None = None
    vecnormalize: str | None = None
    algo: str | None = None
    points: int = 100
    samples: int = 100
    sigma: float = 3e-4
    seed: int = 0
    deterministic: bool = True
    episodes: int = 1
    alpha: float = 0.1
    ltp_fraction: float = 0.5
    bins: int = 100
    bootstrap: int = 1000
    chunk: int = 250

    @field_validator("checkpoint_a", "checkpoint_b", "vecnormalize")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        return None if v is None else str(Path(v).expanduser().resolve())

    @model_validator(mode="after")
    def _check(self) -> InterpolationSpec:
        if self.points < 2:
            raise ValueError(f"--points must be at least 2 (the two ends), not {self.points}")
        if self.samples < 1:
            raise ValueError(f"--samples must be at least 1, not {self.samples}")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"--sigma must be a finite number ≥ 0, not {self.sigma}; e.g. --sigma 3e-4")
        if self.episodes < 1 or self.chunk < 1 or self.bootstrap < 1:
            raise ValueError("episodes, chunk and bootstrap must be at least 1")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"--alpha must be in (0, 1], not {self.alpha}")
        return self

    @property
    def n_samples(self) -> int:
        """Perturbations per α (1 when σ = 0: the bare path)."""
        return 1 if self.sigma == 0 else self.samples


def perturbations(shapes: dict[str, tuple[int, ...]], samples: int, sigma: float, seed: int) -> dict[str, np.ndarray]:
    """σ·ε: name → (samples, *shape) float32; tensor t of sample s from its own stream (see module docstring)."""
    out = {}
    for t, (name, shape) in enumerate(shapes.items()):
        draws = [np.random.default_rng(np.random.SeedSequence([int(seed), INTERP_STREAM, s, t])).standard_normal(shape)
                 for s in range(samples)]
        out[name] = (sigma * np.stack(draws)).astype(np.float32) if draws else np.zeros((0, *shape), np.float32)
    return out


def interpolate(spec: InterpolationSpec, out: str | Path | None = None, *, overwrite: bool = False,
                workers: int | None = None, progress: bool = True) -> xr.Dataset:
    """The interpolation of ``spec``; with ``out``, a resumable run directory. See :func:`compute_interpolation`."""
    agent = load_checkpoint(spec.checkpoint_a, spec.env_id, vecnormalize=spec.vecnormalize, algo=spec.algo)
    other = load_checkpoint(spec.checkpoint_b, spec.env_id or agent.env.env_id, algo=spec.algo)
    agent.check_sampling(spec.deterministic)
    theta_a, theta_b = agent.parameters("actor"), other.parameters("actor")
    check_compatible(theta_a, theta_b, f"checkpoint B ({spec.checkpoint_b})")
    check_finite(theta_a, "checkpoint A")
    check_finite(theta_b, "checkpoint B")
    if out is None:
        return compute_interpolation(None, spec, agent, theta_a, theta_b, workers=workers, progress=progress)
    with open_run(out, spec.model_dump(mode="json"), overwrite=overwrite, owned=(_ROWS,)) as run:
        ds = compute_interpolation(run, spec, agent, theta_a, theta_b, workers=workers, progress=progress)
        run.finish(ds)
    return ds


def compute_interpolation(run: Run | None, spec: InterpolationSpec, agent: Agent, theta_a: dict[str, np.ndarray],
                          theta_b: dict[str, np.ndarray], *, workers: int | None = None, progress: bool = True) -> xr.Dataset:
    """Returns over α × sample × episode, and per α the summaries of :func:`purd_summary` with CIs.

    Dataset dims ``alpha`` (points), ``sample`` (perturbations), ``episode``: ``returns``,
    ``lengths``, ``return`` (mean over episodes); per α ``mean``, ``std``, ``mode``, ``ltp``,
    ``cvar`` and ``*_ci_low``/``*_ci_high`` (NaN but the mean when σ = 0).
    """
    alphas = np.linspace(0.0, 1.0, spec.points)
    S, E = spec.n_samples, spec.episodes
    noise = perturbations({n: v.shape for n, v in theta_a.items()}, S, spec.sigma, spec.seed)
    rows = PartialResults(run.path / _ROWS if run is not None else None, {
        "returns": ((spec.points, S, E), np.nan, np.float64), "lengths": ((spec.points, S, E), 0, np.int64)})
    seed = eval_seed(spec.seed)
    if run is not None:
        run.record(env=agent.env.describe(), algo=agent.algo, parameter_names=list(theta_a),
                   seeds={"perturbation": f"SeedSequence([{spec.seed}, {INTERP_STREAM:#x}, sample, tensor])",
                          "evaluation": f"SeedSequence([{spec.seed}, 0x9e7a]) → {seed}"})
    per_chunk = max(1, spec.chunk // S)
    todo = np.flatnonzero(~rows.done)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=spec.points, initial=int(rows.done.sum()), unit="α", desc="interpolation", dynamic_ncols=True)
    t0 = time.perf_counter()
    steps = 0
    try:
        for start in range(0, todo.size, per_chunk):
            idx = todo[start : start + per_chunk]
            thetas = {n: np.concatenate([((1 - a) * theta_a[n] + a * theta_b[n])[None] + noise[n] for a in alphas[idx]])
                      for n in theta_a}
            r, ln = evaluate_members(agent, thetas, episodes=E, seed=seed, deterministic=spec.deterministic, workers=workers)
            rows.put(idx, returns=r.reshape(idx.size, S, E), lengths=ln.reshape(idx.size, S, E))
            steps += int(ln.sum())
            if bar is not None:
                bar.update(idx.size)
    finally:
        if bar is not None:
            bar.close()
    ds = build_interpolation_dataset(rows.data, alphas, spec, agent, theta_a, theta_b)
    if run is not None:
        run.record(env_steps_this_session=steps, eval_time_s=round(time.perf_counter() - t0, 3))
    return ds


def build_interpolation_dataset(data: dict[str, np.ndarray], alphas: np.ndarray, spec: InterpolationSpec, agent: Agent,
                                theta_a: dict[str, np.ndarray], theta_b: dict[str, np.ndarray]) -> xr.Dataset:
    per_sample = np.nanmean(data["returns"], axis=2)  # (points, S)
    rows = []
    for i, r in enumerate(per_sample):
        if r.size >= 2:
            rows.append(purd_summary(r, alpha=spec.alpha, bins=spec.bins, ltp_fraction=spec.ltp_fraction,
                                     n_resamples=spec.bootstrap, seed=spec.seed + i))
        else:
            nan = (float("nan"),) * 3
            rows.append({"mean": (float(r[0]),) * 3, "std": nan, "mode": nan, "ltp": nan, "cvar": nan})
    summary = {k: tuple(np.asarray([row[k][j] for row in rows]) for j in range(3)) for k in rows[0]}
    distance = math.sqrt(sum(float(np.sum((theta_b[n].astype(np.float64) - theta_a[n]) ** 2)) for n in theta_a))
    ds = xr.Dataset(
        {
            "returns": (("alpha", "sample", "episode"), data["returns"], {"long_name": "episode return"}),
            "lengths": (("alpha", "sample", "episode"), data["lengths"].astype(np.float64), {"long_name": "episode length"}),
            "return": (("alpha", "sample"), per_sample, {"long_name": "return of the perturbed policy (mean over episodes)"}),
            **summary_variables(summary, ("alpha",)),  # type: ignore[arg-type]
        },
        coords={"alpha": alphas, "sample": np.arange(spec.n_samples), "episode": np.arange(spec.episodes)},
    )
    ds["alpha"].attrs["long_name"] = "α: θ(α) = (1 − α)·θ_A + α·θ_B"
    ds.attrs.update({
        **kind_attrs("interpolation"), "env_id": agent.env.env_id, "algo": agent.algo, "checkpoint_a": spec.checkpoint_a,
        "checkpoint_b": spec.checkpoint_b, "sigma": spec.sigma, "samples": spec.n_samples, "seed": spec.seed,
        "deterministic": int(spec.deterministic), "episodes": spec.episodes, "cvar_alpha": spec.alpha,
        "ltp_fraction": spec.ltp_fraction, "bins": spec.bins, "distance": distance,
    })
    return ds
