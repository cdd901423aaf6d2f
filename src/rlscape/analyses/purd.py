"""The post-update return distribution (methods.md §8, seed 002: "Policy optimization in a noisy neighborhood").

One sample of the PURD of a checkpoint θ is the return of θ' = θ + Δθ, where Δθ is one update with
the algorithm's own rule from the checkpoint's saved training state (:class:`rlscape.core.updater.Updater`):

* TD3 / DDPG / SAC — one actor Adam step on an independent minibatch of ``batch_size`` rows drawn
  uniformly with replacement from the saved replay buffer; critic, targets and entropy coefficient
  frozen; the saved Adam moments and step count restored for every sample (``mode="actor"``);
* PPO / A2C / TRPO — a fresh rollout of the training size through the checkpoint's pipeline, then
  one minibatch step (``ppo_update="minibatch"``) or the whole ``train()`` (``"iteration"``);
* DQN — one Q step (``train()`` with one gradient step), evaluated greedily.

Read top to bottom: the spec → :func:`sample_updates` (N independent updates, their ‖Δθ‖ and
policy churn) → :func:`evaluate_members` (the N updated policies as one population of the batched
evaluator: all cores, common random numbers, so with ``init="fixed"`` every update starts from the
same initial state) → :func:`purd_summary` (mean, std, mode, LTP, CVaR with 95 % bootstrap CIs,
all from :mod:`rlscape.stats`) → :func:`purd` (a resumable run directory) and
:func:`purd_over_training` (one sub-run per checkpoint, combined over ``step``).

Random streams: update ``i`` draws everything (minibatch, rollout resets, torch/numpy noise) from
``SeedSequence([seed, PURD_STREAM, i])``, so sample i does not depend on N or on a resume, and an
evaluation seed of its own derives from the same ``seed``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from pydantic import model_validator

from rlscape import stats
from rlscape.analyses.overtrain import combine_steps
from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import kind_attrs
from rlscape.core.lifecycle import Run, open_run, over_checkpoints
from rlscape.core.policy import CATEGORICAL, QVALUES, Agent, load_checkpoint
from rlscape.core.runs import checkpoints_label, select_checkpoints
from rlscape.core.spec import CheckpointSpec
from rlscape.core.updater import ON_POLICY, ActorRowTable, Updater

log = logging.getLogger(__name__)

PURD_STREAM = 0x9D2D  # SeedSequence([seed, PURD_STREAM, i]): the random streams of update i
EVAL_STREAM = 0x9E7A  # SeedSequence([seed, EVAL_STREAM]) / ([seed, EVAL_STREAM, i]): evaluation seeds
CHURN_STREAM = 0xC4A2  # the fixed batch of visited states the churn is measured on
SUMMARIES = ("mean", "std", "mode", "ltp", "cvar")
_SAMPLES = "samples.npz"  # finished updates of an unfinished run (resume)
#: the most memory one table of replay-row quantities shared by all of a PURD's TD3/DDPG updates may
#: take (a 400×300 actor: 5.7 kB per row; 1000 updates on a 120k-row buffer: 105k rows, 0.6 GB)
ROW_TABLE_BYTES = 1 << 30


# -- the spec --------------------------------------------------------------------------------------

class PurdSpec(CheckpointSpec):
    """What one PURD asks for (the identity of its run directory)."""

    kind: Literal["purd"] = "purd"
    updates: int = 1000
    seed: int = 0
    deterministic: bool = True
    init: Literal["fixed", "random"] = "fixed"
    episodes_per_update: int = 1
    batch_size: int = 256
    ppo_update: Literal["minibatch", "iteration"] = "minibatch"
    alpha: float = 0.1
    ltp_fraction: float = 0.5
    ltp_reference: Literal["mode", "pre"] = "mode"
    bins: int = 100
    bootstrap: int = 1000
    churn_states: int = 256
    chunk: int = 250

    @model_validator(mode="after")
    def _check(self) -> PurdSpec:
        if self.updates < 2:
            raise ValueError(f"--updates must be at least 2 (a distribution), not {self.updates}")
        if self.episodes_per_update < 1:
            raise ValueError(f"--episodes-per-update must be at least 1, not {self.episodes_per_update}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.seed < 0:
            raise ValueError(f"--seed must be ≥ 0, not {self.seed}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"--alpha must be in (0, 1], not {self.alpha}; e.g. --alpha 0.1")
        if not (math.isfinite(self.ltp_fraction) and self.ltp_fraction > 0):
            raise ValueError(f"the LTP fraction must be positive, not {self.ltp_fraction}")
        if self.bins < 2 or self.bootstrap < 1 or self.churn_states < 1 or self.chunk < 1:
            raise ValueError("bins ≥ 2, bootstrap ≥ 1, churn states ≥ 1 and chunk ≥ 1 are needed")
        return self

    @property
    def mode(self) -> str:
        """The :meth:`Updater.step` mode of one sample."""
        if self.algo_name in ON_POLICY:
            return "actor" if self.ppo_update == "minibatch" else "train"
        return "train" if self.algo_name == "dqn" else "actor"

    @property
    def algo_name(self) -> str:
        return (self.algo or "").lower()


def update_seed(seed: int, i: int) -> int:
    """The seed of update ``i`` (independent of N: a longer run extends a shorter one)."""
    return int(np.random.SeedSequence([int(seed), PURD_STREAM, int(i)]).generate_state(1)[0] % (2**31 - 1))


def initial_observations(agent: Agent, seed: int, episodes: int) -> np.ndarray:
    """The initial observations (as the policy sees them) of evaluation episodes 0..E−1 of seed
    ``seed``: the fixed initial state(s) of every update, shape (E, *obs_shape)."""
    from rlscape.core.evaluate import reset_seed

    env = agent.env.make()
    try:
        return np.stack([np.asarray(env.reset(seed=reset_seed(seed, e))[0], np.float64) for e in range(episodes)])
    finally:
        env.close()


def eval_seed(seed: int, member: int | None = None) -> int:
    """The evaluator's seed: one for every update (``init="fixed"``), or one per update (``random``)."""
    key = [int(seed), EVAL_STREAM] + ([] if member is None else [int(member)])
    return int(np.random.SeedSequence(key).generate_state(1)[0] % (2**31 - 1))


# -- sampling updates ------------------------------------------------------------------------------

@dataclass
class UpdateSamples:
    """N independent updates of one checkpoint.

    ``deltas``: parameter name → Δθ, shape (N, *shape) float32 (the updater's selected parameters);
    ``norms``: ‖Δθ‖ of the actor, (N,); ``churn``: (N,) (see :func:`churn`); ``seeds``: (N,).
    """

    deltas: dict[str, np.ndarray]
    norms: np.ndarray
    churn: np.ndarray
    seeds: np.ndarray


def churn_observations(updater: Updater, n: int, seed: int) -> torch.Tensor:
    """A fixed batch of ``n`` visited states in the policy's input space (normalised as in training).

    Off-policy: rows of the saved replay buffer (drawn with a fixed seed, first env). On-policy:
    the states of the updater's last rollout (call after one :meth:`Updater.step`). Shape (n', *obs).
    """
    m = updater.model
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), CHURN_STREAM]))
    if updater.algo in ON_POLICY:
        obs = m.rollout_buffer.observations
        flat = obs.reshape(-1, *m.observation_space.shape) if isinstance(obs, np.ndarray) else None  # (steps·envs, *obs)
        if flat is None:
            raise RlscapeError("policy churn needs array observations (dict observation spaces are not supported)")
        rows = rng.choice(flat.shape[0], size=min(n, flat.shape[0]), replace=False)
        batch = flat[np.sort(rows)]
    else:
        buf = m.replay_buffer
        size = buf.buffer_size if buf.full else buf.pos
        rows = rng.integers(0, size, size=n)
        batch = buf.observations[rows, 0]
        vn = m.get_vec_normalize_env()
        if vn is not None:
            batch = vn.normalize_obs(batch)
    return torch.as_tensor(np.asarray(batch), dtype=torch.float32)


def greedy_actions(updater: Updater, obs: torch.Tensor) -> np.ndarray:
    """The policy's deterministic actions on ``obs`` as it is now: (n,) discrete or (n, action_dim)
    continuous, in the network's output units (TD3/SAC: the squashed action in [−1, 1])."""
    with torch.no_grad():
        return updater.model.policy._predict(obs, deterministic=True).cpu().numpy()  # noqa: SLF001 - SB3's own forward


def churn(before: np.ndarray, after: np.ndarray) -> float:
    """Policy churn of one update: the fraction of states whose greedy action changes (discrete
    actions, ``before``/``after`` of shape (n,)); for continuous actions, (n, d), the mean over
    states of ‖μ'(s) − μ(s)‖."""
    if before.ndim == 1:
        return float(np.mean(before != after))
    return float(np.mean(np.linalg.norm(after.astype(np.float64) - before.astype(np.float64), axis=-1)))


class ActorSnapshot:
    """What an off-policy actor-only step changes — the actor's parameters and its optimizer's
    state (Adam moments, step counts) — copied once and put back in place after every sample.

    :meth:`Updater.step` with ``from_saved=True`` restores the *whole* training state (critic,
    targets, both optimizers) by deep copies before every sample; for the actor step that is a
    third of its time and changes nothing else (critic, targets and entropy coefficient are frozen
    in it), so samples taken with this snapshot are bit-identical (tested against a plain SB3 loop).
    """

    def __init__(self, updater: Updater) -> None:
        m = updater.model
        self.params = [p for p in m.actor.parameters()]
        self.values = [p.detach().clone() for p in self.params]
        self.optimizer = m.actor.optimizer
        self.state = {id(p): {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in self.optimizer.state[p].items()}
                      for p in self.params if p in self.optimizer.state}

    def restore(self) -> None:
        with torch.no_grad():
            for p, v in zip(self.params, self.values, strict=True):
                p.copy_(v)
                p.grad = None
            for p in self.params:
                saved = self.state.get(id(p))
                if saved is None:
                    self.optimizer.state.pop(p, None)
                    continue
                live = self.optimizer.state[p]
                for k, v in saved.items():
                    if isinstance(v, torch.Tensor) and isinstance(live.get(k), torch.Tensor) and live[k].shape == v.shape:
                        live[k].copy_(v)
                    else:
                        live[k] = v.clone() if isinstance(v, torch.Tensor) else v


def sample_updates(updater: Updater, indices: Sequence[int], *, seed: int, mode: str, batch_size: int,
                   churn_obs: torch.Tensor, actions0: np.ndarray, table: ActorRowTable | None = None) -> UpdateSamples:
    """Updates ``indices`` of a PURD, each from the updater's saved state (independent samples).
    ``table``: the replay rows' per-row quantities shared by all the PURD's updates (see
    :func:`row_table`; TD3/DDPG)."""
    if mode == "actor" and updater.batched_actor_steps_supported():
        return _batched_samples(updater, indices, seed=seed, batch_size=batch_size, churn_obs=churn_obs, actions0=actions0,
                                table=table)
    deltas: dict[str, list[np.ndarray]] = {n: [] for n in updater.names}
    norms, churns, seeds = [], [], []
    light = mode == "actor" and updater.algo in ("td3", "ddpg", "sac")
    if light:
        updater.restore(updater.saved)
        snapshot = ActorSnapshot(updater)
    for i in indices:
        s = update_seed(seed, i)
        res = updater.step(s, mode=mode, batch_size=batch_size, from_saved=not light)
        for n in updater.names:
            deltas[n].append(res.delta[n])
        norms.append(res.norm)
        churns.append(churn(actions0, greedy_actions(updater, churn_obs)))
        seeds.append(s)
        if light:
            snapshot.restore()
    return UpdateSamples({n: np.stack(v) for n, v in deltas.items()}, np.asarray(norms), np.asarray(churns),
                         np.asarray(seeds, np.int64))


def row_table(updater: Updater, indices: Sequence[int], *, seed: int, mode: str, batch_size: int) -> ActorRowTable | None:
    """One table of the per-row quantities (:meth:`Updater.actor_row_table`) for every replay row
    that updates ``indices`` draw, when the batched actor steps apply and the table fits in
    :data:`ROW_TABLE_BYTES`; else None (each chunk computes its own). A chunk of 250 updates on a
    120k-row buffer draws 50k distinct rows; all 1000 updates draw 105k, not 200k."""
    if not (mode == "actor" and updater.batched_actor_steps_supported()):
        return None
    keys = updater.actor_step_rows([update_seed(seed, i) for i in indices], batch_size)
    width = sum(mod.in_features + mod.out_features for mod in updater.model.actor.modules() if isinstance(mod, torch.nn.Linear))
    if np.unique(keys).size * width * 4 > ROW_TABLE_BYTES:
        return None
    return updater.actor_row_table(keys, batch_size)


def _batched_samples(updater: Updater, indices: Sequence[int], *, seed: int, batch_size: int, churn_obs: torch.Tensor,
                     actions0: np.ndarray, table: ActorRowTable | None = None) -> UpdateSamples:
    """:func:`sample_updates` for TD3/DDPG actor steps through :meth:`Updater.actor_steps` (all
    at once, bit for bit the same updates); the churn runs each updated actor θ' with the model's
    own forward pass (``functional_call``), as :func:`greedy_actions` does."""
    seeds = [update_seed(seed, i) for i in indices]
    actor = updater.model.actor
    churns = np.empty(len(seeds))

    def churn_of(k0: int, after: dict[str, torch.Tensor]) -> None:
        local = {n.removeprefix("actor."): v for n, v in after.items()}
        for k in range(next(iter(local.values())).shape[0]):
            actions = torch.func.functional_call(actor, {n: v[k] for n, v in local.items()}, (churn_obs,))
            churns[k0 + k] = churn(actions0, actions.cpu().numpy())

    steps, _ = updater.actor_steps(seeds, batch_size, visit=churn_of, table=table)
    deltas = {n: steps[n].numpy() for n in updater.names}
    norms = np.array([math.sqrt(sum(float(np.sum(np.square(deltas[n][k], dtype=np.float64))) for n in updater.names))
                      for k in range(len(seeds))])
    return UpdateSamples(deltas, norms, churns, np.asarray(seeds, np.int64))


# -- evaluation ------------------------------------------------------------------------------------

def evaluate_members(agent: Agent, thetas: Mapping[str, np.ndarray], *, episodes: int, seed: int, deterministic: bool,
                     workers: int | None = None, member_seeds: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns and lengths (K, E) of K explicit policies as one population of the batched evaluator
    (``member_seeds``: member k on episodes of its own seed instead of ``seed``)."""
    from rlscape.core.population import evaluate_population

    ds = evaluate_population(agent, thetas, episodes=episodes, seed=seed, deterministic=deterministic, workers=workers,
                             member_seeds=member_seeds)
    return ds["returns"].values.astype(np.float64), ds["lengths"].values.astype(np.int64)


def evaluate_updates(agent: Agent, theta0: Mapping[str, np.ndarray], deltas: Mapping[str, np.ndarray], indices: Sequence[int],
                     *, spec: PurdSpec, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate θ0 + Δθ_i: returns and lengths (k, episodes_per_update).

    ``init="fixed"``: one population, every member on the same episodes (the same initial states).
    ``"random"``: every update on its own episodes (its own evaluation seed), still one population.
    """
    thetas = {n: theta0[n][None] + d for n, d in deltas.items()}
    E = spec.episodes_per_update
    own = None if spec.init == "fixed" else [eval_seed(spec.seed, i) for i in indices]
    return evaluate_members(agent, thetas, episodes=E, seed=eval_seed(spec.seed), deterministic=spec.deterministic,
                            workers=workers, member_seeds=own)


# -- statistics ------------------------------------------------------------------------------------

def purd_statistics(alpha: float = 0.1, *, bins: int = 100, ltp_fraction: float = 0.5,
                    reference: float | None = None) -> dict[str, Callable[..., Any]]:
    """The PURD's summary statistics as ``f(x, axis=-1)`` (all from :mod:`rlscape.stats`).

    LTP = P(R < ltp_fraction · m), m the histogram mode (``reference``: the pre-update return instead).
    """
    return {
        "mean": np.mean,
        "std": functools.partial(np.std, ddof=1),
        "mode": functools.partial(stats.histogram_mode, bins=bins),
        "ltp": functools.partial(stats.ltp, fraction=ltp_fraction, reference=reference, bins=bins),
        "cvar": functools.partial(stats.cvar, alpha=alpha),
    }


def purd_summary(returns: np.ndarray, *, alpha: float = 0.1, bins: int = 100, ltp_fraction: float = 0.5,
                 reference: float | None = None, n_resamples: int = 1000, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Summary of one PURD, ``returns`` (N,): name → (value, 95 % CI low, CI high) for mean, std, mode,
    LTP, CVaR_α. The CIs are percentile bootstraps (``n_resamples``, seeded). Where LTP is undefined
    (mode ≤ 0) it is NaN; one warning says so."""
    x = np.asarray(returns, np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size < 2:
        raise RlscapeError(f"a PURD needs at least 2 finite returns, got {x.size}")
    out: dict[str, tuple[float, float, float]] = {}
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB007]))
    for name, f in purd_statistics(alpha, bins=bins, ltp_fraction=ltp_fraction, reference=reference).items():
        with warnings.catch_warnings():
            if name == "ltp":
                warnings.simplefilter("ignore", RuntimeWarning)  # warned once below, not per resample
            value = float(f(x, axis=-1))
            lo, hi = stats.bootstrap_ci(x, f, n_resamples=n_resamples, rng=rng)
        out[name] = (value, float(lo), float(hi))
    if not math.isfinite(out["ltp"][0]):
        what = "the mode" if reference is None else "the pre-update return"
        log.warning("LTP is undefined: %s is ≤ 0 (NaN stored); use --ltp-reference pre, or read mean/CVaR", what)
    return out


def summary_variables(summary: Mapping[str, tuple[float, float, float]], dims: tuple[str, ...] = ()) -> dict[str, Any]:
    """``mean``, ``mean_ci_low``, ``mean_ci_high``, … as Dataset variables of dims ``dims``."""
    long = {"mean": "mean return after one update", "std": "std of the post-update returns (ddof=1)",
            "mode": "mode (centre of the fullest of the histogram's bins)", "ltp": "left-tail probability P(R < f·m)",
            "cvar": "CVaR_α of the post-update returns (lower tail)"}
    data: dict[str, Any] = {}
    for name, (v, lo, hi) in summary.items():
        data[name] = (dims, np.asarray(v), {"long_name": long[name]})
        data[f"{name}_ci_low"] = (dims, np.asarray(lo), {"long_name": f"{name}: 95 % bootstrap CI, low"})
        data[f"{name}_ci_high"] = (dims, np.asarray(hi), {"long_name": f"{name}: 95 % bootstrap CI, high"})
    return data


# -- one checkpoint --------------------------------------------------------------------------------

def open_updater(spec: PurdSpec, agent: Agent | None = None) -> tuple[Agent, Updater, PurdSpec]:
    """Load the checkpoint for evaluation and its training state for updates (the one-line
    errors for a checkpoint without optimizer state or replay buffer come from the updater)."""
    # the updater first: it checks the training state (optimizer, buffer) before anything is loaded
    updater = Updater.from_checkpoint(spec.checkpoint, env_id=spec.env_id, algo=spec.algo, vecnormalize=spec.vecnormalize,
                                      which="actor", agent=agent)
    if agent is None:
        agent = load_checkpoint(spec.checkpoint, spec.env_id, vecnormalize=spec.vecnormalize, algo=spec.algo)
    try:
        agent.check_sampling(spec.deterministic)
    except RlscapeError:
        updater.close()
        raise
    if spec.algo is None:
        spec = spec.model_copy(update={"algo": updater.algo})
    if updater.algo == "dqn" and not spec.deterministic:
        log.info("DQN: evaluating greedily would be the reference's choice; --eval stochastic uses ε-greedy")
    return agent, updater, spec


def purd(spec: PurdSpec, out: str | Path | None = None, *, agent: Agent | None = None, overwrite: bool = False,
         workers: int | None = None, progress: bool = True) -> xr.Dataset:
    """The PURD of one checkpoint; with ``out``, a resumable run directory. See :func:`compute_purd`."""
    agent, updater, full = open_updater(spec, agent)
    with updater:
        if out is None:
            return compute_purd(None, full, agent, updater, workers=workers, progress=progress)
        with open_run(out, spec.model_dump(mode="json"), overwrite=overwrite, owned=(_SAMPLES,)) as run:
            ds = compute_purd(run, full, agent, updater, workers=workers, progress=progress)
            run.finish(ds)
    return ds


class PartialResults:
    """Rows of results stored in one ``.npz`` after every chunk, so an interrupted run resumes.

    ``fields``: name → (shape, fill value, dtype); axis 0 of every field is the row (update, α …).
    A stored file of other shapes (another spec) is ignored.
    """

    def __init__(self, path: Path | None, fields: Mapping[str, tuple[tuple[int, ...], Any, Any]]) -> None:
        self.path = path
        self.data = {k: np.full(shape, fill, dtype) for k, (shape, fill, dtype) in fields.items()}
        n = next(iter(fields.values()))[0][0]
        self.done = np.zeros(n, bool)
        if path is not None and path.is_file():
            with np.load(path) as z:
                if all(k in z and z[k].shape == v.shape for k, v in self.data.items()):
                    self.data = {k: z[k].copy() for k in self.data}
                    self.done = z["done"].copy()
                    log.info("resuming: %d of %d rows already done", int(self.done.sum()), n)

    def put(self, idx: np.ndarray, **values: np.ndarray) -> None:
        for k, v in values.items():
            self.data[k][idx] = v
        self.done[idx] = True
        if self.path is not None:
            tmp = self.path.with_name(self.path.stem + ".tmp.npz")
            arrays: dict[str, Any] = {"done": self.done, **self.data}
            np.savez(tmp, **arrays)
            tmp.replace(self.path)


def compute_purd(run: Run | None, spec: PurdSpec, agent: Agent, updater: Updater, *, workers: int | None = None,
                 progress: bool = True) -> xr.Dataset:
    """N updates from the checkpoint's saved state, evaluated as populations of ``spec.chunk`` updates.

    Returns a Dataset with dims ``update`` (N) and ``episode`` (E): ``returns``, ``lengths``,
    ``return`` (mean over the update's episodes: the PURD sample), ``update_norm``, ``churn``,
    ``update_seed``; ``pre_returns`` (episode) of θ itself from the same initial state(s); the
    summaries ``mean``, ``std``, ``mode``, ``ltp``, ``cvar`` and their ``*_ci_low``/``*_ci_high``.
    """
    N, E = spec.updates, spec.episodes_per_update
    theta0 = agent.parameters("all")
    missing = [n for n in updater.names if n not in theta0]
    if missing:
        raise RlscapeError(f"the updated parameters {missing[:3]} are not the evaluated policy's; is --algo right?")
    samples = PartialResults(run.path / _SAMPLES if run is not None else None, {
        "returns": ((N, E), np.nan, np.float64), "lengths": ((N, E), 0, np.int64), "update_norm": ((N,), np.nan, np.float64),
        "churn": ((N,), np.nan, np.float64), "update_seed": ((N,), 0, np.int64)})
    mode = spec.mode
    t_update = t_eval = 0.0
    steps = 0
    # the pre-update policy, from the same initial state(s) as every update (init fixed)
    t0 = time.perf_counter()
    pre, pre_len = evaluate_members(agent, {updater.names[0]: theta0[updater.names[0]][None]}, episodes=E,
                                    seed=eval_seed(spec.seed), deterministic=spec.deterministic, workers=workers)
    t_eval += time.perf_counter() - t0
    steps += int(pre_len.sum())
    # the fixed batch of visited states for the churn, and the actions of θ there
    t0 = time.perf_counter()
    if updater.algo in ON_POLICY:
        updater.step(update_seed(spec.seed, 0), mode=mode, batch_size=spec.batch_size)  # fills the rollout buffer from θ
        updater.restore(updater.saved)
    churn_obs = churn_observations(updater, spec.churn_states, spec.seed)
    actions0 = greedy_actions(updater, churn_obs)
    t_update += time.perf_counter() - t0
    if run is not None:
        run.record(env=agent.env.describe(), algo=updater.algo, update=mode, updater=updater.info,
                   parameter_names=list(updater.names), churn_states=int(churn_obs.shape[0]),
                   seeds={"update_i": f"SeedSequence([{spec.seed}, {PURD_STREAM:#x}, i])",
                          "evaluation": f"SeedSequence([{spec.seed}, {EVAL_STREAM:#x}]" + ("" if spec.init == "fixed" else ", i") + "])",
                          "initial_state": f"reset seed of episode 0 of evaluation seed {eval_seed(spec.seed)}" if spec.init == "fixed" else "per update"})
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=N, initial=int(samples.done.sum()), unit="upd", desc="post-update returns", dynamic_ncols=True)
    try:
        todo = np.flatnonzero(~samples.done)
        t0 = time.perf_counter()
        table = row_table(updater, todo.tolist(), seed=spec.seed, mode=mode, batch_size=spec.batch_size) if todo.size else None
        t_update += time.perf_counter() - t0
        for start in range(0, todo.size, spec.chunk):
            idx = todo[start : start + spec.chunk]
            t0 = time.perf_counter()
            got = sample_updates(updater, idx.tolist(), seed=spec.seed, mode=mode, batch_size=spec.batch_size,
                                 churn_obs=churn_obs, actions0=actions0, table=table)
            t_update += time.perf_counter() - t0
            t0 = time.perf_counter()
            rets, lens = evaluate_updates(agent, theta0, got.deltas, idx.tolist(), spec=spec, workers=workers)
            t_eval += time.perf_counter() - t0
            steps += int(lens.sum())
            samples.put(idx, returns=rets, lengths=lens, update_norm=got.norms, churn=got.churn, update_seed=got.seeds)
            if bar is not None:
                bar.update(idx.size)
                bar.set_postfix_str(f"mean {np.nanmean(samples.data['returns'][samples.done]):.4g}")
    finally:
        if bar is not None:
            bar.close()
    ds = build_purd_dataset(samples.data, pre, pre_len, spec, agent, updater)
    if spec.init == "fixed":
        obs0 = initial_observations(agent, eval_seed(spec.seed), E)
        ds["initial_obs"] = (("episode", *[f"obs_{i}" for i in range(obs0.ndim - 1)]), obs0,
                             {"long_name": "initial observation of each evaluation episode (the same for every update)"})
    if run is not None:
        run.record(env_steps_this_session=steps, update_time_s=round(t_update, 3), eval_time_s=round(t_eval, 3),
                   **{k: float(ds[k]) for k in SUMMARIES})
    log.info("PURD of %d updates: mean %.4g, LTP %.3g, CVaR %.4g (updates %.1f s, evaluation %.1f s)",
             N, float(ds["mean"]), float(ds["ltp"]), float(ds["cvar"]), t_update, t_eval)
    return ds


def build_purd_dataset(data: Mapping[str, np.ndarray], pre: np.ndarray, pre_len: np.ndarray, spec: PurdSpec, agent: Agent,
                       updater: Updater) -> xr.Dataset:
    """The PURD Dataset (see :func:`compute_purd`)."""
    per_update = np.nanmean(data["returns"], axis=1)
    pre_return = float(np.mean(pre[0]))
    summary = purd_summary(per_update, alpha=spec.alpha, bins=spec.bins, ltp_fraction=spec.ltp_fraction,
                           reference=pre_return if spec.ltp_reference == "pre" else None, n_resamples=spec.bootstrap,
                           seed=spec.seed)
    discrete = agent.kind in (CATEGORICAL, QVALUES)
    units = "fraction of churn states whose greedy action changes" if discrete else "mean ‖Δμ(s)‖ over the churn states"
    ds = xr.Dataset(
        {
            "returns": (("update", "episode"), data["returns"], {"long_name": "episode return after the update"}),
            "lengths": (("update", "episode"), data["lengths"].astype(np.float64), {"long_name": "episode length (steps)"}),
            "return": (("update",), per_update, {"long_name": "post-update return (mean over the update's episodes)"}),
            "update_norm": (("update",), data["update_norm"], {"long_name": "‖θ' − θ‖ of the actor"}),
            "churn": (("update",), data["churn"], {"long_name": f"policy churn: {units}"}),
            "update_seed": (("update",), data["update_seed"], {"long_name": "seed of the update's random streams"}),
            "pre_returns": (("episode",), pre[0], {"long_name": "return of θ before any update, same initial state(s)"}),
            "pre_return": ((), pre_return, {"long_name": "mean return of θ before any update"}),
            **summary_variables(summary),
        },
        coords={"update": np.arange(spec.updates), "episode": np.arange(spec.episodes_per_update)},
    )
    ds.attrs.update({
        **kind_attrs("purd"), "env_id": agent.env.env_id, "algo": updater.algo, "checkpoint": spec.checkpoint,
        "update_rule": spec.mode, "ppo_update": spec.ppo_update if updater.algo in ON_POLICY else "",
        # the minibatch the update used: --batch-size for an off-policy actor step, else the algorithm's own
        "batch_size": spec.batch_size if spec.mode == "actor" and updater.algo not in ON_POLICY else int(getattr(updater.model, "batch_size", 0) or 0),
        "optimizer": str(updater.info.get("optimizer")), "seed": spec.seed, "deterministic": int(spec.deterministic),
        "init": spec.init, "eval_seed": eval_seed(spec.seed), "episodes_per_update": spec.episodes_per_update,
        "alpha": spec.alpha, "ltp_fraction": spec.ltp_fraction, "ltp_reference": spec.ltp_reference, "bins": spec.bins,
        "bootstrap": spec.bootstrap, "n_updates": spec.updates, "churn_kind": "discrete" if discrete else "continuous",
    })
    return ds


# -- over training ---------------------------------------------------------------------------------

def purd_over_training(run_dir: str | Path, template: PurdSpec, out: str | Path, *, checkpoints: str | None = None,
                       overwrite: bool = False, workers: int | None = None, progress: bool = True) -> xr.Dataset:
    """One PURD per checkpoint of a training run (``OUT/steps/<step>/``), combined over ``step``.

    ``all`` leaves out step 0 (the untrained policy: no optimizer moments, an empty replay buffer);
    name it in ``checkpoints`` to include it.
    """
    selected = select_checkpoints(run_dir, checkpoints)
    if checkpoints_label(checkpoints) == "all" and len(selected) > 1 and selected[0][0] == 0:
        selected = selected[1:]  # the untrained policy: no optimizer moments, an empty replay buffer
    top_spec = {"kind": "purd-over-training", "run": str(Path(run_dir).resolve()),
                "checkpoints": checkpoints_label(checkpoints), "purd": template.model_dump(mode="json", exclude={"checkpoint"})}
    specs = {step: template.model_copy(update={"checkpoint": str(Path(folder).resolve())}) for step, folder in selected}

    def compute(step: int, folder: Path, run: Run) -> xr.Dataset:
        agent, updater, spec = open_updater(specs[step])
        with updater:
            return compute_purd(run, spec, agent, updater, workers=workers, progress=progress)

    return over_checkpoints(out, top_spec, selected, sub_spec=lambda step, _f: specs[step].model_dump(mode="json"),
                            compute=compute, combine=combine_purd, overwrite=overwrite, progress=progress,
                            record={"training_run": str(Path(run_dir).resolve())})


def combine_purd(per_step: list[tuple[int, xr.Dataset]]) -> xr.Dataset:
    """Stack single-checkpoint PURDs along a leading ``step`` dim (differing attributes, e.g. the
    checkpoint path, become variables over ``step``)."""
    return combine_steps(per_step, kind_attrs("purd"))
