"""Batches of complete episodes sampled at an agent's own θ, recorded step by step (methods.md §4).

The sampling is the evaluator's (:mod:`rlscape.core.evaluate`): the same batched env
(``agent.env.make_vec()``: a native numpy env for classic control, Gymnasium envs otherwise),
the same batched forward pass (:func:`~rlscape.core.fastmlp.fast_mlp_forward` or
:func:`~rlscape.core.forward.make_forward` with one point, K = 1), the same action sampling
(:func:`~rlscape.core.evaluate.select_actions`), and the same seeding: episode ``e`` resets with
``reset_seed(seed, e, stream)`` and draws its action noise from its own stream, so a batch does
not depend on how many episodes run side by side (``max_envs``).

Two sets of episodes per seed (``stream``):

- ``"evaluation"``: exactly the episodes the evaluator runs at θ with that seed;
- ``"direction"``: an independent set (tag :data:`DIRECTION_EPISODES_STREAM`), for *estimating*
  a direction (a gradient, a Hessian eigenvector) that the evaluator then measures along. Using
  the evaluation episodes for both measures the slope in-sample (methods.md §4).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import Budget, NoiseTable, block_rows, episode_seeds, noise_spec, reset_seed, select_actions
from rlscape.core.fastmlp import Forward, fast_mlp_forward
from rlscape.core.forward import make_forward
from rlscape.core.policy import CATEGORICAL, GAUSSIAN, SQUASHED, Agent
from rlscape.core.threads import single_threaded
from rlscape.core.vecenv import VecEnv

log = logging.getLogger(__name__)

DIRECTION_EPISODES_STREAM = 0xDE  # seed-sequence tag of direction-estimation episodes: [seed, 0xDE, tag, episode]
STREAMS: dict[str, int | None] = {"evaluation": None, "direction": DIRECTION_EPISODES_STREAM}


def stream_seeds(seed: int, stream: str) -> dict[str, str]:
    """How episode ``e`` of ``stream`` derives its reset seed and action noise (for run.json)."""
    return episode_seeds(seed, _tag(stream))


def _tag(stream: str) -> int | None:
    if stream not in STREAMS:
        raise RlscapeError(f"episode stream must be one of {', '.join(STREAMS)}, not {stream!r}")
    return STREAMS[stream]


@dataclass
class Trajectories:
    """A batch of N complete episodes sampled at θ, packed episode by episode (M steps in all).

    Steps of one episode are contiguous and in time order; episode ``i`` is ``episode_ids[i]``
    of its stream. ``obs`` are the network's inputs (after the checkpoint's frozen observation
    normalisation); ``actions`` are the *sampled* actions before clipping / squashing (int64
    indices for discrete spaces), the values whose log-probability the policy assigns.
    """

    obs: np.ndarray  # (M, *obs_shape) float32
    actions: np.ndarray  # (M,) int64 or (M, act_dim) float32
    rewards: np.ndarray  # (M,) float64, raw (as the evaluator sums them)
    train_rewards: np.ndarray  # (M,) float64, in training units (raw when training did not normalise rewards)
    episode: np.ndarray  # (M,) int64, index 0..N-1 into this batch
    t: np.ndarray  # (M,) int64, time step within the episode
    returns: np.ndarray  # (N,) float64, undiscounted raw R(τ)
    lengths: np.ndarray  # (N,) int64
    episode_ids: np.ndarray  # (N,) int64, episode numbers in the stream
    seed: int
    stream: str = "evaluation"
    rewards_normalized: bool = False  # whether train_rewards differ from rewards (VecNormalize norm_reward)

    @property
    def n_episodes(self) -> int:
        return int(self.returns.shape[0])

    @property
    def n_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def starts(self) -> np.ndarray:
        """(N,) index of each episode's first step."""
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def subset(self, episodes: np.ndarray | slice) -> Trajectories:
        """The batch of the chosen episodes (indices into this batch, in the given order), repacked."""
        idx = np.arange(self.n_episodes)[episodes]
        steps = np.concatenate([np.arange(s, s + n) for s, n in zip(self.starts[idx], self.lengths[idx], strict=True)]) \
            if idx.size else np.zeros(0, np.int64)
        return Trajectories(self.obs[steps], self.actions[steps], self.rewards[steps], self.train_rewards[steps],
                            np.repeat(np.arange(idx.size), self.lengths[idx]), self.t[steps], self.returns[idx],
                            self.lengths[idx], self.episode_ids[idx], self.seed, self.stream, self.rewards_normalized)


def check_stochastic(agent: Agent, what: str, update_hint: bool = True) -> None:
    """Refuse deterministic policies (DQN, TD3, DDPG, plain action adapters) for score-function methods."""
    if agent.kind not in (CATEGORICAL, GAUSSIAN, SQUASHED):
        hint = "; use `rlscape gradient --kind update` for the algorithm's own update step (a direction file for --dir1)" \
            if update_hint and agent.algo in ("dqn", "td3", "ddpg") else "; use a checkpoint of a stochastic policy (PPO, A2C, TRPO, SAC)"
        raise RlscapeError(f"{agent.algo.upper()} policies are deterministic, so {what} (∇ log π) is undefined{hint}")
    if agent.gsde:
        raise RlscapeError(f"this checkpoint explores with gSDE (use_sde=True), whose noise rlscape does not model; {what} needs a plain Gaussian policy")


def collect(agent: Agent, episodes: int, seed: int, *, stream: str = "evaluation", first_episode: int = 0,
            max_envs: int | None = None, generic: bool = False, progress: bool = False,
            rows: int | None = None) -> Trajectories:
    """Sample episodes ``first_episode … first_episode + episodes − 1`` of ``stream`` at the agent's θ.

    Up to ``max_envs`` episodes (default: the env family's, as the evaluator) run in lock-step
    with one batched forward per time step, in blocks of ``rows`` episodes as the evaluator's
    forward sees them (default :func:`~rlscape.core.evaluate.block_rows` of an ``episodes``
    budget), so the result equals the evaluator's and does not depend on ``max_envs``.
    ``generic`` forces Gymnasium envs instead of a native batched env (for tests).
    """
    check_stochastic(agent, "the policy gradient")
    if episodes < 1:
        raise RlscapeError(f"--episodes must be a positive integer, not {episodes}")
    tag = _tag(stream)
    max_envs = max(1, int(max_envs or agent.env.default_max_envs()))
    ids = np.arange(first_episode, first_episode + episodes, dtype=np.int64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=episodes, unit="ep", desc="episodes", dynamic_ncols=True, mininterval=0.5)
    venv = agent.env.make_vec(generic=generic)
    forward = fast_mlp_forward(agent.head, value=False) or make_forward(agent.head)  # acting only: no critic
    # the actor's parameters stacked as one point (K = 1), passed as the evaluator passes them, so
    # the same kernels compute the same actions
    params = {Agent.functional_name(n): torch.from_numpy(np.ascontiguousarray(v))[None] for n, v in agent.parameters("actor").items()}
    R = int(rows or block_rows(Budget(episodes=episodes)))
    parts = []
    try:
        for b0 in range(0, episodes, max_envs):
            with single_threaded():  # the evaluator's arithmetic
                o, a, r, ep, tt, lengths = _lockstep(agent, venv, forward, params, ids[b0 : b0 + max_envs], seed, tag, R)
            parts.append((o, a, r, ep + b0, tt, lengths))
            if bar is not None:
                bar.update(len(lengths))
    finally:
        venv.close()
        if bar is not None:
            bar.close()
    obs, act, rew, ep, tt, lengths = (np.concatenate(x) for x in zip(*parts, strict=True))
    returns = np.zeros(episodes)
    np.add.at(returns, ep, rew)
    norm = agent.env.reward_norm
    return Trajectories(obs, act, rew, norm(rew) if norm is not None else rew.copy(), ep, tt, returns, lengths, ids,
                        int(seed), stream, norm is not None)


def collect_steps(agent: Agent, steps: int, seed: int, *, stream: str = "evaluation", max_envs: int | None = None) -> Trajectories:
    """Episodes 0, 1, 2, … of ``stream`` until at least ``steps`` steps, finishing the episode in
    progress (the evaluator's sequential rule for a steps budget).

    Episodes are collected in rounds: 16 (or one per 2,000 steps, up to the envs stepped at once),
    then at most twice the last round, but no more than the
    episodes the mean length so far says are still needed (+ 20 %), in multiples of 16 — plain
    doubling collected up to twice the steps asked for (1M pairs of Hopper: 1.9M steps). The
    rounds change no number: an episode's forward blocks (4 rows, at multiples of 4) are the same
    whichever round holds it, and the episodes kept are the prefix the sequential rule gives.
    """
    if steps < 1:
        raise RlscapeError(f"--steps must be a positive integer, not {steps}")
    parts: list[Trajectories] = []
    # the first round: 16 episodes, or one per 2,000 steps asked for when that is more (up to the
    # envs stepped at once), so a large collection does not start in narrow, overhead-bound rounds;
    # it overshoots only where episodes last more than 2,000 steps
    width = int(max_envs or agent.env.default_max_envs())
    total, first, n = 0, 0, int(max(16, min(16 * (width // 16), 16 * math.ceil(steps / 2000 / 16))))
    while total < steps:
        parts.append(collect(agent, n, seed, stream=stream, first_episode=first, max_envs=max_envs,
                             rows=block_rows(Budget(steps=steps))))
        total += parts[-1].n_steps
        first += n
        needed = (steps - total) / max(total / first, 1.0) * 1.2  # episodes still needed, with a margin
        n = int(min(2 * n, max(16, 16 * math.ceil(needed / 16))))
    whole = concatenate(parts)
    steps_before = np.cumsum(whole.lengths) - whole.lengths
    return whole.subset(np.flatnonzero(steps_before < steps))


def concatenate(parts: list[Trajectories]) -> Trajectories:
    """One batch from batches of the same agent, seed and stream, episodes in the given order."""
    if not parts or any(p.seed != parts[0].seed or p.stream != parts[0].stream for p in parts):
        raise ValueError("concatenate needs at least one batch, all of one seed and stream")
    offsets = np.cumsum([0] + [p.n_episodes for p in parts[:-1]])

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    return Trajectories(cat("obs"), cat("actions"), cat("rewards"), cat("train_rewards"),
                        np.concatenate([p.episode + o for p, o in zip(parts, offsets, strict=True)]), cat("t"), cat("returns"),
                        cat("lengths"), cat("episode_ids"), parts[0].seed, parts[0].stream, parts[0].rewards_normalized)


@torch.inference_mode()
def _lockstep(agent: Agent, venv: VecEnv, forward: Forward, params: dict[str, torch.Tensor], ids: np.ndarray, seed: int,
              tag: int | None, rows: int) -> tuple[np.ndarray, ...]:
    """Episodes ``ids`` to completion: (obs, actions, rewards, episode 0..n−1, t) per step, episode-major, and lengths (n,).

    The forward pass sees blocks of ``rows`` episodes (finished ones keep their last observation,
    the last block is padded with zeros), exactly the shapes the evaluator uses: one row's numbers
    never depend on the others."""
    n = len(ids)
    nb = -(-n // rows)
    params = {k: v.repeat_interleave(nb, 0) for k, v in params.items()}
    obs = np.array(venv.reset([reset_seed(seed, int(e), tag) for e in ids]), order="C")
    width, kind = noise_spec(agent)
    noise = NoiseTable(seed, ids, width, kind, tag)
    space = agent.action_space
    box_dtype = space.dtype if isinstance(space, gym.spaces.Box) else None
    obs_shape = obs.shape[1:]
    x_pad = torch.zeros((nb * rows, *obs_shape))
    live = np.ones(n, bool)
    lengths = np.zeros(n, np.int64)
    rec_obs, rec_act, rec_rew, rec_ep, rec_t = [], [], [], [], []
    t = 0
    while live.any():
        idx = np.flatnonzero(live)
        x_pad[:n] = torch.from_numpy(np.ascontiguousarray(obs, np.float32))
        full = forward(params, x_pad.reshape(nb, rows, *obs_shape))
        out = {key: val.reshape(1, nb * rows, *val.shape[2:])[:, idx] for key, val in full.items()}
        x = x_pad[idx][None]
        z = noise.at(t)[idx]
        a = select_actions(agent, out, z, False)[0]
        if agent.kind == CATEGORICAL:
            sampled = a.astype(np.int64)
        else:  # the Gaussian sample before clipping / squashing: μ + σ·z, exactly as select_actions draws it
            mean = out["mean"][0]
            sampled = (mean + torch.exp(out["log_std"][0]) * torch.from_numpy(z).reshape(mean.shape)).numpy()
        rec_obs.append(x[0].numpy())
        rec_act.append(sampled)
        rec_ep.append(idx)
        rec_t.append(np.full(idx.size, t, np.int64))
        if box_dtype is not None:
            a = a.astype(box_dtype, copy=False)
        o, r, term, trunc = venv.step(idx, a)
        obs[idx] = o
        rec_rew.append(np.asarray(r, np.float64))
        lengths[idx] += 1
        live[idx[term | trunc]] = False
        t += 1
    ep = np.concatenate(rec_ep)
    tt = np.concatenate(rec_t)
    order = np.lexsort((tt, ep))  # episode-major, time-ordered
    return (np.concatenate(rec_obs)[order], np.concatenate(rec_act)[order], np.concatenate(rec_rew)[order],
            ep[order], tt[order], lengths)
