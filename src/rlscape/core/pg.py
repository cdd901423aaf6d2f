"""Score-function machinery on a fixed batch of trajectories (methods.md §4–§5).

Read top to bottom: the selected parameters as one flat vector P (:class:`FlatPolicy`) and
differentiable per-step ``log π(a_t|s_t)`` under the agent's own distribution (:func:`log_prob`,
one batched forward over every step of every episode, parameters swapped in by
``torch.func.functional_call`` so the user's model is never modified) → reward-to-go and the
leave-one-out baseline → the REINFORCE estimate (:func:`reinforce`) → the policy-Hessian operator
(:class:`PolicyHessian`, a :class:`~rlscape.core.linalg.LinearOp` for :mod:`rlscape.core.linalg`).

The constant baseline of an episode never includes that episode: ``b_i = (Σ_{j≠i} R_j)/(N−1)``
(leave-one-out). The batch's own mean would scale both estimates by (1 − 1/N) in expectation.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, grad, jvp, vjp

from rlscape.core.directions import Direction
from rlscape.core.errors import RlscapeError
from rlscape.core.params import NamedArrays, select_names
from rlscape.core.policy import CATEGORICAL, SQUASHED, Agent
from rlscape.core.trajectories import Trajectories, check_stochastic, stream_seeds

BASELINES = ("mean", "critic", "none")
_LOG_2PI = math.log(2.0 * math.pi)
_SQUASH_EPS = 1e-6  # SB3's epsilon in the tanh log-det correction


# -- the policy as a flat vector -------------------------------------------------------------------

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


def log_prob(agent: Agent, out: Mapping[str, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
    """``log π(a|s)`` per row, shape (M,), from head outputs with leading dim M, with the agent's own distribution.

    ``actions``: (M,) int64 (categorical) or (M, act_dim) sampled actions before clipping/squashing.
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

    ``theta`` (P,) is a copy in ``dtype``; every function evaluates the head with
    ``functional_call``, so the agent's module is never modified. Flat vectors are the
    concatenation of the selected parameters in ``names`` order, each flattened C-style.
    """

    def __init__(self, agent: Agent, which: str = "actor", dtype: torch.dtype | None = None) -> None:
        if which == "critic":
            raise RlscapeError("policy gradients and the policy Hessian move the actor; use --params actor or all")
        self.agent, self.which = agent, which
        self.dtype = dtype = dtype or _working_dtype(agent)
        head = agent.head
        self.names = select_names(agent.parameter_names(), which)
        table = dict(head.named_parameters())
        moved = {Agent.functional_name(n) for n in self.names}
        self.shapes = [tuple(table[Agent.functional_name(n)].shape) for n in self.names]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.fixed = {k: v.detach().to(dtype) if v.is_floating_point() else v.detach()
                      for k, v in list(head.named_parameters()) + list(head.named_buffers()) if k not in moved}
        self.theta = torch.cat([table[Agent.functional_name(n)].detach().reshape(-1).to(dtype) for n in self.names])

    @property
    def size(self) -> int:
        """P, the number of selected parameters."""
        return int(self.theta.numel())

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat (P,) vector → the head's full functional parameter dict (fixed ones included)."""
        out = dict(self.fixed)
        for n, s, piece in zip(self.names, self.shapes, torch.split(flat, self.sizes), strict=True):
            out[Agent.functional_name(n)] = piece.reshape(s)
        return out

    def to_named(self, flat: np.ndarray | torch.Tensor) -> NamedArrays:
        """A flat (P,) vector → public name → float32 array of the parameter's shape."""
        v = flat.detach().cpu().numpy() if isinstance(flat, torch.Tensor) else np.asarray(flat)
        pieces = np.split(v.astype(np.float32), np.cumsum(self.sizes)[:-1])
        return {n: p.reshape(s) for n, s, p in zip(self.names, self.shapes, pieces, strict=True)}

    def from_named(self, d: Mapping[str, np.ndarray]) -> np.ndarray:
        """Public name → array (the selected names) → a flat (P,) float64 vector."""
        return np.concatenate([np.asarray(d[n], np.float64).reshape(-1) for n in self.names])

    def forward(self, flat: torch.Tensor, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The head's outputs at parameters ``flat`` (P,) on observations (M, *obs_shape)."""
        return functional_call(self.agent.head, self.unflatten(flat), (obs,))

    def step_log_probs(self, flat: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``log π_θ(a_t|s_t)`` for every packed step, (M,), in one batched forward."""
        return log_prob(self.agent, self.forward(flat, obs), actions)


def batch_tensors(traj: Trajectories, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(obs (M, *obs_shape) in ``dtype``, actions (M,) int64 or (M, act_dim) in ``dtype``, episode index (M,) int64)."""
    obs = torch.from_numpy(traj.obs).to(dtype)
    actions = torch.from_numpy(traj.actions)
    actions = actions.long() if actions.dtype in (torch.int64, torch.int32) else actions.to(dtype)
    return obs, actions, torch.from_numpy(traj.episode)


# -- returns and baselines -------------------------------------------------------------------------

def reward_to_go(rewards: np.ndarray, lengths: np.ndarray, gamma: float) -> np.ndarray:
    """``G_t = Σ_{k≥t} γ^{k−t} r_k`` per step, (M,) float64.

    ``rewards`` (M,) packed episode by episode (contiguous, time-ordered), ``lengths`` (N,) with
    ``Σ lengths = M``. Vectorised over episodes: one pass backwards over time.
    """
    rewards = np.asarray(rewards, np.float64)
    lengths = np.asarray(lengths, np.int64)
    if int(lengths.sum()) != rewards.shape[0]:
        raise ValueError(f"lengths sum to {int(lengths.sum())} but there are {rewards.shape[0]} rewards")
    if rewards.size == 0:
        return rewards.copy()
    ep = np.repeat(np.arange(len(lengths)), lengths)
    t = np.arange(rewards.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    padded = np.zeros((len(lengths), int(lengths.max())))
    padded[ep, t] = rewards
    acc = np.zeros(len(lengths))
    for j in range(padded.shape[1] - 1, -1, -1):
        acc = padded[:, j] + gamma * acc
        padded[:, j] = acc
    return padded[ep, t]


def leave_one_out(returns: np.ndarray) -> np.ndarray:
    """Baselines ``b_i = (Σ_{j≠i} R_j)/(N−1)``, (N,) from returns (N,); zeros when N = 1.

    Independent of episode i, so ``E[∇log P(τ_i)·b_i] = 0``: the estimates stay unbiased
    (the batch's own mean would scale them by (1 − 1/N)).
    """
    r = np.asarray(returns, np.float64)
    if r.size < 2:
        return np.zeros_like(r)
    return (r.sum() - r) / (r.size - 1)


# -- REINFORCE -------------------------------------------------------------------------------------

@dataclass
class GradientEstimate:
    """A gradient (or update-step) estimate with its uncertainty.

    ``values`` and ``se`` map public parameter names to float32 arrays of the parameters' shapes.
    ``se`` is the per-coordinate standard error from ``n_batches`` independent batches;
    ``stderr = sqrt(Σ se²)`` is the standard error of the whole vector (the expected distance
    to the exact gradient, to first order). ``batches`` (n_batches, P) float64, where kept, are
    the independent batch estimates in :class:`FlatPolicy` order (``values`` is their mean), for
    the standard error of any linear functional of the estimate.
    """

    values: NamedArrays
    se: NamedArrays
    n_batches: int
    meta: dict[str, Any] = field(default_factory=dict)
    batches: np.ndarray | None = None

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
    """REINFORCE with reward-to-go: ``g = (1/N) Σ_τ Σ_t ∇ log π(a_t|s_t)·(G_t − b)``, unbiased.

    Rewards are raw (J is the raw return). ``baseline``: ``mean`` (the leave-one-out mean return
    of the other episodes of the same batch, constant in t), ``critic`` (the agent's V(s_t),
    trained with the agent's own γ), or ``none``. The N episodes are split in order into
    ``n_batches`` contiguous independent batches (each with its own baselines); the estimate is
    the mean of the batch estimates and its standard error their standard deviation / √n_batches.
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
    obs, actions, _ = batch_tensors(traj, fp.dtype)
    G = torch.from_numpy(reward_to_go(traj.rewards, traj.lengths, gamma)).to(fp.dtype)
    grads = []
    for g in np.array_split(np.arange(N), B):  # contiguous: batch g's steps are one slice
        lo, hi = int(traj.starts[g[0]]), int(traj.starts[g[-1]] + traj.lengths[g[-1]])
        theta = fp.theta.clone().requires_grad_(True)
        out = fp.forward(theta, obs[lo:hi])
        lp = log_prob(agent, out, actions[lo:hi])
        if baseline == "critic":
            b = out["value"].detach()
        elif baseline == "mean":
            b = torch.from_numpy(np.repeat(leave_one_out(traj.returns[g]), traj.lengths[g])).to(fp.dtype)
        else:
            b = torch.zeros(hi - lo, dtype=fp.dtype)
        (gi,) = torch.autograd.grad((lp * (G[lo:hi] - b).detach()).sum() / len(g), theta)
        grads.append(gi.detach())
    stack = torch.stack(grads).double()
    mean = stack.mean(0)
    se = stack.std(0, unbiased=True) / math.sqrt(B) if B > 1 else torch.full_like(mean, float("nan"))
    meta = {"kind": "gradient", "estimator": "reinforce", "baseline": baseline, "gamma": gamma, "episodes": N,
            "steps": int(traj.lengths.sum()), "n_batches": B, "seed": traj.seed, "episode_stream": traj.stream,
            "episode_seeds": stream_seeds(traj.seed, traj.stream), "params": which,
            "return_mean": float(traj.returns.mean()), "label": f"policy gradient (REINFORCE, {N} episodes)"}
    if baseline == "mean":
        meta["baseline_rule"] = "leave-one-out mean return of the other episodes of the batch"
    return GradientEstimate(fp.to_named(mean), fp.to_named(se), B, meta, stack.numpy())


# -- the policy Hessian ----------------------------------------------------------------------------

JACOBIAN_LIMIT = 50_000_000  # N·P above which the per-episode score matrix is not kept in memory
_CHUNK_ELEMENTS = 2_000_000  # vmap chunk × packed steps
HESSIAN_MODES = ("autograd", "functorch")


def _per_episode_scores(log_p: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, n: int, steps: int) -> torch.Tensor:
    """J (N, P): row τ = g_τ = ∇_θ log P(τ). Reverse mode (one vjp per episode) when N ≤ P, forward
    mode (one jvp per parameter) otherwise; vmapped in chunks so memory stays ~chunk × steps."""
    P = theta.numel()
    chunk = max(1, min(max(n, P), _CHUNK_ELEMENTS // max(steps, 1)))
    if n <= P:
        _, pullback = vjp(log_p, theta)  # type: ignore[misc]  # torch.func stubs: a 2- or 3-tuple (has_aux) without overloads
        rows = [torch.vmap(pullback)(torch.eye(n, dtype=theta.dtype)[i : i + chunk])[0] for i in range(0, n, chunk)]
        return torch.cat(rows)
    cols = [torch.vmap(lambda t: jvp(log_p, (theta,), (t,))[1])(torch.eye(P, dtype=theta.dtype)[i : i + chunk]) for i in range(0, P, chunk)]
    return torch.cat(cols).T.contiguous()


class PolicyHessian:
    """The policy-Hessian operator on one fixed batch of N trajectories (methods.md §5), a :class:`~rlscape.core.linalg.LinearOp`.

        H·v = (1/N) Σ_τ [ g_τ (g_τ·v) A_τ + A_τ ∇_θ(g_τ·v) ],  g_τ = Σ_t ∇ log π(a_t|s_t),  A_τ = R(τ) − b_τ

    with ``b_τ`` the leave-one-out mean return of the other episodes of τ's batch (``baseline='mean'``;
    the N episodes are split in order into ``n_batches`` contiguous batches, default one) or 0
    (``'none'``). Since
    ``E[g gᵀ + ∇² log P] = 0`` and ``b_τ`` is independent of τ, the estimate is unbiased. The first
    term is ``Jᵀ diag(A) J v`` with J the per-episode score Jacobian; the second the Hessian-vector
    product of ``Σ_τ A_τ log P_τ``. ``matvec(v)`` takes and returns float64 vectors (P,) in
    :class:`FlatPolicy` order; the same batch is used for every product, so the operator is one
    symmetric matrix (up to rounding). ``mode``: ``autograd`` keeps J (N, P) and the graph of
    ``Σ A_τ g_τ`` (fast products); ``functorch`` recomputes forward-over-reverse per product
    (memory O(P)); None picks ``autograd`` while N·P ≤ :data:`JACOBIAN_LIMIT`.
    """

    def __init__(self, agent: Agent, traj: Trajectories, *, which: str = "actor", baseline: str = "mean",
                 dtype: torch.dtype | None = None, mode: str | None = None, n_batches: int = 1) -> None:
        check_stochastic(agent, "the policy Hessian", update_hint=False)
        if baseline not in ("mean", "none"):
            raise RlscapeError(f"the policy Hessian takes a constant baseline: --baseline mean or none, not {baseline!r}")
        if mode is not None and mode not in HESSIAN_MODES:
            raise RlscapeError(f"mode must be one of {', '.join(HESSIAN_MODES)}, not {mode!r}")
        self.flat = FlatPolicy(agent, which, dtype)
        self.traj, self.baseline = traj, baseline
        self.size = self.flat.size
        self.n_products = 0
        self.seconds = 0.0
        self.N = traj.n_episodes
        dtype = self.flat.dtype
        obs, actions, ep = batch_tensors(traj, dtype)
        if baseline == "mean":
            groups = np.array_split(np.arange(self.N), max(1, min(int(n_batches), self.N)))
            b = np.concatenate([leave_one_out(traj.returns[g]) for g in groups])
        else:
            b = np.zeros(self.N)
        self.A = torch.from_numpy(traj.returns - b).to(dtype)  # (N,) advantages of whole episodes
        fp, N, A = self.flat, self.N, self.A

        def log_p(theta: torch.Tensor) -> torch.Tensor:  # (N,) log P(τ) up to θ-free terms
            lp = fp.step_log_probs(theta, obs, actions)
            return torch.zeros(N, dtype=lp.dtype).index_add(0, ep, lp)

        def weighted(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            lpe = log_p(theta)
            return (A * lpe).sum(), lpe

        self._grad_s = grad(weighted, has_aux=True)  # θ ↦ (Σ A_τ g_τ, log P)
        self.mode = mode or ("autograd" if N * self.size <= JACOBIAN_LIMIT else "functorch")
        if self.mode == "autograd":
            theta = fp.theta.clone().requires_grad_(True)
            lpe = log_p(theta)
            (self._gs,) = torch.autograd.grad((A * lpe).sum(), theta, create_graph=True)
            self._theta = theta
            self._J = _per_episode_scores(log_p, fp.theta, N, int(obs.shape[0])).detach()
        else:
            _, self._vjp = vjp(log_p, fp.theta)  # type: ignore[misc]  # torch.func stubs: a 2- or 3-tuple (has_aux) without overloads

    def gradient(self) -> np.ndarray:
        """The score-function gradient with the same baseline, (P,) float64: ``(1/N) Σ_τ A_τ g_τ`` (whole-episode returns)."""
        g, _ = self._grad_s(self.flat.theta)
        return (g / self.N).double().numpy()

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """H·v for v (P,) float64 → (P,) float64."""
        t0 = time.perf_counter()
        vt = torch.as_tensor(np.asarray(v, np.float64).reshape(-1), dtype=self.flat.dtype)
        if self.mode == "autograd":
            h1v = self._J.T @ (self.A * (self._J @ vt))
            (h2v,) = torch.autograd.grad(self._gs, self._theta, grad_outputs=vt, retain_graph=True)
        else:
            _, (h2v, jv) = jvp(self._grad_s, (self.flat.theta,), (vt,))  # type: ignore[misc]  # torch.func stubs: a 2- or 3-tuple (has_aux) without overloads
            (h1v,) = self._vjp(self.A * jv)
        self.n_products += 1
        self.seconds += time.perf_counter() - t0
        return ((h1v + h2v) / self.N).double().numpy()
