"""Batched evaluation of K parameter vectors × E episodes (methods.md §3).

One block of points is evaluated as a rectangle of ``K_w`` points × ``E_w`` episodes: every live
env of the rectangle gets its action from **one** batched forward pass (``torch.func.vmap`` of a
``functional_call`` over the stacked parameter vectors), finished episodes are masked out and no
longer stepped, and memory stays bounded because rectangles hold at most ``max_envs`` envs.

Reproducibility: episode ``e`` resets with seed ``s_e`` and draws its action noise from its own
stream, both derived from ``(seed, e)`` only — never from the point, the chunk or the worker — so
every point sees the same initial states and noise (common random numbers) and results do not
depend on how the work is split.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import gymnasium as gym
import numpy as np
import torch

from rlscape.core.fastmlp import fast_mlp_forward
from rlscape.core.forward import SkippingForward, make_forward
from rlscape.core.params import NamedArrays
from rlscape.core.policy import ACTION, CATEGORICAL, GAUSSIAN, QVALUES, SQUASHED, TANH, Agent
from rlscape.core.threads import single_threaded

log = logging.getLogger(__name__)

_NOISE_BLOCK = 256  # steps of noise drawn at a time per episode; fixed so streams never depend on it
_MAX_ROWS = 64  # the largest forward block (episodes of one point per batched product)


def block_rows(budget: Budget) -> int:
    """Rows of every batched product in the forward pass: a function of the budget alone.

    BLAS and oneDNN choose their kernel, and so the order of each dot product's sum, from the
    matrix shapes: a rectangle of 4 episodes and one of 10 rounded the same episode differently
    (up to 4e-2 on a Pendulum return), so results moved with ``--max-envs``. Every forward call
    therefore sees blocks of exactly this many episodes of one point (the last one padded). With
    an episodes budget E the blocks split E evenly (E ≤ 64: one block of E rows, no padding when
    the rectangle holds all E episodes, the usual case); 4 for a steps budget, whose rounds hold
    4, 8, 16, … episodes: no round is ever padded. (Until arithmetic version 3, blocks had at least
    8 rows, for MKL's batched products; a CNN head then computed 4 padded rows for every 4 live
    ones of a 4-episode budget. Each point's products are now separate BLAS calls, whose rows do
    not depend on the batch: ``tests/core/test_evaluate.py``.)
    """
    if budget.episodes is None:
        return 4
    e = int(budget.episodes)
    return -(-e // -(-e // _MAX_ROWS))


#: the most parameter bytes of distinct points a rectangle of the numpy MLP chain steps side by side:
#: every env step reads each point's weights once, and past the cache they stream from memory. 500
#: TD3 Hopper actors (0.5 MB each), one episode each, 2 workers: 6.7k env-steps/s with 0.5 MB per
#: rectangle (one actor: per-step overhead), 11.5k with 2 MB, 11.9–12.3k with 4 MB, 10.7k with
#: 8 MB, 9.7k with 32 MB (this machine: 1 MB of L2 per core, 32 MB of L3 shared by both cores)
PARAM_CACHE_BYTES = 4 << 20
_STOP_EVERY = 16  # env steps between checks of the stop request
RESET_STREAM, NOISE_STREAM = 0x5E, 0xA0  # seed-sequence tags: SeedSequence([seed, tag, episode])


def episode_seeds(seed: int, stream: int | None = None) -> dict[str, str]:
    """How episode ``e``'s reset seed and action noise derive from ``seed`` (recorded in run.json).

    ``stream`` None: the evaluation episodes; a tag (e.g.
    :data:`rlscape.core.trajectories.DIRECTION_EPISODES_STREAM`): an independent set of episodes.
    """
    pre = f"{seed}, " if stream is None else f"{seed}, {stream:#x}, "
    return {"env_reset": f"SeedSequence([{pre}{RESET_STREAM:#x}, episode]).generate_state(1)[0]",
            "action_noise": f"PCG64(SeedSequence([{pre}{NOISE_STREAM:#x}, episode]))"}


def _key(seed: int, stream: int | None, tag: int, episode: int) -> list[int]:
    return [int(seed), tag, int(episode)] if stream is None else [int(seed), int(stream), tag, int(episode)]


def reset_seed(seed: int, episode: int, stream: int | None = None) -> int:
    """The env reset seed of episode ``episode`` (the same at every point: common random numbers).

    ``stream`` None: the evaluation episodes; another tag gives an independent set of episodes.
    """
    return int(np.random.SeedSequence(_key(seed, stream, RESET_STREAM, episode)).generate_state(1)[0])


class Cancelled(Exception):
    """The evaluation was asked to stop (Ctrl-C in the parent process)."""


@dataclass(frozen=True)
class Budget:
    """``episodes`` complete episodes per point (ids ``first … first + episodes − 1``), or episodes
    ``0, 1, …`` until at least ``steps`` steps."""

    episodes: int | None = None
    steps: int | None = None
    first: int = 0

    def __post_init__(self) -> None:
        if (self.episodes is None) == (self.steps is None):
            raise ValueError("give exactly one of episodes or steps")
        if self.first and self.steps is not None:
            raise ValueError("a steps budget starts at episode 0")


@dataclass
class BlockResult:
    """Per point × episode results of one block; episodes not run are NaN (lengths: 0)."""

    returns: np.ndarray  # (K, E) float64
    lengths: np.ndarray  # (K, E) int64
    discounted_returns: np.ndarray  # (K, E) float64
    value_sums: np.ndarray  # (K, E) float64, Σ_t V(s_t); NaN without a critic
    td_sq_sums: np.ndarray  # (K, E) float64, Σ_t δ_t² with rewards in the critic's units; NaN without a critic
    env_steps: int

    def arrays(self) -> dict[str, np.ndarray]:
        """The per point × episode arrays by name (as a run directory's chunks store them)."""
        return {"returns": self.returns, "lengths": self.lengths, "discounted_returns": self.discounted_returns,
                "value_sums": self.value_sums, "td_sq_sums": self.td_sq_sums}


class NoiseTable:
    """Action noise of the episodes of one rectangle: ``at(t)[j]`` (shape (W,)) is step ``t`` of episode ``ids[j]``.

    ``width`` W and ``kind`` (``"normal"`` or ``"uniform"``) come from :func:`noise_spec`; ``stream``
    as in :func:`reset_seed`. Each episode's noise is its own stream, drawn in fixed blocks, so it
    never depends on which episodes share the table.
    """

    def __init__(self, seed: int, episode_ids: Sequence[int] | np.ndarray, width: int, kind: str, stream: int | None = None,
                 seeds: Sequence[int] | None = None) -> None:
        self.kind, self.width = kind, width
        per_row = [seed] * len(episode_ids) if seeds is None else list(seeds)  # ``seeds``: each episode's own seed
        self.rngs = [np.random.Generator(np.random.PCG64(np.random.SeedSequence(_key(s, stream, NOISE_STREAM, e))))
                     for s, e in zip(per_row, episode_ids, strict=True)]
        self.table = np.zeros((len(self.rngs), 0, width), np.float32)

    def at(self, t: int) -> np.ndarray:
        while t >= self.table.shape[1]:
            shape = (_NOISE_BLOCK, self.width)
            if self.kind == "normal":
                blocks = [g.standard_normal(shape, dtype=np.float32) for g in self.rngs]
            else:
                blocks = [g.random(shape, dtype=np.float32) for g in self.rngs]
            self.table = np.concatenate([self.table, np.stack(blocks)], axis=1)
        return self.table[:, t]


def noise_spec(agent: Agent) -> tuple[int, str]:
    """(width W, kind) of the per-step action noise a stochastic agent draws: Gumbel-max uniforms
    (W = number of actions), Gaussian normals (W = action dim), or DQN's ε-greedy pair."""
    space = agent.action_space
    if agent.kind == CATEGORICAL:
        return int(space.n), "uniform"  # Gumbel-max
    if agent.kind in (GAUSSIAN, SQUASHED):
        return int(np.prod(_box(space, agent.kind).shape)), "normal"
    if agent.kind == QVALUES:
        return 2, "uniform"  # ε decision, random action
    return 0, "none"


def select_actions(agent: Agent, out: Mapping[str, torch.Tensor], noise: np.ndarray | None, deterministic: bool) -> np.ndarray:
    """Actions for a ``(K, E)`` rectangle from the head outputs; ``noise`` is ``(E, W)``.

    Stochastic sampling is exact for each distribution and driven by the episode's noise:
    Gaussian ``μ + σ·z``; categorical by Gumbel-max; DQN ε-greedy with the model's ε.
    Continuous actions are clipped to the Box (SB3 ``predict``) or, for squashed/tanh policies,
    rescaled from [−1, 1] to the Box as SB3 does.
    """
    space = agent.action_space
    z = None if noise is None else torch.from_numpy(noise)[None]  # (1, E, W)
    kind = agent.kind
    if kind == CATEGORICAL:
        logits = out["logits"]
        if not deterministic:
            u = _noise(z).clamp(1e-12, 1 - 1e-7)
            logits = logits - torch.log(-torch.log(u))
        return logits.argmax(-1).numpy()
    if kind == QVALUES:
        greedy = out["q"].argmax(-1).numpy()
        if deterministic or agent.exploration_rate <= 0:
            return greedy
        zz = _noise(z)[0].numpy()
        explore = zz[:, 0] < agent.exploration_rate
        random_action = np.minimum((zz[:, 1] * space.n).astype(np.int64), space.n - 1)
        return np.where(explore[None, :], random_action[None, :], greedy)
    if kind in (GAUSSIAN, SQUASHED):
        a = out["mean"]
        if not deterministic:
            zg = _noise(z)
            a = a + torch.exp(out["log_std"]) * zg.reshape(1, zg.shape[1], *a.shape[2:])
        if kind == SQUASHED:
            return _rescale(torch.tanh(a).numpy(), _box(space, kind))
        return np.clip(a.numpy(), space.low, space.high)
    if kind == TANH:
        return _rescale(out["action"].numpy(), _box(space, kind))
    if kind == ACTION:
        action = out["action"].numpy()
        return np.clip(action, space.low, space.high) if isinstance(space, gym.spaces.Box) else action
    raise ValueError(f"unknown head kind {kind}")


def _noise(z: torch.Tensor | None) -> torch.Tensor:
    """The episode noise a stochastic head samples with (None only when acting deterministically)."""
    if z is None:
        raise ValueError("stochastic actions need the episode noise; pass noise or deterministic=True")
    return z


def _box(space: gym.Space, kind: str) -> gym.spaces.Box:
    """``space`` as the Box a continuous head (``kind``) acts in."""
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"a {kind} head needs a Box action space, not {space}")
    return space


def _rescale(a: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    return space.low + 0.5 * (a + 1.0) * (space.high - space.low)


class PopulationEvaluator:
    """Evaluates the points of a population of one agent; lives in one process.

    A population is either ``θ_k = base + Σ_j c_kj · d_j`` (planes, lines: the rows handed to
    :meth:`evaluate` are coordinates ``c_k``), or explicit ``members`` (name → ``(K, *shape)``
    float32 arrays: the rows are member indices ``k``). ``base`` (and the basis directions, and the
    members) hold only the selected (moved) parameters; the others keep the agent's own values.
    Envs are created once and reused across rectangles.
    """

    def __init__(self, agent: Agent, base: NamedArrays, basis: Sequence[NamedArrays] = (), *, seed: int,
                 deterministic: bool, max_envs: int | None = None,
                 should_stop: Callable[[], bool] | None = None, generic: bool = False,
                 members: NamedArrays | None = None, member_seeds: np.ndarray | None = None) -> None:
        agent.check_sampling(deterministic)
        self.should_stop = should_stop
        self.agent = agent
        self.names = list(base)
        self.base = {n: torch.from_numpy(np.ascontiguousarray(base[n])) for n in self.names}
        self.basis = [{n: torch.from_numpy(np.ascontiguousarray(d[n])) for n in self.names} for d in basis]
        self.members = None if members is None else {n: torch.from_numpy(np.ascontiguousarray(members[n])) for n in self.names}
        self.seed, self.deterministic = int(seed), bool(deterministic)
        if member_seeds is not None and self.members is None:
            raise ValueError("member_seeds need explicit members")
        # member k's episodes from its own seed (rows are member indices); None: every point on `seed`
        self.member_seeds = None if member_seeds is None else np.asarray(member_seeds, np.int64)
        self.max_envs = max(1, int(max_envs or agent.env.default_max_envs()))  # None: the env family's default
        self.venv = agent.env.make_vec(generic=generic)
        self.width, self.noise_kind = noise_spec(agent)
        # SB3 MLP heads: batched matmuls; else vmap, or a per-point loop for CNN heads (core/forward.py)
        fast = fast_mlp_forward(agent.head)
        self._forward = fast or make_forward(agent.head)
        # the numpy chain computes each point with its own BLAS calls, so a subset of the points
        # gives the same numbers: finished points are dropped from the forward pass (_rectangle)
        self._compacts = fast is not None
        point_bytes = sum(int(t[0].numel()) * 4 for t in self.members.values()) if self.members is not None \
            else sum(int(t.numel()) * 4 for t in self.base.values())
        # points per rectangle the cache holds (measured for the numpy chain; CNN heads loop over points as before)
        self.cache_points = max(1, PARAM_CACHE_BYTES // max(1, point_bytes)) if fast is not None else 1 << 30

    # -- parameters -----------------------------------------------------------------------------
    def _stacked(self, coords: np.ndarray) -> dict[str, torch.Tensor]:
        """Parameters of the points (elementwise, so each point's values never depend on the batch)."""
        if self.members is not None:  # rows are member indices
            index = torch.from_numpy(np.asarray(coords, np.int64).reshape(-1))
            return {Agent.functional_name(n): self.members[n].index_select(0, index) for n in self.names}
        c = torch.from_numpy(np.asarray(coords, np.float32))
        out = {}
        for n in self.names:
            shape = (c.shape[0],) + (1,) * self.base[n].dim()
            t = self.base[n].unsqueeze(0).repeat(shape[0], *([1] * self.base[n].dim()))
            for j, d in enumerate(self.basis):
                t = t + c[:, j].reshape(shape) * d[n].unsqueeze(0)
            out[Agent.functional_name(n)] = t
        return out

    def close(self) -> None:
        self.venv.close()

    # -- public -----------------------------------------------------------------------------------
    def evaluate(self, coords: np.ndarray, budget: Budget) -> BlockResult:
        """Evaluate every row of ``coords`` (K, n_dirs) — with ``members``: indices (K,) — under ``budget``."""
        coords = np.asarray(coords, np.int64).reshape(-1) if self.members is not None else np.atleast_2d(np.asarray(coords, np.float64))
        self.rows = block_rows(budget)
        with single_threaded():  # one thread, as in every worker: BLAS splits work (and sums) by thread count
            if budget.episodes is not None:
                return self._evaluate_episodes(coords, budget.episodes, budget.first)
            assert budget.steps is not None  # Budget holds exactly one of episodes and steps
            return self._evaluate_steps(coords, int(budget.steps))

    def _evaluate_episodes(self, coords: np.ndarray, episodes: int, first: int = 0) -> BlockResult:
        """Episodes ``first … first + episodes − 1`` of every point; column j of the result is episode ``first + j``."""
        K = coords.shape[0]
        res = _empty(K, episodes)
        e_block = min(episodes, self.max_envs)
        k_block = max(1, min(self.max_envs // e_block, self.cache_points))
        for k0 in range(0, K, k_block):
            ks = np.arange(k0, min(K, k0 + k_block))
            for e0 in range(0, episodes, e_block):
                es = np.arange(e0, min(episodes, e0 + e_block))
                part = self._rectangle(coords[ks], first + es)
                _store(res, part, ks, es)
        return res

    def _evaluate_steps(self, coords: np.ndarray, steps: int) -> BlockResult:
        """Episodes 0, 1, 2, … until a point has ≥ ``steps`` steps, finishing the one in progress.

        Unfinished points run in lock-step rounds of 4, 8, 16, … episodes (capped at
        ``max_envs``): a fixed schedule, so no array shape depends on which points share a chunk.
        Episodes that the sequential rule would not have started are dropped.
        """
        K = coords.shape[0]
        done_steps = np.zeros(K, np.int64)
        parts: list[tuple[np.ndarray, np.ndarray, BlockResult]] = []
        e_next, n_ep, total_env_steps = 0, 4, 0
        pending = np.arange(K)
        while pending.size:
            n_ep = min(n_ep, self.max_envs)
            es = np.arange(e_next, e_next + n_ep)
            group = max(1, min(self.max_envs // n_ep, self.cache_points))
            for g0 in range(0, pending.size, group):
                ks = pending[g0 : g0 + group]
                part = self._rectangle(coords[ks], es)
                total_env_steps += part.env_steps
                # sequential rule: keep episode e iff the steps before it are < budget
                before = done_steps[ks][:, None] + np.concatenate(
                    [np.zeros((ks.size, 1), np.int64), np.cumsum(part.lengths, axis=1)[:, :-1]], axis=1)
                keep = before < steps
                for arr in (part.returns, part.discounted_returns, part.value_sums, part.td_sq_sums):
                    arr[~keep] = np.nan
                part.lengths[~keep] = 0
                parts.append((ks, es, part))
                done_steps[ks] += part.lengths.sum(axis=1)
            e_next += n_ep
            n_ep *= 2
            pending = pending[done_steps[pending] < steps]
        res = _empty(K, e_next)
        for ks, es, part in parts:
            _store(res, part, ks, es)
        used = np.where(np.any(res.lengths > 0, axis=0))[0]
        n_used = int(used.max()) + 1 if used.size else 0
        return BlockResult(res.returns[:, :n_used], res.lengths[:, :n_used], res.discounted_returns[:, :n_used],
                           res.value_sums[:, :n_used], res.td_sq_sums[:, :n_used], total_env_steps)

    @torch.inference_mode()
    def _rectangle(self, coords: np.ndarray, episode_ids: np.ndarray) -> BlockResult:
        """Run ``len(coords)`` points × ``len(episode_ids)`` episodes to completion."""
        agent = self.agent
        Kw, Ew = coords.shape[0], len(episode_ids)
        n = Kw * Ew
        # The forward pass sees blocks of exactly R = block_rows(budget) episodes of one point (the
        # last one padded with zero observations) as ``Kw·nb`` virtual points: one shape, so episode
        # e's numbers never depend on --max-envs, --workers or the other points.
        R = self.rows
        nb = -(-Ew // R)
        params = {k: v.repeat_interleave(nb, 0) for k, v in self._stacked(coords).items()}
        # each env row's (seed, episode): one seed for every point, or each member's own
        row_seeds = [self.seed] * n if self.member_seeds is None else \
            [int(self.member_seeds[int(coords[i // Ew])]) for i in range(n)]
        row_episodes = [int(episode_ids[i % Ew]) for i in range(n)]
        # our own C-ordered copy: batched matmuls round by memory layout, and the env keeps its arrays
        obs = np.array(self.venv.reset([reset_seed(s, e) for s, e in zip(row_seeds, row_episodes, strict=True)]), order="C")
        noise = None
        if self.width and not self.deterministic:  # common noise (Ew rows) or each row's own (n rows)
            noise = NoiseTable(self.seed, episode_ids, self.width, self.noise_kind) if self.member_seeds is None else \
                NoiseTable(self.seed, row_episodes, self.width, self.noise_kind, seeds=row_seeds)
        gamma = agent.gamma
        live = np.ones(n, bool)
        ret = np.zeros(n)
        disc = np.zeros(n)
        length = np.zeros(n, np.int64)
        critic = agent.has_value
        vsum = np.zeros(n)
        tdsum = np.zeros(n)
        pending = np.zeros(n, bool)  # a transition whose TD error waits for V(s')
        prev_r = np.zeros(n)
        prev_v = np.zeros(n)
        prev_term = np.zeros(n, bool)
        t, env_steps = 0, 0
        obs_shape = obs.shape[1:]
        x_pad = torch.zeros((Kw, nb * R, *obs_shape))
        wanted = np.zeros((Kw, nb * R), bool)
        space = agent.action_space
        box_dtype = space.dtype if isinstance(space, gym.spaces.Box) else None
        skips_inactive = getattr(self._forward, "skips_inactive", False)
        sel = torch.arange(Kw * nb)  # the blocks the forward pass computes (all, until points finish)
        sel_params = params
        while True:
            if not (live.any() or pending.any()):
                break
            x_pad[:, :Ew] = torch.from_numpy(np.ascontiguousarray(obs, np.float32)).reshape(Kw, Ew, *obs_shape)
            x = x_pad.reshape(Kw * nb, R, *obs_shape)
            if skips_inactive or self._compacts:  # the blocks with an env still running or a value still owed
                wanted[:, :Ew] = (live | pending).reshape(Kw, Ew)
                active = np.asarray(wanted.reshape(Kw * nb, R).any(axis=1))
            if skips_inactive:
                out = cast(SkippingForward, self._forward)(params, x, active=active)
            elif self._compacts:
                if 4 * int(active.sum()) <= 3 * sel.numel():  # drop the finished blocks (copies amortised: each drop removes ≥ 1/4)
                    sel = torch.from_numpy(np.flatnonzero(active))
                    sel_params = {k: v.index_select(0, sel) for k, v in params.items()}
                if sel.numel() == Kw * nb:
                    out = self._forward(params, x)
                else:
                    part = self._forward(sel_params, x.index_select(0, sel))
                    out = {key: torch.zeros((Kw * nb, *val.shape[1:]), dtype=val.dtype).index_copy_(0, sel, val)
                           for key, val in part.items()}
            else:
                out = self._forward(params, x)
            out = {key: val.reshape(Kw, nb * R, *val.shape[2:]) for key, val in out.items()}
            if nb * R != Ew:
                out = {key: val[:, :Ew] for key, val in out.items()}
            if critic:
                v = out["value"].reshape(n).double().numpy()
                if pending.any():
                    delta = prev_r + gamma * np.where(prev_term, 0.0, v) - prev_v
                    tdsum[pending] += np.square(delta[pending])
                    pending[:] = False
            if not live.any():
                break
            if self.should_stop is not None and t % _STOP_EVERY == 0 and self.should_stop():
                raise Cancelled("evaluation stopped on request")
            if self.member_seeds is not None:  # noise per env row: the rectangle as one point of n episodes
                out = {key: val.reshape(1, n, *val.shape[2:]) for key, val in out.items()}
            actions = select_actions(agent, out, None if noise is None else noise.at(t), self.deterministic)
            actions = actions.reshape(n, *actions.shape[2:])
            if box_dtype is not None:  # the space's dtype, as SB3's predict gives: the same numbers on every env path
                actions = actions.astype(box_dtype, copy=False)
            idx = np.flatnonzero(live)
            o, r, term, trunc = self.venv.step(idx, actions[idx])
            obs[idx] = o
            ret[idx] += r
            disc[idx] += gamma**t * r
            length[idx] += 1
            prev_r[idx] = agent.env.critic_reward(r) if critic else r  # TD errors in the critic's units
            prev_term[idx] = term
            live[idx[term | trunc]] = False
            env_steps += idx.size
            if critic:
                vsum[idx] += v[idx]
                prev_v[idx] = v[idx]
                pending[idx] = True
            t += 1
        nan = np.full(n, np.nan)
        return BlockResult(ret.reshape(Kw, Ew), length.reshape(Kw, Ew), disc.reshape(Kw, Ew),
                           (vsum if critic else nan).reshape(Kw, Ew), (tdsum if critic else nan).reshape(Kw, Ew), env_steps)


def _empty(K: int, E: int) -> BlockResult:
    nan = np.full((K, E), np.nan)
    return BlockResult(nan.copy(), np.zeros((K, E), np.int64), nan.copy(), nan.copy(), nan.copy(), 0)


def _store(res: BlockResult, part: BlockResult, ks: np.ndarray, es: np.ndarray) -> None:
    ix = np.ix_(ks, es)
    res.returns[ix] = part.returns
    res.lengths[ix] = part.lengths
    res.discounted_returns[ix] = part.discounted_returns
    res.value_sums[ix] = part.value_sums
    res.td_sq_sums[ix] = part.td_sq_sums
    res.env_steps += part.env_steps


def point_summaries(merged: Mapping[str, np.ndarray], gamma: float, has_critic: bool) -> dict[str, tuple[bool, np.ndarray, dict[str, str]]]:
    """Per-episode arrays and per-point summaries of ``N`` points from merged ``(N, E)`` arrays.

    ``merged`` holds ``returns``, ``lengths`` (0 = not run), ``discounted_returns``, ``value_sums``
    and ``td_sq_sums``. Returns name → (per episode?, array ``(N, E)`` or ``(N,)``, attrs); episodes
    not run are NaN, and points with none are NaN (``n_episodes`` 0). The value and TD-error means
    are per visited state (sums over every step of every episode / the number of steps).
    """
    lengths = merged["lengths"].astype(np.float64)
    ran = lengths > 0
    lengths[~ran] = np.nan
    returns = np.where(ran, merged["returns"], np.nan)
    disc = np.where(ran, merged["discounted_returns"], np.nan)
    n = ran.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(returns, axis=1) / n
        var = np.nansum((returns - mean[:, None]) ** 2, axis=1) / (n - 1)
        std = np.where(n > 1, np.sqrt(var), np.nan)
        sem = std / np.sqrt(n)
        length_mean = np.nansum(lengths, axis=1) / n
        disc_mean = np.nansum(disc, axis=1) / n
        steps = np.nansum(lengths, axis=1)
        value_mean = np.nansum(merged["value_sums"], axis=1) / steps
        td_mean = np.nansum(merged["td_sq_sums"], axis=1) / steps
    missing = n == 0
    for arr in (mean, length_mean, disc_mean, value_mean, td_mean):
        arr[missing] = np.nan
    out = {
        "returns": (True, returns, {"long_name": "episode return (undiscounted, every reward)"}),
        "lengths": (True, lengths, {"long_name": "episode length (steps)"}),
        "discounted_returns": (True, disc, {"long_name": f"discounted return, γ = {gamma}"}),
        "return_mean": (False, mean, {"long_name": "mean return"}),
        "return_std": (False, std, {"long_name": "std of returns (ddof=1)"}),
        "return_sem": (False, sem, {"long_name": "standard error of the mean return"}),
        "length_mean": (False, length_mean, {"long_name": "mean episode length"}),
        "discounted_return_mean": (False, disc_mean, {"long_name": "mean discounted return"}),
        "n_episodes": (False, n.astype(np.int64), {"long_name": "episodes evaluated"}),
    }
    if has_critic:
        out["value_mean"] = (False, value_mean, {"long_name": "mean V(s_t) over visited states"})
        out["td_error_mean"] = (False, td_mean, {"long_name": "mean squared one-step TD error (rewards in the critic's units)"})
    return out
