"""Populations of explicit parameter vectors: K policies × E episodes (methods.md §3).

Where a plane's points are ``θ0 + α·d1 + β·d2``, a population's members are given outright:
``thetas`` maps parameter names to ``(K, *shape)`` arrays (names not given stay at θ0). Every
member is evaluated on the same episodes as a plane point (the same reset seeds and action noise:
common random numbers), by the same batched evaluator, so member k's per-episode returns equal,
bit for bit, those of a plane point at the same parameters. Members travel to each worker process
once; the tasks carry member indices only.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from rlscape.core.budgets import budget_attrs, evaluate_budget
from rlscape.core.dask_executor import check_workers
from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import episode_seeds, point_summaries
from rlscape.core.kinds import kind_attrs
from rlscape.core.lifecycle import Run, open_run
from rlscape.core.params import NamedArrays
from rlscape.core.policy import Agent, load_checkpoint
from rlscape.core.spec import EvalSpec
from rlscape.core.store import merge_chunks

log = logging.getLogger(__name__)


def check_thetas(agent: Agent, thetas: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``thetas`` as float32 ``(K, *shape)`` arrays, or a one-line :class:`RlscapeError`."""
    own = agent.parameters("all")
    if not thetas:
        raise RlscapeError("thetas is empty; give at least one parameter name → array of shape (K, *shape)")
    unknown = sorted(set(thetas) - set(own))
    if unknown:
        raise RlscapeError(f"thetas names unknown parameters {unknown[:3]}; use names from agent.parameters('all')")
    out, sizes = {}, {}
    for name in own:  # the agent's order, whatever order thetas came in
        if name not in thetas:
            continue
        a = np.asarray(thetas[name])
        if a.ndim != own[name].ndim + 1 or a.shape[1:] != own[name].shape:
            raise RlscapeError(f"thetas[{name!r}] has shape {a.shape}; give (K, {', '.join(map(str, own[name].shape))}) for K members")
        if not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
            raise RlscapeError(f"thetas[{name!r}] holds NaN, inf or non-numbers; give finite parameter values")
        out[name] = np.ascontiguousarray(a, np.float32)
        sizes[name] = a.shape[0]
    if len(set(sizes.values())) != 1:
        raise RlscapeError(f"thetas give different numbers of members K per name ({sizes}); give every name the same K")
    if next(iter(sizes.values())) < 1:
        raise RlscapeError("thetas hold no members (K = 0); give at least one")
    return out


def _fingerprint(thetas: Mapping[str, np.ndarray]) -> str:
    """sha1 of the members' names, shapes and float32 values: their identity in a run's spec."""
    h = hashlib.sha1()
    for n in thetas:
        h.update(n.encode())
        h.update(str(thetas[n].shape).encode())
        h.update(thetas[n].tobytes())
    return h.hexdigest()


def population_dataset(merged: Mapping[str, np.ndarray], attrs: dict[str, Any]) -> xr.Dataset:
    """Dims ``member`` (K) and ``episode`` (E): per-episode arrays and per-member summaries."""
    data = {name: (["member", "episode"] if per_ep else ["member"], a, meta)
            for name, (per_ep, a, meta) in point_summaries(merged, attrs["gamma"], bool(attrs["has_critic"])).items()}
    K, E = merged["returns"].shape
    return xr.Dataset(data, coords={"member": np.arange(K), "episode": np.arange(E)}, attrs=attrs)


def evaluate_population(
    agent: Agent | str | Path,
    thetas: Mapping[str, Any],
    *,
    episodes: int | str | None = None,
    steps: int | None = None,
    seed: int = 0,
    deterministic: bool = False,
    workers: int | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    max_envs: int | None = None,
    target_sem: float | None = None,
    min_episodes: int | None = None,
    max_episodes: int | None = None,
    member_seeds: Sequence[int] | np.ndarray | None = None,
) -> xr.Dataset:
    """Evaluate K explicit parameter vectors of ``agent`` (or a checkpoint path) on common episodes.

    ``thetas`` maps parameter names (as ``agent.parameters('all')``) to arrays ``(K, *shape)``;
    parameters not named stay at the agent's θ0. Budget: ``episodes`` per member, or episodes
    until ``steps`` steps (20 episodes when neither is given), or ``episodes="auto"`` with
    ``target_sem`` (and optionally ``min_episodes``, ``max_episodes``): episodes added in rounds to
    the members whose SEM is above the target (:mod:`rlscape.core.budgets`). Returns a Dataset with dims
    ``member`` (K) and ``episode`` (E): ``returns``, ``lengths``, ``discounted_returns`` (member,
    episode) and ``return_mean``, ``return_std``, ``return_sem``, ``length_mean``,
    ``discounted_return_mean``, ``n_episodes`` (+ ``value_mean``, ``td_error_mean`` with a
    critic) per member. With ``out``, a resumable run directory (kind ``population``).
    ``member_seeds`` (K,): member k's episodes come from seed ``member_seeds[k]`` instead of
    ``seed`` (independent episodes per member rather than common random numbers).
    """
    check_workers(workers)
    if max_envs is not None and max_envs < 1:
        raise RlscapeError(f"max_envs must be at least 1, not {max_envs}")
    ev = EvalSpec.from_budget(episodes, steps, seed, deterministic, target_sem, min_episodes, max_episodes)
    if not isinstance(agent, Agent):
        agent = load_checkpoint(agent)
    agent.check_sampling(ev.deterministic)
    members = check_thetas(agent, thetas)
    K = next(iter(members.values())).shape[0]
    seeds = None if member_seeds is None else np.asarray(member_seeds, np.int64).reshape(-1)
    if seeds is not None and seeds.shape != (K,):
        raise RlscapeError(f"member_seeds needs one seed per member ({K}), not {seeds.size}")
    theta0 = agent.parameters("all")
    base = {n: theta0[n] for n in members}
    attrs: dict[str, Any] = {
        **kind_attrs("population"), "env_id": agent.env.env_id, "algo": agent.algo, "checkpoint": str(agent.source or "<in-memory>"),
        "moved_parameters": ",".join(members), "seed": ev.seed, "deterministic": int(ev.deterministic),
        **budget_attrs(ev), "gamma": agent.gamma, "has_critic": int(agent.has_value),
        "critic_reward_units": agent.env.critic_reward_units(), "n_members": K,
    }
    if out is None:
        return _evaluate(None, agent, members, base, K, ev, attrs, workers, max_envs, seeds)
    spec = {"kind": "population", "checkpoint": attrs["checkpoint"], "env_id": attrs["env_id"], "algo": attrs["algo"],
            "members": K, "moved_parameters": list(members), "thetas_sha1": _fingerprint(members),
            "evaluation": ev.model_dump(mode="json"), **({} if seeds is None else {"member_seeds_sha1": _fingerprint({"s": seeds})})}
    with open_run(out, spec, overwrite=overwrite) as run:
        run.record(env=agent.env.describe(), algo=agent.algo, seeds=episode_seeds(ev.seed))
        ds = _evaluate(run, agent, members, base, K, ev, attrs, workers, max_envs, seeds)
        run.finish(ds)
    return ds


def _evaluate(run: Run | None, agent: Agent, members: NamedArrays, base: NamedArrays, K: int, ev: EvalSpec,
              attrs: dict[str, Any], workers: int | None, max_envs: int | None, member_seeds: np.ndarray | None = None) -> xr.Dataset:
    """Evaluate the members not yet in ``run``'s chunks (all of them without a run)."""
    chunks = run.dir.read_chunks() if run is not None else []
    t0 = time.perf_counter()
    env_steps = evaluate_budget(agent, base, [], None, K, ev, chunks, on_chunk=run.dir.save_chunk if run is not None else lambda c: None,
                                workers=workers, max_envs=max_envs, members=members, member_seeds=member_seeds)
    if run is not None:
        run.record(env_steps_this_session=env_steps, evaluation_wall_time_s=round(time.perf_counter() - t0, 3))
    ds = population_dataset(merge_chunks(chunks, K), attrs)
    if member_seeds is not None:
        ds["member_seed"] = ("member", member_seeds, {"long_name": "the seed of the member's episodes (instead of the attribute seed)"})
    return ds
