"""Surrogate vs true-return landscapes on the plane of the update step (methods.md §7; Ilyas et al. 2020, §2.3).

Read top to bottom: the algorithm's own update Δθ from the checkpoint's saved state
(:class:`rlscape.core.updater.Updater`, one update, seed :func:`rlscape.analyses.gradient.update_seed`)
and a random Gaussian direction d of unit ℓ2 norm (seeded) span the plane
θ(α, β) = θ0 + α·Δθ + β·d, α, β ∈ [0, ``extent``] (1 unit along α = one full step) → for each sample
size N, a batch of whole episodes with ≥ N pairs at θ0 (the ``direction`` stream, consecutive
disjoint batches) gives the surrogate at every point (:func:`surrogate_objective`) and the
evaluator's ``steps=N`` budget gives the true return there (:func:`rlscape.evaluate_population`,
common random numbers across the plane).

The surrogate is the algorithm's own: PPO ``mean min(r Â, clip(r, 1 ± ε) Â)``; A2C/TRPO the
importance-weighted advantage ``mean r Â``, with r = π_θ(a|s)/π_θ0(a|s) and Â the GAE(γ, λ)
advantages of the checkpoint's critic on complete episodes (rewards in training units), normalised
over the batch where the algorithm normalises them (``normalize_advantage``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import kind_attrs
from rlscape.core.lifecycle import Run
from rlscape.core.pg import FlatPolicy, batch_tensors, torch_threads
from rlscape.core.policy import Agent
from rlscape.core.trajectories import Trajectories, check_stochastic, stream_seeds

from .quality import algorithm_settings, critic_values, disjoint_batches, gae

log = logging.getLogger(__name__)

SURROGATE_ALGOS = ("ppo", "a2c", "trpo")
PLANE_DIRECTION_STREAM = 0x5A7  # seed-sequence tag of the random direction


def surrogate_objective(fp: FlatPolicy, traj: Trajectories, adv: np.ndarray, thetas: torch.Tensor, *, clip: float | None) -> np.ndarray:
    """The surrogate at K flat parameter vectors ``thetas`` (K, P) on one batch, (K,) float64.

    ``adv`` (M,): the advantages Â (already normalised where the algorithm does). ``clip``: PPO's ε
    (None: the unclipped importance-weighted advantage of A2C/TRPO).
    """
    from rlscape.core.pg import log_prob

    obs, actions, _ = batch_tensors(traj, fp.dtype)
    A = torch.from_numpy(np.asarray(adv, np.float64)).to(fp.dtype)
    out = np.zeros(thetas.shape[0])
    with torch.no_grad():
        lp0 = log_prob(fp.agent, fp.forward(fp.theta, obs), actions)
        for k in range(thetas.shape[0]):
            ratio = torch.exp(log_prob(fp.agent, fp.forward(thetas[k], obs), actions) - lp0)
            if clip is None:
                out[k] = float((ratio * A).mean())
            else:
                out[k] = float(torch.minimum(ratio * A, torch.clamp(ratio, 1 - clip, 1 + clip) * A).mean())
    return out


def batch_advantages(agent: Agent, traj: Trajectories, gamma: float, lam: float, normalize: bool) -> np.ndarray:
    """GAE(γ, λ) of the critic on the batch's complete episodes (training units), optionally standardised (SB3: std + 1e-8)."""
    adv = gae(traj.train_rewards, critic_values(agent, traj.obs), traj.lengths, gamma, lam)
    if normalize and adv.size > 1:
        adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)  # torch's std is unbiased, as SB3 uses it
    return adv


def run_surrogate(checkpoint: str | Path, out: str | Path, *, samples: Sequence[int] = (2000, 100_000), grid: int = 7,
                  extent: float = 3.0, seed: int = 0, env_id: str | None = None, algo: str | None = None,
                  overwrite: bool = False, progress: bool = True, workers: int | None = None) -> xr.Dataset:
    """Surrogate and true return on the (update step × random direction) plane, for each N in ``samples``.

    ``workers``: processes that evaluate the true return (default: all cores; the numbers do not
    depend on it).

    Dataset dims ``samples``, ``alpha`` (along Δθ, 1 = one full step), ``beta`` (along the unit random
    direction): ``surrogate``, ``return_mean``, ``return_sem`` (samples, alpha, beta), ``pairs``
    (samples: the exact pairs of the surrogate batch); attrs ``step_norm`` = ‖Δθ‖, ``clip_range``.
    """
    from rlscape.analyses.gradient import update_seed
    from rlscape.core.lifecycle import open_run
    from rlscape.core.policy import load_checkpoint
    from rlscape.core.population import evaluate_population
    from rlscape.core.updater import Updater

    s = sorted({int(n) for n in samples})
    if not s or s[0] < 1:
        raise RlscapeError(f"--samples must be positive integers, e.g. 2000,100000, not {samples}")
    if grid < 2:
        raise RlscapeError(f"--grid must be at least 2, not {grid}")
    if not extent > 0:
        raise RlscapeError(f"--extent must be positive, not {extent}")
    agent = load_checkpoint(checkpoint, env_id, algo=algo)
    check_stochastic(agent, "the surrogate objective", update_hint=False)
    if agent.algo not in SURROGATE_ALGOS or not agent.has_value:
        raise RlscapeError(f"the surrogate landscape needs a PPO, A2C or TRPO checkpoint, not {agent.algo.upper()}")
    spec = {"kind": "surrogate", "source": str(Path(checkpoint).resolve()), "samples": s, "grid": grid, "extent": extent,
            "seed": seed, "env_id": env_id, "algo": algo}
    with open_run(out, spec, overwrite=overwrite) as run:
        ds = _compute(agent, checkpoint, s, grid, extent, seed, run, Updater, evaluate_population, update_seed, workers)
        run.finish(ds)
    return ds


def _compute(agent: Agent, checkpoint: str | Path, samples: list[int], grid: int, extent: float, seed: int, run: Run,
             updater: Any, evaluate_population: Any, update_seed: Any, workers: int | None = None) -> xr.Dataset:
    fp = FlatPolicy(agent, "actor")
    with updater.from_checkpoint(checkpoint, which="actor", agent=agent) as up:
        m = up.model
        clip = float(m.clip_range(m._current_progress_remaining)) if agent.algo == "ppo" else None
        normalize = bool(getattr(m, "normalize_advantage", False))
        lam = float(getattr(m, "gae_lambda", algorithm_settings(agent).get("gae_lambda", 1.0)))
        res = up.step(update_seed(seed, 0))
    step = torch.from_numpy(fp.from_named(res.delta)).to(fp.dtype)
    gen = np.random.default_rng(np.random.SeedSequence([int(seed), PLANE_DIRECTION_STREAM]))
    d = gen.standard_normal(fp.size)
    d /= np.linalg.norm(d)
    rand = torch.from_numpy(d).to(fp.dtype)
    alpha = np.linspace(0.0, extent, grid)
    beta = np.linspace(0.0, extent, grid)
    aa, bb = np.meshgrid(alpha, beta, indexing="ij")
    thetas = fp.theta[None] + torch.from_numpy(aa.reshape(-1, 1)).to(fp.dtype) * step[None] \
        + torch.from_numpy(bb.reshape(-1, 1)).to(fp.dtype) * rand[None]
    members = _members(fp, thetas)
    sur = np.zeros((len(samples), grid, grid))
    ret = np.zeros((len(samples), grid, grid))
    sem = np.zeros((len(samples), grid, grid))
    pairs = np.zeros(len(samples), np.int64)
    with torch_threads(fp.size):
        big, bounds = disjoint_batches(agent, samples, 1, seed)
        for i, (n, [(e0, e1)]) in enumerate(zip(samples, bounds, strict=True)):
            batch = big.subset(slice(e0, e1))
            adv = batch_advantages(agent, batch, agent.gamma, lam, normalize)
            sur[i] = surrogate_objective(fp, batch, adv, thetas, clip=clip).reshape(grid, grid)
            pairs[i] = batch.n_steps
            pop = evaluate_population(agent, members, steps=n, seed=seed, workers=workers)
            ret[i] = pop["return_mean"].values.reshape(grid, grid)
            sem[i] = pop["return_sem"].values.reshape(grid, grid)
            log.info("N = %d: surrogate %.4g → %.4g along the step; return %.4g → %.4g", n, sur[i][0, 0], sur[i][-1, 0],
                     ret[i][0, 0], ret[i][-1, 0])
    run.record(seeds={"batches": stream_seeds(seed, "direction"), "evaluation": stream_seeds(seed, "evaluation"),
                      "random_direction": f"default_rng(SeedSequence([{seed}, {PLANE_DIRECTION_STREAM:#x}])), unit ℓ2 norm"})
    return xr.Dataset(
        {"surrogate": (("samples", "alpha", "beta"), sur), "return_mean": (("samples", "alpha", "beta"), ret),
         "return_sem": (("samples", "alpha", "beta"), sem), "pairs": (("samples",), pairs)},
        coords={"samples": np.asarray(samples, np.int64), "alpha": alpha, "beta": beta},
        attrs={**kind_attrs("surrogate"), "algo": agent.algo, "step_norm": float(step.norm()), "clip_range": clip if clip is not None else "none",
               "normalize_advantage": int(normalize), "gae_lambda": lam, "gamma": agent.gamma, "seed": seed,
               "random_direction": "unit-norm Gaussian", "alpha_unit": "one full update step Δθ"},
    )


def _members(fp: FlatPolicy, thetas: torch.Tensor) -> dict[str, np.ndarray]:
    per = [fp.to_named(thetas[k]) for k in range(thetas.shape[0])]
    return {n: np.stack([p[n] for p in per]) for n in fp.names}

