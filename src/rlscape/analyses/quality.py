"""Gradient-estimate quality and value prediction (methods.md §7; Ilyas et al. 2020, seed 001).

Read top to bottom: one long stream of fresh episodes at θ (the ``direction`` stream) is cut, in
order, into disjoint chunks of whole episodes holding at least N state-action pairs each — one
chunk per (N, repeat), so every estimate is independent of every other → each chunk's policy
gradient (:func:`chunk_gradients`, one backward pass per chunk) → the "true" gradient from
``true_samples`` pairs of an independent stream (the ``evaluation`` stream of the same seed) →
cosines (:func:`cosine_summary`): the mean pairwise cosine over repeats and the cosine to the true
gradient, each with a 95 % percentile bootstrap CI over repeats (:func:`rlscape.stats.bootstrap_ci`).

The estimator (``estimator``):

* ``reinforce``: ``ĝ = (1/n_ep) Σ_τ Σ_t ∇log π(a_t|s_t)·(G_t − b(s_t))`` with the discounted
  reward-to-go ``G_t`` (the agent's γ unless ``gamma`` is given) of the rewards in the critic's units
  (the training rewards: VecNormalize reward scaling is a constant factor, which no cosine sees);
* ``gae``: the advantages PPO/A2C use, GAE(γ, λ) with the agent's critic and λ (baseline = critic);
* ``update``: the algorithm's own step direction at θ — the gradient of its policy loss on the
  batch, as SB3 computes it at the start of an update (importance ratio 1, so PPO's clipping is
  inactive): GAE(γ, λ) advantages **normalised over the batch** (mean 0, std 1) when the algorithm
  normalises them (``normalize_advantage``: PPO and TRPO by default, A2C not), weighted per
  state-action pair. The batch is the estimate's own N pairs (one minibatch = the whole batch);
  the entropy bonus and the value loss are left out (they are not the policy gradient). The
  "true" gradient is the same estimator on ``true_samples`` pairs (normalising a large batch only
  rescales it and subtracts a constant baseline, which leaves its expectation's direction alone).

and the baseline ``b`` (``baseline``): ``critic`` (the agent's V), ``true`` (a value function fit
to Monte-Carlo returns, :func:`fit_true_value`) or ``none``.

``value-error`` (:func:`value_error`): the critic's mean relative error against discounted MC
returns on held-out states.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import kind_attrs
from rlscape.core.lifecycle import Run
from rlscape.core.pg import FlatPolicy, batch_tensors, log_prob, reward_to_go, torch_threads
from rlscape.core.policy import Agent
from rlscape.core.trajectories import Trajectories, check_stochastic, collect, collect_steps, concatenate, stream_seeds
from rlscape.stats import bootstrap_ci

log = logging.getLogger(__name__)

ESTIMATORS = ("reinforce", "gae", "update")
QUALITY_BASELINES = ("critic", "true", "none")
TRUE_VALUE_STREAM = 0x7A1  # seed-sequence tag of the episodes the "true" value function is fit to
N_RESAMPLES = 500
CONFIDENCE = 0.95
ROW_BLOCK = 65_536  # steps per forward/backward block


# -- algorithm settings read from the checkpoint -----------------------------------------------

def algorithm_settings(agent: Agent) -> dict[str, Any]:
    """``gae_lambda``, ``n_steps``, ``n_envs`` and ``batch_size`` (= n_steps × n_envs, the algorithm's
    own samples per update) read from the SB3 zip's ``data``; missing entries are absent."""
    out: dict[str, Any] = {}
    src = Path(agent.source) if agent.source else None
    if src is None or not src.is_file() or src.suffix != ".zip":
        return out
    try:
        with zipfile.ZipFile(src) as zf:
            data = json.loads(zf.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError):
        return out
    for key in ("gae_lambda", "n_steps", "n_envs", "normalize_advantage"):
        if isinstance(data.get(key), (int, float)):  # (bool is an int)
            out[key] = data[key]
    if "n_steps" in out and "n_envs" in out:
        out["batch_size"] = int(out["n_steps"]) * int(out["n_envs"])
    return out


# -- the "true" value function ---------------------------------------------------------------------

@dataclass
class TrueValue:
    """V̂(s, t) fit by least squares to discounted MC returns: a (64, 64) tanh MLP on the network input
    ``s`` and the time fraction ``t / t_scale`` (a time limit makes the value depend on t), trained
    with Adam (lr 1e-3, 2000 full-batch-of-4096 steps, seeded), targets standardised."""

    net: torch.nn.Module
    t_scale: float
    mean: float
    std: float
    r2: float  # R² on the fitting episodes' last 20 % (held out of the fit)

    def __call__(self, obs: np.ndarray, t: np.ndarray) -> np.ndarray:
        x = _value_inputs(obs, t, self.t_scale)
        with torch.no_grad():
            return self.net(x).squeeze(-1).double().numpy() * self.std + self.mean


def _value_inputs(obs: np.ndarray, t: np.ndarray, t_scale: float) -> torch.Tensor:
    o = torch.from_numpy(np.asarray(obs, np.float32).reshape(len(obs), -1))
    return torch.cat([o, torch.from_numpy((np.asarray(t, np.float32) / t_scale)[:, None])], 1)


def fit_true_value(traj: Trajectories, gamma: float, *, seed: int = 0, iterations: int = 2000) -> TrueValue:
    """Fit :class:`TrueValue` to the discounted returns (training units) of ``traj``'s visited states."""
    G = reward_to_go(traj.train_rewards, traj.lengths, gamma)
    n = traj.n_steps
    gen = torch.Generator().manual_seed(int(seed))
    t_scale = float(max(1, traj.lengths.max()))
    x = _value_inputs(traj.obs, traj.t, t_scale)
    cut = int(traj.starts[int(0.8 * traj.n_episodes)]) if traj.n_episodes >= 5 else n
    mean, std = float(G[:cut].mean()), float(G[:cut].std() or 1.0)
    y = torch.from_numpy(((G - mean) / std).astype(np.float32))
    with torch.random.fork_rng():
        torch.manual_seed(int(seed))
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                  torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(iterations):
        idx = torch.randint(0, cut, (min(4096, cut),), generator=gen)
        loss = ((net(x[idx]).squeeze(-1) - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net(x[cut:]).squeeze(-1).numpy() if cut < n else np.zeros(0)
    r2 = float(1 - np.mean((pred - y.numpy()[cut:]) ** 2) / max(np.var(y.numpy()[cut:]), 1e-12)) if cut < n else float("nan")
    return TrueValue(net.eval(), t_scale, mean, std, r2)


# -- advantages and gradients of chunks ------------------------------------------------------------

def critic_values(agent: Agent, obs: np.ndarray) -> np.ndarray:
    """V(s) of the agent's critic, (M,) float64, in blocks of :data:`ROW_BLOCK`."""
    if not agent.has_value:
        raise RlscapeError(f"{agent.algo.upper()} agents have no state-value critic; use --baseline true or none")
    out = []
    with torch.no_grad():
        for i in range(0, len(obs), ROW_BLOCK):
            o = torch.from_numpy(np.ascontiguousarray(obs[i : i + ROW_BLOCK]))
            out.append(agent.head(o)["value"].reshape(-1).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def gae(rewards: np.ndarray, values: np.ndarray, lengths: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """GAE(γ, λ) advantages per step, (M,), episodes packed; the value after an episode's last step is 0."""
    nxt = np.append(values[1:], 0.0)
    ends = np.cumsum(lengths) - 1
    nxt[ends] = 0.0
    delta = rewards + gamma * nxt - values
    return reward_to_go(delta, lengths, gamma * lam)


def advantages(agent: Agent, traj: Trajectories, estimator: str, baseline: str, gamma: float, lam: float,
               true_value: TrueValue | None) -> np.ndarray:
    """The per-step weights A_t of the score ∇log π(a_t|s_t), (M,) float64 (training units)."""
    r = traj.train_rewards
    if estimator in ("gae", "update"):  # (update: normalised per batch by :func:`update_weights`)
        return gae(r, critic_values(agent, traj.obs), traj.lengths, gamma, lam)
    G = reward_to_go(r, traj.lengths, gamma)
    if baseline == "critic":
        return G - critic_values(agent, traj.obs)
    if baseline == "true":
        assert true_value is not None
        return G - true_value(traj.obs, traj.t)
    return G


def update_weights(traj: Trajectories, adv: np.ndarray, bounds: Sequence[tuple[int, int]], normalize: bool) -> np.ndarray:
    """The ``update`` estimator's per-pair weights: GAE advantages normalised within each chunk of
    episodes (SB3: ``(A − mean) / (std + 1e-8)``, std with ddof 0) when the algorithm normalises them,
    times n_episodes / n_pairs, so that :func:`chunk_gradients`' per-episode mean becomes SB3's
    per-pair mean."""
    w = np.array(adv, np.float64)
    starts, lengths = traj.starts, traj.lengths
    for e0, e1 in bounds:
        lo, hi = int(starts[e0]), int(starts[e1 - 1] + lengths[e1 - 1])
        a = w[lo:hi]
        if normalize:
            a = (a - a.mean()) / (a.std() + 1e-8)
        w[lo:hi] = a * (e1 - e0) / (hi - lo)
    return w


def chunk_gradients(agent: Agent, traj: Trajectories, weights: np.ndarray, bounds: Sequence[tuple[int, int]],
                    which: str = "actor") -> np.ndarray:
    """``(1/n_ep) Σ_{τ in chunk} Σ_t ∇log π(a_t|s_t)·A_t`` for each chunk of episodes ``[e0, e1)``, (C, P) float64."""
    fp = FlatPolicy(agent, which)
    obs, actions, _ = batch_tensors(traj, fp.dtype)
    A = torch.from_numpy(np.asarray(weights, np.float64)).to(fp.dtype)
    starts, lengths = traj.starts, traj.lengths
    out = np.zeros((len(bounds), fp.size))
    for c, (e0, e1) in enumerate(bounds):
        lo, hi = int(starts[e0]), int(starts[e1 - 1] + lengths[e1 - 1])
        theta = fp.theta.clone().requires_grad_(True)
        total = torch.zeros(fp.size, dtype=fp.dtype)
        for b in range(lo, hi, ROW_BLOCK):
            e = min(hi, b + ROW_BLOCK)
            lp = log_prob(agent, fp.forward(theta, obs[b:e]), actions[b:e])
            (gi,) = torch.autograd.grad((lp * A[b:e]).sum(), theta)
            total += gi
        out[c] = (total / (e1 - e0)).double().numpy()
    return out


def chunks(lengths: np.ndarray, samples: Sequence[int], repeats: int) -> list[list[tuple[int, int]]]:
    """Disjoint consecutive episode ranges: for each N in ``samples``, ``repeats`` ranges of ≥ N steps."""
    cum = np.concatenate([[0], np.cumsum(lengths)])
    e = 0
    out = []
    for n in samples:
        row = []
        for _ in range(repeats):
            e1 = int(np.searchsorted(cum, cum[e] + n, side="left"))
            if e1 >= len(cum):
                raise ValueError("not enough episodes collected")
            row.append((e, e1))
            e = e1
        out.append(row)
    return out


def disjoint_batches(agent: Agent, samples: Sequence[int], repeats: int, seed: int,
                     stream: str = "direction") -> tuple[Trajectories, list[list[tuple[int, int]]]]:
    """Episodes 0, 1, … of ``stream`` cut in order into :func:`chunks` (``repeats`` per N, ≥ N steps each),
    collected until the last chunk is full; returns the used episodes and the chunks' episode ranges."""
    traj = collect_at_least(agent, repeats * sum(samples), seed, stream)
    while True:
        try:
            bounds = chunks(traj.lengths, samples, repeats)
            break
        except ValueError:  # the last chunk ran past the episodes so far: more episodes
            more = collect(agent, max(16, traj.n_episodes // 4), seed, stream=stream, first_episode=traj.n_episodes)
            traj = concatenate([traj, more])
    return traj.subset(slice(0, bounds[-1][-1][1])), bounds


def collect_at_least(agent: Agent, steps: int, seed: int, stream: str) -> Trajectories:
    """Episodes 0, 1, … of ``stream`` until at least ``steps`` steps (complete episodes)."""
    return collect_steps(agent, steps, seed, stream=stream)


# -- cosines ---------------------------------------------------------------------------------------

def cosine_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """cos between rows of a (K, P) and rows of b (L, P) (default a itself), (K, L)."""
    b = a if b is None else b
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return (a @ b.T) / np.maximum(np.outer(na, nb), 1e-300)


def mean_pairwise(cos: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean of cos[i, j] over distinct pairs of the resampled repeats ``idx`` (..., K); pairs that
    resample the same repeat twice are left out (their cosine is 1 by construction)."""
    idx = np.asarray(idx).astype(np.int64)
    sub = cos[idx[..., :, None], idx[..., None, :]]
    distinct = idx[..., :, None] != idx[..., None, :]
    with np.errstate(invalid="ignore"):
        return np.where(distinct, sub, 0.0).sum((-1, -2)) / distinct.sum((-1, -2))


def cosine_summary(estimates: np.ndarray, truth: np.ndarray, *, seed: int = 0, n_resamples: int = N_RESAMPLES) -> dict[str, Any]:
    """Cosines of K estimates (K, P) with each other and with ``truth`` (P,), with bootstrap CIs over repeats.

    Returns ``pairwise`` (K, K) with NaN diagonal, ``true`` (K,), and for each of
    ``pairwise_mean/low/high``, ``true_mean/low/high`` a float; the pairwise CI resamples repeats
    (:func:`mean_pairwise` as the statistic), the true-cosine CI resamples the K cosines.
    """
    K = estimates.shape[0]
    cos = cosine_matrix(estimates)
    tc = cosine_matrix(estimates, truth[None])[:, 0]
    pw = cos.copy()
    np.fill_diagonal(pw, np.nan)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"pairwise": pw, "true": tc, "pairwise_mean": float(np.nanmean(pw)) if K > 1 else float("nan"),
                           "true_mean": float(tc.mean())}
    if K > 1:
        lo, hi = bootstrap_ci(np.arange(K), lambda i, axis=-1: mean_pairwise(cos, i), n_resamples=n_resamples,
                              confidence=CONFIDENCE, rng=rng)
        out["pairwise_low"], out["pairwise_high"] = float(lo), float(hi)
        lo, hi = bootstrap_ci(tc, np.mean, n_resamples=n_resamples, confidence=CONFIDENCE, rng=rng)
        out["true_low"], out["true_high"] = float(lo), float(hi)
    else:
        out.update(pairwise_low=float("nan"), pairwise_high=float("nan"), true_low=float("nan"), true_high=float("nan"))
    return out


# -- one checkpoint --------------------------------------------------------------------------------

def check_samples(samples: Sequence[int], repeats: int, true_samples: int) -> list[int]:
    s = sorted({int(n) for n in samples})
    if not s or s[0] < 1:
        raise RlscapeError(f"--samples must be positive integers, e.g. 100,1000,10000, not {','.join(map(str, samples))}")
    if repeats < 2:
        raise RlscapeError(f"--repeats must be at least 2 (pairwise cosines need two estimates), not {repeats}")
    if true_samples < s[-1]:
        raise RlscapeError(f"--true-samples ({true_samples}) must be at least the largest --samples ({s[-1]})")
    return s


def check_options(agent: Agent, estimator: str, baseline: str) -> None:
    """Refuse estimator/baseline choices this agent cannot take, with a one-line RlscapeError."""
    check_stochastic(agent, "the policy gradient")
    if estimator not in ESTIMATORS:
        raise RlscapeError(f"--estimator must be one of {', '.join(ESTIMATORS)}, not {estimator!r}")
    if estimator == "update" and agent.algo not in ("ppo", "a2c", "trpo"):
        raise RlscapeError(f"--estimator update is the policy-loss gradient of PPO, A2C or TRPO, not {agent.algo.upper()}; "
                           "use --estimator reinforce")
    if estimator == "update" and baseline != "critic":
        raise RlscapeError("--estimator update uses the agent's critic (GAE, as the algorithm does); give --baseline critic")
    if baseline not in QUALITY_BASELINES:
        raise RlscapeError(f"--baseline must be one of {', '.join(QUALITY_BASELINES)}, not {baseline!r}")
    if estimator == "gae" and baseline != "critic":
        raise RlscapeError("--estimator gae uses the agent's critic (GAE); give --baseline critic, or --estimator reinforce")
    if (estimator == "gae" or baseline == "critic") and not agent.has_value:
        raise RlscapeError(f"{agent.algo.upper()} agents have no state-value critic; use --estimator reinforce --baseline true or none")


def gradient_quality(agent: Agent, *, samples: Sequence[int] = (100, 1000, 10000), repeats: int = 10, true_samples: int = 100_000,
                     estimator: str = "reinforce", baseline: str = "critic", gamma: float | None = None, seed: int = 0,
                     which: str = "actor", fit_samples: int | None = None) -> xr.Dataset:
    """Cosine similarity of gradient estimates vs the number of state-action pairs N, at the agent's θ.

    Returns a Dataset with dims ``samples`` (N), ``repeat`` and ``other`` (a second repeat):
    ``pairwise_cosine`` (samples, repeat, other; NaN where repeat = other), ``true_cosine``,
    ``grad_norm``, ``pairs`` (exact state-action pairs), ``episodes`` (samples, repeat); summaries
    ``pairwise_cosine_mean/_low/_high`` and ``true_cosine_mean/_low/_high`` (samples) with 95 %
    bootstrap CIs (500 resamples over repeats); ``true_gradient`` (param: the flat P-vector in
    :class:`~rlscape.core.pg.FlatPolicy` order), ``true_grad_norm``, ``true_pairs`` (scalars).
    """
    check_options(agent, estimator, baseline)
    samples = check_samples(samples, repeats, true_samples)
    g = float(agent.gamma if gamma is None else gamma)
    if not 0.0 <= g <= 1.0:
        raise RlscapeError(f"--gamma must be in [0, 1], not {g}")
    settings = algorithm_settings(agent)
    lam = float(settings.get("gae_lambda", 0.95))
    true_value = None
    fit_r2 = float("nan")
    if baseline == "true":
        fit_seed = int(np.random.SeedSequence([int(seed), TRUE_VALUE_STREAM]).generate_state(1)[0])
        fit = collect_at_least(agent, int(fit_samples or max(20_000, min(true_samples, 200_000))), fit_seed, "evaluation")
        true_value = fit_true_value(fit, g, seed=seed)
        fit_r2 = true_value.r2
    with torch_threads(sum(v.size for v in agent.parameters(which).values())):
        # the estimates: one stream, cut into disjoint chunks (rounds of episodes until every chunk is full)
        traj, bounds = disjoint_batches(agent, samples, repeats, seed)
        w = advantages(agent, traj, estimator, baseline, g, lam, true_value)
        flat = [b for row in bounds for b in row]
        normalize = bool(settings.get("normalize_advantage", agent.algo != "a2c"))
        if estimator == "update":
            w = update_weights(traj, w, flat, normalize)
        est = chunk_gradients(agent, traj, w, flat, which).reshape(len(samples), repeats, -1)
        truth_traj = collect_at_least(agent, true_samples, seed, "evaluation")
        wt = advantages(agent, truth_traj, estimator, baseline, g, lam, true_value)
        whole = [(0, truth_traj.n_episodes)]
        if estimator == "update":
            wt = update_weights(truth_traj, wt, whole, normalize)
        truth = chunk_gradients(agent, truth_traj, wt, whole, which)[0]
    K = repeats
    pw = np.full((len(samples), K, K), np.nan)
    tc = np.zeros((len(samples), K))
    summ: dict[str, list[float]] = {k: [] for k in ("pairwise_mean", "pairwise_low", "pairwise_high", "true_mean", "true_low", "true_high")}
    for i in range(len(samples)):
        s = cosine_summary(est[i], truth, seed=seed + i)
        pw[i], tc[i] = s["pairwise"], s["true"]
        for k in summ:
            summ[k].append(s[k])
    cum = np.concatenate([[0], np.cumsum(traj.lengths)])
    pairs = np.array([[cum[e1] - cum[e0] for e0, e1 in row] for row in bounds], np.int64)
    eps = np.array([[e1 - e0 for e0, e1 in row] for row in bounds], np.int64)
    ds = xr.Dataset(
        {"pairwise_cosine": (("samples", "repeat", "other"), pw), "true_cosine": (("samples", "repeat"), tc),
         "grad_norm": (("samples", "repeat"), np.linalg.norm(est, axis=-1)), "pairs": (("samples", "repeat"), pairs),
         "episodes": (("samples", "repeat"), eps),
         **{f"{k.split('_')[0]}_cosine_{k.split('_')[1]}": (("samples",), np.array(v)) for k, v in summ.items()},
         "true_gradient": (("param",), truth), "true_grad_norm": ((), np.float64(np.linalg.norm(truth))), "true_pairs": ((), np.int64(truth_traj.n_steps)),
         "true_episodes": ((), np.int64(truth_traj.n_episodes)), "return_mean": ((), np.float64(truth_traj.returns.mean())),
         "true_value_r2": ((), np.float64(fit_r2))},
        coords={"samples": np.asarray(samples, np.int64), "repeat": np.arange(K), "other": np.arange(K)},
        attrs={**kind_attrs("grad-quality"), "estimator": estimator, "baseline": baseline, "gamma": g, "gae_lambda": lam,
               **({"normalize_advantage": int(normalize)} if estimator == "update" else {}),
               "params": which, "seed": seed, "repeats": K, "n_resamples": N_RESAMPLES, "confidence": CONFIDENCE,
               "reward_units": "training (VecNormalize-scaled)" if traj.rewards_normalized else "raw",
               "algorithm_batch": int(settings.get("batch_size", 0))},
    )
    ds["pairwise_cosine_mean"].attrs["long_name"] = "mean pairwise cosine of independent estimates"
    ds["true_cosine_mean"].attrs["long_name"] = "mean cosine to the 'true' gradient"
    ds["pairs"].attrs["long_name"] = "exact state-action pairs of the estimate (whole episodes, ≥ N)"
    return ds


# -- value prediction ------------------------------------------------------------------------------

def value_error(agent: Agent, *, episodes: int = 100, seed: int = 0, floor: float = 0.01) -> xr.Dataset:
    """The critic's mean relative error on held-out visited states against discounted MC returns.

    ``episodes`` fresh complete episodes (the ``evaluation`` stream: never seen in training);
    G_t = Σ_k γ^k r_{t+k} with the agent's γ over the rest of the episode, rewards in the critic's
    units (training units). MRE = mean |V(s_t) − G_t| / |G_t| over the states with
    |G_t| ≥ ``floor`` · mean|G| (the others are left out and counted: a relative error is
    undefined at G = 0); also ``ratio_error`` = Σ|V − G| / Σ|G| over all states, always defined.
    """
    check_stochastic(agent, "value-error", update_hint=False)
    if not agent.has_value:
        raise RlscapeError(f"{agent.algo.upper()} agents have no state-value critic; value-error needs an actor-critic (PPO, A2C, TRPO)")
    if episodes < 1:
        raise RlscapeError(f"--episodes must be a positive integer, not {episodes}")
    traj = collect(agent, episodes, seed, stream="evaluation")
    G = reward_to_go(traj.train_rewards, traj.lengths, agent.gamma)
    V = critic_values(agent, traj.obs)
    absG = np.abs(G)
    keep = absG >= floor * absG.mean()
    err = np.abs(V - G)
    mre = float(np.mean(err[keep] / absG[keep])) if keep.any() else float("nan")
    attrs = {**kind_attrs("value-error"), "gamma": agent.gamma, "seed": seed, "floor": floor,
             "reward_units": "training (VecNormalize-scaled)" if traj.rewards_normalized else "raw",
             "zero_rule": f"states with |G| < {floor} × mean|G| are left out of the MRE (counted in excluded)"}
    return xr.Dataset({"mre": ((), np.float64(mre)), "ratio_error": ((), np.float64(err.sum() / max(absG.sum(), 1e-300))),
                       "excluded": ((), np.int64((~keep).sum())), "states": ((), np.int64(traj.n_steps)),
                       "value_mean": ((), np.float64(V.mean())), "mc_return_mean": ((), np.float64(G.mean())),
                       "return_mean": ((), np.float64(traj.returns.mean()))}, attrs=attrs)


# -- the analyses as the CLI runs them -------------------------------------------------------------

def _first_agent(source: str | Path, checkpoints: str | None, env_id: str | None, algo: str | None) -> tuple[Path, Agent]:
    from rlscape.core.policy import load_checkpoint
    from rlscape.core.runs import first_checkpoint

    first = first_checkpoint(source, checkpoints)[1]
    return first, load_checkpoint(first, env_id, algo=algo)


def run_grad_quality(source: str | Path, out: str | Path, *, samples: Sequence[int] = (100, 1000, 10000), repeats: int = 10,
                     true_samples: int = 100_000, estimator: str = "reinforce", baseline: str = "critic",
                     gamma: float | None = None, seed: int = 0, which: str = "actor", checkpoints: str | None = None,
                     env_id: str | None = None, algo: str | None = None, overwrite: bool = False,
                     progress: bool = True) -> xr.Dataset:
    """:func:`gradient_quality` of a checkpoint, or of each checkpoint of a training run (dim ``step``)."""
    from rlscape.core.lifecycle import checkpoint_or_run
    from rlscape.core.policy import load_checkpoint

    samples = check_samples(samples, repeats, true_samples)
    if seed < 0:
        raise RlscapeError(f"--seed must be ≥ 0, not {seed}")
    first, agent0 = _first_agent(source, checkpoints, env_id, algo)
    check_options(agent0, estimator, baseline)
    FlatPolicy(agent0, which)
    spec = {"kind": "grad-quality", "source": str(Path(source).resolve()), "samples": list(samples), "repeats": repeats,
            "true_samples": true_samples, "estimator": estimator, "baseline": baseline, "gamma": gamma, "seed": seed,
            "params": which, "env_id": env_id, "algo": algo}
    seeds = {"estimates": stream_seeds(seed, "direction"), "truth": stream_seeds(seed, "evaluation"),
             "chunks": "the direction stream cut in order into disjoint runs of whole episodes, ≥ N steps each, "
                       "for N in samples (ascending) and repeat 0..K-1"}
    if baseline == "true":
        seeds["true_value_fit"] = f"evaluation stream of seed SeedSequence([{seed}, {TRUE_VALUE_STREAM:#x}])"

    def compute(step: int | None, path: Path, run: Run) -> xr.Dataset:
        agent = agent0 if Path(path) == first else load_checkpoint(path, env_id, algo=algo)
        ds = gradient_quality(agent, samples=samples, repeats=repeats, true_samples=true_samples, estimator=estimator,
                              baseline=baseline, gamma=gamma, seed=seed, which=which)
        log.info("%s: mean pairwise cosine %s; cosine to truth %s", f"step {step}" if step is not None else Path(path).name,
                 np.round(ds["pairwise_cosine_mean"].values, 3), np.round(ds["true_cosine_mean"].values, 3))
        return ds

    return checkpoint_or_run(source, out, spec, compute, checkpoints=checkpoints, overwrite=overwrite, progress=progress,
                             record={"seeds": seeds})


def run_value_error(source: str | Path, out: str | Path, *, episodes: int = 100, seed: int = 0, floor: float = 0.01,
                    checkpoints: str | None = None, env_id: str | None = None, algo: str | None = None,
                    overwrite: bool = False, progress: bool = True) -> xr.Dataset:
    """:func:`value_error` of a checkpoint, or of each checkpoint of a training run (dim ``step``)."""
    from rlscape.core.lifecycle import checkpoint_or_run
    from rlscape.core.policy import load_checkpoint

    if not 0 <= floor < 1:
        raise RlscapeError(f"--floor must be in [0, 1), not {floor}")
    first, agent0 = _first_agent(source, checkpoints, env_id, algo)
    if not agent0.has_value:
        raise RlscapeError(f"{agent0.algo.upper()} agents have no state-value critic; value-error needs an actor-critic (PPO, A2C, TRPO)")
    spec = {"kind": "value-error", "source": str(Path(source).resolve()), "episodes": episodes, "seed": seed, "floor": floor,
            "env_id": env_id, "algo": algo}

    def compute(step: int | None, path: Path, run: Run) -> xr.Dataset:
        agent = agent0 if Path(path) == first else load_checkpoint(path, env_id, algo=algo)
        return value_error(agent, episodes=episodes, seed=seed, floor=floor)

    return checkpoint_or_run(source, out, spec, compute, checkpoints=checkpoints, overwrite=overwrite, progress=progress,
                             record={"seeds": {"episodes": stream_seeds(seed, "evaluation")}})


def identity_gap(ds: xr.Dataset) -> np.ndarray:
    """E[cos(ĝ, g)]² − E[cos(ĝ1, ĝ2)] per N (≈ 0 for an unbiased estimator and an accurate truth; methods.md §7)."""
    return np.asarray(ds["true_cosine_mean"].values) ** 2 - np.asarray(ds["pairwise_cosine_mean"].values)


__all__ = ["gradient_quality", "value_error", "run_grad_quality", "run_value_error", "cosine_summary", "chunk_gradients",
           "fit_true_value", "gae", "identity_gap", "algorithm_settings", "check_options", "disjoint_batches"]
