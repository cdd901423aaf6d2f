"""Policy gradients (methods.md §4): trajectory batches at θ, REINFORCE, the algorithm's own update step.

Read top to bottom: sample a batch of episodes at θ (lock-step, one batched forward per time step,
seeded like the evaluator) → differentiable per-step log-probabilities of the sampled actions
under the agent's own distribution (one batched forward over every step of every episode, with
parameters swapped in by ``torch.func.functional_call``, so the user's model is never modified)
→ the REINFORCE estimate with reward-to-go and a baseline, with a standard error from independent
batches → a named :class:`~rlscape.core.directions.Direction`.

``kind='update'`` instead takes the algorithm's own next update from the checkpoint's saved state
(:class:`rlscape.core.updater.Updater`) and returns the step Δθ it takes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from rlscape.core.directions import Direction
from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import (
    _noise_spec,
    _NoiseTable,
    episode_seeds,
    reset_seed,
    select_actions,
)
from rlscape.core.kinds import kind_attrs
from rlscape.core.params import NamedArrays, select_names
from rlscape.core.policy import CATEGORICAL, GAUSSIAN, SQUASHED, Agent
from rlscape.core.runs import is_training_run, select_checkpoints

log = logging.getLogger(__name__)

KINDS = ("reinforce", "update")
BASELINES = ("mean", "critic", "none")
_LOG_2PI = math.log(2.0 * math.pi)
_SQUASH_EPS = 1e-6  # SB3's epsilon in the tanh log-det correction
UPDATE_BATCH_STREAM = 0x0BA7C4  # seed-sequence tag of the independent updates of update_step


# -- trajectory batches ----------------------------------------------------------------------------

@dataclass
class Trajectories:
    """A batch of N complete episodes sampled at θ, packed step by step (M steps in all).

    ``actions`` are the *sampled* actions before clipping / squashing (int64 indices for discrete
    spaces), i.e. the values whose log-probability the policy assigns.
    """

    obs: np.ndarray  # (M, *obs_shape) float32, network inputs (after the env pipeline)
    actions: np.ndarray  # (M,) int64 or (M, act_dim) float32
    rewards: np.ndarray  # (M,) float64, raw
    episode: np.ndarray  # (M,) int64, index 0..N-1 into this batch
    t: np.ndarray  # (M,) int64, time step within the episode
    returns: np.ndarray  # (N,) float64, undiscounted R(τ)
    lengths: np.ndarray  # (N,) int64
    episode_ids: np.ndarray  # (N,) global episode numbers (their reset seeds and noise streams)
    seed: int

    @property
    def n_episodes(self) -> int:
        return int(self.returns.shape[0])

    def reward_to_go(self, gamma: float) -> np.ndarray:
        """``G_t = Σ_{k≥t} γ^{k−t} r_k`` per step, shape (M,)."""
        out = np.zeros_like(self.rewards)
        # steps of an episode are contiguous and in time order
        starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        for s, n in zip(starts, self.lengths, strict=True):
            acc = 0.0
            for i in range(s + n - 1, s - 1, -1):
                acc = self.rewards[i] + gamma * acc
                out[i] = acc
        return out


def check_stochastic(agent: Agent, what: str, update_hint: bool = True) -> None:
    """Refuse deterministic policies (DQN, TD3, DDPG, plain action adapters) for score-function methods."""
    if agent.kind not in (CATEGORICAL, GAUSSIAN, SQUASHED):
        hint = "; use `rlscape gradient --kind update` for the algorithm's own update step (a direction file for --dir1)" if update_hint and agent.algo in ("dqn", "td3", "ddpg") else \
            "; use a checkpoint of a stochastic policy (PPO, A2C, TRPO, SAC)"
        raise RlscapeError(f"{agent.algo.upper()} policies are deterministic, so {what} (∇ log π) is undefined{hint}")
    if agent.gsde:
        raise RlscapeError(f"this checkpoint explores with gSDE (use_sde=True), whose noise rlscape does not model; {what} needs a plain Gaussian policy")


def collect(agent: Agent, episodes: int, seed: int, *, first_episode: int = 0, max_envs: int | None = None,
            progress: bool = False) -> Trajectories:
    """Sample ``episodes`` complete episodes at the agent's own θ, in lock-step.

    Episode ``e`` (global number ``first_episode + e``) resets with the evaluator's
    :func:`~rlscape.core.evaluate.reset_seed` and draws its action noise from the evaluator's
    stream, so a batch is exactly what the evaluator would sample at θ with the same seed.
    """
    check_stochastic(agent, "the policy gradient")
    if episodes < 1:
        raise RlscapeError(f"--episodes must be a positive integer, not {episodes}")
    max_envs = max(1, int(max_envs or agent.env.default_max_envs()))
    ids_all = np.arange(first_episode, first_episode + episodes)
    parts: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=episodes, unit="ep", desc="episodes", dynamic_ncols=True, mininterval=0.5)
    envs = [agent.env.make() for _ in range(min(max_envs, episodes))]
    try:
        for b0 in range(0, episodes, max_envs):
            ids = ids_all[b0 : b0 + max_envs]
            parts.append(_lockstep(agent, envs[: len(ids)], ids, seed))
            if bar is not None:
                bar.update(len(ids))
    finally:
        for env in envs:
            env.close()
        if bar is not None:
            bar.close()
    # pack: episode-major, time-ordered
    obs, act, rew, ep, tt = [], [], [], [], []
    lengths = np.concatenate([p["lengths"] for p in parts])
    returns = np.concatenate([p["returns"] for p in parts])
    offset = 0
    for p in parts:
        n = len(p["lengths"])
        for j in range(n):
            L = int(p["lengths"][j])
            obs.append(p["obs"][:L, j])
            act.append(p["actions"][:L, j])
            rew.append(p["rewards"][:L, j])
            ep.append(np.full(L, offset + j, np.int64))
            tt.append(np.arange(L, dtype=np.int64))
        offset += n
    return Trajectories(np.concatenate(obs).astype(np.float32), np.concatenate(act), np.concatenate(rew).astype(np.float64),
                        np.concatenate(ep), np.concatenate(tt), returns, lengths, ids_all, int(seed))


@torch.inference_mode()
def _lockstep(agent: Agent, envs: list[Any], ids: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    n = len(ids)
    obs = np.stack([env.reset(seed=reset_seed(seed, int(e)))[0] for env, e in zip(envs, ids, strict=True)])
    width, noise_kind = _noise_spec(agent)
    noise = _NoiseTable(seed, ids, width, noise_kind)
    live = np.ones(n, bool)
    lengths = np.zeros(n, np.int64)
    returns = np.zeros(n)
    obs_l, act_l, rew_l = [], [], []
    t = 0
    while live.any():
        x = torch.from_numpy(np.asarray(obs, np.float32))
        out = agent.head(x)
        z = noise.at(t)
        env_actions = select_actions(agent, {k: v[None] for k, v in out.items()}, z, False)[0]
        if agent.kind == CATEGORICAL:
            sampled = env_actions.astype(np.int64)
        else:  # the Gaussian sample before clipping/squashing: μ + σ·z, exactly as select_actions draws it
            mean = out["mean"]
            sampled = (mean + torch.exp(out["log_std"]) * torch.from_numpy(z).reshape(mean.shape)).numpy()
        rewards = np.zeros(n)
        obs_l.append(np.asarray(obs, np.float32).copy())
        act_l.append(sampled)
        for i in np.flatnonzero(live):
            o, r, term, trunc, _ = envs[i].step(env_actions[i])
            obs[i] = o
            rewards[i] = float(r)
            returns[i] += float(r)
            lengths[i] += 1
            if term or trunc:
                live[i] = False
        rew_l.append(rewards)
        t += 1
    return {"obs": np.stack(obs_l), "actions": np.stack(act_l), "rewards": np.stack(rew_l), "lengths": lengths, "returns": returns}


# -- differentiable log-probabilities --------------------------------------------------------------

def log_prob(agent: Agent, out: Mapping[str, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
    """``log π(a|s)`` per row from the head outputs, with the agent's own distribution.

    Categorical: ``log_softmax(logits)[a]``; Gaussian: diagonal normal of the unclipped sample;
    squashed (SAC): the normal density of the pre-tanh sample ``u`` minus SB3's
    ``Σ log(1 − tanh(u)² + 1e−6)`` correction (constant in θ for a stored ``u``).
    """
    if agent.kind == CATEGORICAL:
        logits = out["logits"]
        return torch.log_softmax(logits, -1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    mean, log_std = out["mean"], out["log_std"]
    z = (actions - mean) * torch.exp(-log_std)
    lp = (-0.5 * z * z - log_std - 0.5 * _LOG_2PI).sum(-1)
    if agent.kind == SQUASHED:
        lp = lp - torch.log(1 - torch.tanh(actions) ** 2 + _SQUASH_EPS).sum(-1)
    return lp


@contextlib.contextmanager
def torch_threads(n_parameters: int) -> Iterator[None]:
    """One torch thread for small policies (MLPs: thread hand-offs cost more than they save, and
    oversubscribe a shared machine), torch's default for large ones; restored afterwards."""
    before = torch.get_num_threads()
    if n_parameters < 200_000:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _working_dtype(agent: Agent) -> torch.dtype:
    """float64 where the head computes in float64 when given it (plain torch modules); float32 for
    SB3 policies, whose feature extractors cast observations to float32."""
    head = agent.head
    shape = getattr(agent.observation_space, "shape", None) or (1,)
    params = {k: v.detach().double() for k, v in head.named_parameters()}
    try:
        with torch.no_grad():
            functional_call(head, params, (torch.zeros((1, *shape), dtype=torch.float64),))
    except RuntimeError:
        return torch.float32
    return torch.float64


class FlatPolicy:
    """The selected parameters of an agent as one flat vector, and batched functions of it.

    ``theta`` (P,) is a copy; every function evaluates the head with ``functional_call``, so the
    agent's module is never modified.
    """

    def __init__(self, agent: Agent, which: str = "actor", dtype: torch.dtype | None = None) -> None:
        self.agent, self.which = agent, which
        self.dtype = dtype = dtype or _working_dtype(agent)
        head = agent.head
        all_names = agent.parameter_names()
        self.names = select_names(all_names, which)
        if which == "critic":
            raise RlscapeError("policy gradients and the policy Hessian move the actor; use --params actor or all")
        table = dict(head.named_parameters())
        self.shapes = [tuple(table[Agent.functional_name(n)].shape) for n in self.names]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.fixed = {k: v.detach().to(dtype) if v.is_floating_point() else v.detach()
                      for k, v in list(head.named_parameters()) + list(head.named_buffers())
                      if k not in {Agent.functional_name(n) for n in self.names}}
        self.theta = torch.cat([table[Agent.functional_name(n)].detach().reshape(-1).to(dtype) for n in self.names])

    @property
    def size(self) -> int:
        return int(self.theta.numel())

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out = dict(self.fixed)
        for n, s, piece in zip(self.names, self.shapes, torch.split(flat, self.sizes), strict=True):
            out[Agent.functional_name(n)] = piece.reshape(s)
        return out

    def to_named(self, flat: np.ndarray | torch.Tensor) -> NamedArrays:
        v = flat.detach().cpu().numpy() if isinstance(flat, torch.Tensor) else np.asarray(flat)
        pieces = np.split(v.astype(np.float32), np.cumsum(self.sizes)[:-1])
        return {n: p.reshape(s) for n, s, p in zip(self.names, self.shapes, pieces, strict=True)}

    def from_named(self, d: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(d[n], np.float64).reshape(-1) for n in self.names])

    def forward(self, flat: torch.Tensor, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return functional_call(self.agent.head, self.unflatten(flat), (obs,))

    def step_log_probs(self, flat: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``log π_θ(a_t|s_t)`` for every packed step, (M,), in one batched forward."""
        return log_prob(self.agent, self.forward(flat, obs), actions)


def batch_tensors(traj: Trajectories, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(obs, actions, episode index) of a batch as tensors."""
    obs = torch.from_numpy(traj.obs).to(dtype)
    actions = torch.from_numpy(traj.actions)
    actions = actions.long() if actions.dtype in (torch.int64, torch.int32) else actions.to(dtype)
    return obs, actions, torch.from_numpy(traj.episode)


# -- REINFORCE -------------------------------------------------------------------------------------

@dataclass
class GradientEstimate:
    """A gradient (or update-step) estimate with its uncertainty.

    ``se`` is the per-coordinate standard error from ``n_batches`` independent batches;
    ``stderr = sqrt(Σ se²)`` is the standard error of the whole vector (the expected distance
    to the exact gradient, to first order).
    """

    values: NamedArrays
    se: NamedArrays
    n_batches: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def norm(self) -> float:
        return float(math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in self.values.values())))

    @property
    def stderr(self) -> float:
        return float(math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in self.se.values())))

    def direction(self) -> Direction:
        return Direction(dict(self.values), dict(self.meta, grad_norm=self.norm, stderr=self.stderr, scale="raw"))


def reinforce(agent: Agent, traj: Trajectories, *, baseline: str = "mean", gamma: float = 1.0, which: str = "actor",
              n_batches: int = 10) -> GradientEstimate:
    """REINFORCE with reward-to-go: ``g = (1/N) Σ_τ Σ_t ∇ log π(a_t|s_t)·(G_t − b(s_t))``.

    ``baseline``: ``mean`` (the mean return of the batch, constant), ``critic`` (the agent's V(s_t),
    trained with the agent's own γ), or ``none``. The N episodes are split into ``n_batches``
    independent batches (each with its own mean baseline); the estimate is the mean of the batch
    estimates and its standard error their standard deviation / √n_batches.
    """
    check_stochastic(agent, "the policy gradient")
    if baseline not in BASELINES:
        raise RlscapeError(f"--baseline must be one of {', '.join(BASELINES)}, not {baseline!r}")
    if baseline == "critic" and not agent.has_value:
        raise RlscapeError(f"{agent.algo.upper()} agents have no state-value critic; use --baseline mean")
    if not 0.0 <= gamma <= 1.0:
        raise RlscapeError(f"--gamma must be in [0, 1], not {gamma}")
    N = traj.n_episodes
    B = max(1, min(int(n_batches), N // 2)) if N >= 2 else 1
    fp = FlatPolicy(agent, which)
    obs, actions, ep = batch_tensors(traj, fp.dtype)
    G = torch.from_numpy(traj.reward_to_go(gamma)).to(fp.dtype)
    theta = fp.theta.clone().requires_grad_(True)
    out = fp.forward(theta, obs)
    lp = log_prob(agent, out, actions)
    groups = np.array_split(np.arange(N), B)
    group_of = np.empty(N, np.int64)
    for i, g in enumerate(groups):
        group_of[g] = i
    step_group = torch.from_numpy(group_of[traj.episode])
    if baseline == "critic":
        b = out["value"].detach()
    elif baseline == "mean":
        means = torch.tensor([float(traj.returns[g].mean()) for g in groups], dtype=fp.dtype)
        b = means[step_group]
    else:
        b = torch.zeros_like(G)
    w = (G - b).detach()
    sizes = torch.tensor([len(g) for g in groups], dtype=fp.dtype)
    grads = []
    for i in range(B):
        sel = (step_group == i).to(fp.dtype)
        (gi,) = torch.autograd.grad((lp * w * sel).sum() / sizes[i], theta, retain_graph=i < B - 1)
        grads.append(gi.detach())
    stack = torch.stack(grads).double()
    mean = stack.mean(0)
    se = stack.std(0, unbiased=True) / math.sqrt(B) if B > 1 else torch.full_like(mean, float("nan"))
    meta = {"kind": "gradient", "estimator": "reinforce", "baseline": baseline, "gamma": gamma, "episodes": N,
            "steps": int(traj.lengths.sum()), "n_batches": B, "seed": traj.seed, "params": which,
            "return_mean": float(traj.returns.mean()), "label": f"policy gradient (REINFORCE, {N} episodes)"}
    return GradientEstimate(fp.to_named(mean), fp.to_named(se), B, meta)


def estimate_gradient(agent: Agent, *, episodes: int = 100, seed: int = 0, kind: str = "reinforce", baseline: str = "mean",
                      gamma: float = 1.0, which: str = "actor", n_batches: int = 10, checkpoint: str | Path | None = None,
                      progress: bool = False) -> GradientEstimate:
    """The policy-gradient estimate at the agent's θ (``reinforce``) or the algorithm's update step (``update``).

    ``update`` needs ``checkpoint`` (the SB3 model with its optimizer state) and ignores
    ``baseline``/``gamma``: it runs the algorithm's own ``train()`` on a copy of the model.
    """
    if kind not in KINDS:
        raise RlscapeError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if episodes < 1:
        raise RlscapeError(f"--episodes must be a positive integer, not {episodes}")
    if kind == "update":
        if checkpoint is None:
            raise RlscapeError("--kind update needs an SB3 checkpoint (its optimizer state); give a checkpoint folder or .zip")
        return update_step(agent, checkpoint, seed=seed, which=which, n_batches=n_batches)
    traj = collect(agent, episodes, seed, progress=progress)
    return reinforce(agent, traj, baseline=baseline, gamma=gamma, which=which, n_batches=n_batches)


# -- the algorithm's own update step ---------------------------------------------------------------

def update_seed(seed: int, batch: int) -> int:
    """The seed of the ``batch``-th independent update of ``update_step`` (its rollout, minibatches, noise)."""
    return int(np.random.SeedSequence([int(seed), UPDATE_BATCH_STREAM, int(batch)]).generate_state(1)[0])


def update_step(agent: Agent, checkpoint: str | Path, *, seed: int = 0, which: str = "actor", n_batches: int = 10) -> GradientEstimate:
    """Δθ of the algorithm's own next update from the saved state (methods.md §4), via :class:`~rlscape.core.updater.Updater`.

    PPO/A2C/TRPO: ``train()`` on a fresh rollout of the training size (``n_steps × n_envs``) in
    the checkpoint's training pipeline (VecNormalize frozen, rewards normalised as trained).
    SAC/TD3/DDPG/DQN: one gradient step of ``train()`` on a replay minibatch from the checkpoint's
    ``replay_buffer.pkl``. Each of ``n_batches`` updates starts from the saved state (optimizer
    included) with its own seed (:func:`update_seed`); the step saved is their mean, its standard
    error their standard deviation / √n_batches.
    """
    from rlscape.core.updater import Updater

    B = max(2, int(n_batches))
    with Updater.from_checkpoint(checkpoint, which=which, agent=agent) as up:
        results = [up.step(update_seed(seed, b)) for b in range(B)]
        info = dict(up.info)
    names = list(results[0].delta)
    stack = np.stack([np.concatenate([r.delta[n].astype(np.float64).reshape(-1) for n in names]) for r in results])
    shapes = {n: results[0].delta[n].shape for n in names}
    sizes = [int(np.prod(shapes[n])) for n in names]

    def named(v: np.ndarray) -> NamedArrays:
        return {n: p.reshape(shapes[n]).astype(np.float32) for n, p in zip(names, np.split(v, np.cumsum(sizes)[:-1]), strict=True)}

    meta = {"kind": "update", "estimator": f"{agent.algo} train()", "n_batches": B, "seed": seed, "params": which,
            "optimizer": info["optimizer"], "norm_reward": info["norm_reward"], "rollout_steps": results[0].rollout_steps,
            "gradient_steps": results[0].gradient_steps, "label": f"{agent.algo.upper()} update step Δθ (mean of {B})"}
    return GradientEstimate(named(stack.mean(0)), named(stack.std(0, ddof=1) / math.sqrt(B)), B, meta)


# -- checkpoints and training runs ------------------------------------------------------------------
# A minimal private copy of rlscape.core.runs (same semantics) until that module is merged.

def targets(source: str | Path, checkpoints: str | None = None) -> list[tuple[int | None, Path]]:
    """``[(None, checkpoint)]`` for one checkpoint, or ``[(step, folder), ...]`` for a training run."""
    path = Path(source)
    if path.is_dir() and is_training_run(path):
        found = select_checkpoints(path, checkpoints)
        if not found:
            raise RlscapeError(f"{path} is a training run without readable checkpoints (checkpoints/<step>/model.zip)")
        return [(s, p) for s, p in found]
    if checkpoints is not None:
        raise RlscapeError("--checkpoints applies to a training run directory (with checkpoints/); drop it for a single checkpoint")
    return [(None, path)]


def train_curve(folder: Path) -> tuple[float, int]:
    """(mean of the recent training returns, episodes so far) from a run checkpoint's checkpoint.json."""
    f = folder / "checkpoint.json"
    if not f.is_file():
        return float("nan"), 0
    try:
        info = json.loads(f.read_text())
    except json.JSONDecodeError:
        return float("nan"), 0
    recent = info.get("recent_returns") or []
    return (float(np.mean(recent)) if recent else float("nan")), int(info.get("episodes", 0))


def step_dir(out: Path, step: int | None) -> Path:
    """Where one checkpoint's outputs go: ``OUT`` or ``OUT/steps/<10-digit step>``."""
    return out if step is None else out / "steps" / f"{step:010d}"


def prepare_run(out: Path, spec: dict[str, Any], overwrite: bool, summary_name: str) -> Any:
    """``RunDir.prepare`` plus: per-checkpoint outputs of another spec (or on ``--overwrite``) are removed,
    so a resumed run reuses only what this very spec computed."""
    import shutil

    from rlscape.core.store import RunDir

    old = RunDir(out).read_spec() if Path(out).is_dir() else None
    run = RunDir.prepare(out, spec, overwrite)
    if overwrite or old != spec:
        if (out / "steps").is_dir():
            shutil.rmtree(out / "steps")
        (out / summary_name).unlink(missing_ok=True)
    return run


def write_json(path: Path, fields: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(fields), indent=2, default=float))
    tmp.replace(path)


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# -- the analysis as the CLI runs it ---------------------------------------------------------------

def run_gradient(source: str | Path, out: str | Path, *, episodes: int | None = 100, steps: int | None = None, kind: str = "reinforce",
                 baseline: str = "mean", gamma: float = 1.0, which: str = "actor", seed: int = 0, n_batches: int = 10,
                 checkpoints: str | None = None, env_id: str | None = None, algo: str | None = None,
                 overwrite: bool = False, progress: bool = True) -> Any:
    """Gradient (or update-step) directions of a checkpoint or of every checkpoint of a training run.

    Writes ``directions/gradient.npz`` (or ``steps/<step>/gradient.npz`` per checkpoint of a run)
    and ``results.zarr`` with ``grad_norm``, ``grad_stderr``, ``return_mean`` (dim ``step`` for a run).
    ``steps`` (instead of ``episodes``) collects episodes until at least that many steps.
    """
    import xarray as xr

    from rlscape.core.policy import load_checkpoint
    from rlscape.core.store import package_versions

    if kind not in KINDS:
        raise RlscapeError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if baseline not in BASELINES:
        raise RlscapeError(f"--baseline must be one of {', '.join(BASELINES)}, not {baseline!r}")
    if episodes is not None and steps is not None:
        raise RlscapeError("give --episodes or --steps, not both")
    if steps is not None and steps < 1:
        raise RlscapeError(f"--steps must be a positive integer, not {steps}")
    if episodes is not None and episodes < 1:
        raise RlscapeError(f"--episodes must be a positive integer, not {episodes}")
    if seed < 0:
        raise RlscapeError(f"--seed must be ≥ 0, not {seed}")
    todo = targets(source, checkpoints)
    agents = {}
    for step, path in todo[:1]:  # check the first before touching --out
        agents[step] = load_checkpoint(path, env_id, algo=algo)
        if kind == "reinforce":
            check_stochastic(agents[step], "the policy gradient")
        FlatPolicy(agents[step], which)
    spec = {"analysis": "gradient", "source": str(Path(source).resolve()), "episodes": episodes, "steps": steps, "kind": kind,
            "baseline": baseline, "gamma": gamma, "params": which, "seed": seed, "n_batches": n_batches,
            "checkpoints": [s for s, _ in todo] if todo[0][0] is not None else None, "env_id": env_id, "algo": algo}
    out = Path(out)
    run = prepare_run(out, spec, overwrite, "gradient.json")
    run.update_run(status="running", versions=package_versions(), started=stamp(),
                   seeds={**episode_seeds(seed),
                          "batches": "episodes split in order into n_batches contiguous batches"})
    rows = []
    for step, path in todo:
        here = step_dir(out, step)
        summary = here / "gradient.json"
        if summary.is_file() and (here / ("gradient.npz" if step is not None else "directions/gradient.npz")).is_file():
            rows.append(json.loads(summary.read_text()))
            continue
        agent = agents.get(step) or load_checkpoint(path, env_id, algo=algo)
        with torch_threads(sum(v.size for v in agent.parameters(which).values())):
            est = _estimate(agent, path, kind, episodes, steps, seed, which, n_batches, baseline, gamma, progress)
        d = est.direction()
        d.meta.update(checkpoint=str(Path(path).resolve()), step=step)
        d.save(here / "gradient.npz" if step is not None else out / "directions" / "gradient.npz")
        np.savez(here / ("gradient_se.npz" if step is not None else "directions/gradient_se.npz"), **est.se)
        tr, tr_eps = train_curve(Path(path))
        row = {"step": -1 if step is None else step, "grad_norm": est.norm, "grad_stderr": est.stderr,
               "return_mean": float(est.meta.get("return_mean", float("nan"))), "episodes": int(est.meta.get("episodes", 0)),
               "env_steps": int(est.meta.get("steps", 0)), "n_batches": est.n_batches, "train_return": tr, "train_episodes": tr_eps}
        write_json(summary, row)
        rows.append(row)
        log.info("%s: ‖g‖ = %.4g ± %.2g (stderr)", f"step {step}" if step is not None else Path(path).name, est.norm, est.stderr)
    ds = xr.Dataset({k: ("step", np.array([r[k] for r in rows])) for k in rows[0] if k != "step"},
                    coords={"step": np.array([r["step"] for r in rows], np.int64)})
    ds["grad_norm"].attrs["long_name"] = "‖g‖ (mean over episodes)"
    ds["grad_stderr"].attrs["long_name"] = "standard error of g: sqrt(Σ se_i²), se from independent batches"
    if todo[0][0] is None:
        ds = ds.isel(step=0, drop=True)
    ds.attrs.update(**kind_attrs("gradient"), estimator=kind, baseline=baseline, gamma=gamma, params=which, seed=seed,
                    source=str(Path(source).resolve()), over_training=int(todo[0][0] is not None))
    run.write_dataset(ds)
    run.update_run(status="complete", finished=stamp())
    return ds


def _estimate(agent: Agent, path: Path, kind: str, episodes: int | None, steps: int | None, seed: int, which: str,
              n_batches: int, baseline: str, gamma: float, progress: bool) -> GradientEstimate:
    if kind == "update":
        return update_step(agent, path, seed=seed, which=which, n_batches=n_batches)
    n_ep = episodes if episodes is not None else _episodes_for_steps(agent, int(steps or 1), seed)
    traj = collect(agent, n_ep, seed, progress=progress)
    return reinforce(agent, traj, baseline=baseline, gamma=gamma, which=which, n_batches=n_batches)


def _episodes_for_steps(agent: Agent, steps: int, seed: int) -> int:
    """The number of episodes a ``steps`` budget takes (episodes until ≥ steps, finishing the last)."""
    n, total, e = 0, 0, 0
    probe = 16
    while total < steps:
        tr = collect(agent, probe, seed, first_episode=e)
        for L in tr.lengths:
            if total >= steps:
                break
            total += int(L)
            n += 1
        e += probe
    return n
