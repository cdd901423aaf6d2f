"""Episode budgets of a population: fixed (``--episodes E`` / ``--steps S``) or adaptive (``--episodes auto``).

:func:`evaluate_budget` is what every analysis of points calls (planes, lines, over training,
curves, populations): it evaluates the points of a population that the run's stored chunks do not
yet hold, and hands each new chunk to ``on_chunk``.

**Adaptive budgets** (``--episodes auto --target-sem S [--min-episodes m] [--max-episodes M]``)
spend episodes where the uncertainty is. Episodes are added in rounds, always as a prefix of the
same episode ids at every point (episode ``e`` is the same reset seed and action noise everywhere:
common random numbers survive):

1. every point runs episodes ``0 … m−1``;
2. the pooled variance ``V̄`` is the mean over points of their sample variances (ddof 1) on those
   first ``m`` episodes;
3. a point with ``n`` episodes and sample variance ``s²`` is judged by
   ``SEM̂ = sqrt(((n−1)·s² + V̄) / χ²₀.₁(n) / n)``: its own sum of squares plus one pseudo-episode
   of the pooled variance, over the 10 % quantile of a chi-square with ``n`` degrees of freedom —
   a 90 % upper confidence bound on the variance (about 2× the plain estimate at n = 10, 1.2× at
   n = 160). Both guard the decision to stop where it is made on few episodes: without the
   pseudo-episode a point whose first episodes happen to agree (CartPole: ten returns of 500 from
   a policy that falls 5 % of the time) looks certain (SEM 0); without the bound, skewed returns
   (mostly 500, sometimes 60) understate their spread at n = 10 about as often as not, and the
   worst points of a plane are exactly those;
4. points with ``SEM̂ > S`` and ``n < M`` add episodes ``n … n'−1``: ``n'`` is the smallest rung
   of the ladder ``m, m·√2, 2m, 2m·√2, …, M`` (rounded) at or above what the plain estimate
   ``((n−1)·s² + V̄)/n / S²`` says is needed, at least the next rung and at most ``2n``;
   repeat from 3 until no point needs more. (Plain doubling overshot by up to 2×: a point that
   needed 22 episodes got 40.)

A point's decision depends only on its own episodes and on ``V̄`` (fixed once round 1 is done),
so the allocation is the same however the work was split, interrupted or resumed: a resumed run
continues mid-allocation and ends with the same numbers. ``n_episodes`` in the results says how
many episodes each point got; the per-episode arrays hold NaN past it.

Statistical note: stopping when the sample variance is small is a sequential rule, so a stopped
point's mean is not exactly unbiased for its true return (points that stop at ``m`` are those
whose first episodes agreed). The pooled pseudo-episode bounds how often that happens;
``benchmarks/adaptive_budgets.py`` measures the resulting error against a 400-episode reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rlscape.core.evaluate import BlockResult, Budget
from rlscape.core.execute import evaluate_points
from rlscape.core.params import NamedArrays
from rlscape.core.policy import Agent
from rlscape.core.spec import EvalSpec
from rlscape.core.store import ChunkData

log = logging.getLogger(__name__)


def budget_attrs(ev: EvalSpec) -> dict[str, Any]:
    """The budget as Dataset attributes: ``episodes`` (0 for an adaptive budget), ``steps`` (0 unless
    a steps budget) and, for an adaptive one, ``target_sem``, ``min_episodes``, ``max_episodes``."""
    out: dict[str, Any] = {"episodes": ev.episodes or 0, "steps": ev.steps or 0}
    if ev.adaptive:
        out.update(episodes_rule="auto", target_sem=ev.target_sem, min_episodes=ev.min_episodes, max_episodes=ev.max_episodes)
    return out


def episode_counts(chunks: Sequence[ChunkData], n_points: int) -> np.ndarray:
    """Episodes ``0 … n−1`` each point holds, from stored chunks (the length of the contiguous prefix)."""
    width = max((c.first_episode + c.returns.shape[1] for c in chunks), default=0)
    ran = np.zeros((n_points, width + 1), bool)  # a last column that is never run: every row has a first gap
    for c in chunks:
        ran[c.points, c.first_episode : c.first_episode + c.returns.shape[1]] |= c.lengths > 0
    return np.argmin(ran, axis=1).astype(np.int64)


def _returns(chunks: Sequence[ChunkData], n_points: int, n_episodes: int) -> np.ndarray:
    """Returns ``(n_points, n_episodes)`` of episodes ``0 … n_episodes−1`` (NaN where not run)."""
    out = np.full((n_points, n_episodes), np.nan)
    for c in chunks:
        lo, hi = c.first_episode, min(c.first_episode + c.returns.shape[1], n_episodes)
        if hi > lo:
            part = c.returns[:, : hi - lo]
            out[c.points, lo:hi] = np.where(c.lengths[:, : hi - lo] > 0, part, np.nan)
    return out


def adaptive_sem(returns: np.ndarray, pooled_variance: float) -> np.ndarray:
    """``SEM̂`` per row of ``returns`` (NaN = not run): a 90 % upper confidence bound on the SEM from
    the sample variance plus one pooled pseudo-episode (see the module docstring)."""
    from scipy.stats import chi2

    n, ss = _spread(returns)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((ss + pooled_variance) / chi2.ppf(_UCB_LEVEL, n) / n)


def _spread(returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``returns`` (NaN = not run): the episodes run and their sum of squares (n−1)·s²."""
    n = np.sum(~np.isnan(returns), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(returns, axis=1) / n
        return n, np.nansum((returns - mean[:, None]) ** 2, axis=1)


_UCB_LEVEL = 0.10  # SEM̂ is the variance's 90 % upper confidence bound (chi-square, n degrees of freedom)


def pooled_variance(chunks: Sequence[ChunkData], n_points: int, min_episodes: int) -> float:
    """``V̄``: the mean over points of the sample variance of their first ``min_episodes`` episodes."""
    first = _returns(chunks, n_points, min_episodes)
    if min_episodes < 2:
        return 0.0
    return float(np.mean(np.var(first, axis=1, ddof=1)))


def next_round(chunks: Sequence[ChunkData], n_points: int, ev: EvalSpec) -> tuple[np.ndarray, int, int] | None:
    """The next round of an adaptive budget: (points, first episode, episodes), or None when done."""
    assert ev.target_sem is not None and ev.min_episodes is not None and ev.max_episodes is not None  # adaptive
    m, M = ev.min_episodes, ev.max_episodes
    counts = episode_counts(chunks, n_points)
    short = np.flatnonzero(counts < m)
    if short.size:  # round 1 (or its unfinished part): every point runs episodes 0 … m−1
        lo = int(counts[short].min())
        pts = short[counts[short] == lo]
        return pts, lo, m - lo
    v = pooled_variance(chunks, n_points, m)
    returns = _returns(chunks, n_points, int(counts.max()))
    # a point's prefix only: after a resume, later episodes may wait past a gap
    returns[np.arange(returns.shape[1])[None, :] >= counts[:, None]] = np.nan
    sem = adaptive_sem(returns, v)
    want = (sem > ev.target_sem) & (counts < M)
    if not want.any():
        return None
    lo = int(counts[want].min())  # the lowest count first (after a resume several may wait)
    pts = np.flatnonzero(want & (counts == lo))
    # where to go: the smallest rung that the plain variance estimate says is enough, at most 2·lo
    _, ss = _spread(returns[pts, :lo])
    need = np.ceil((ss + v) / lo / ev.target_sem**2)
    ladder = rungs(m, M)
    above = ladder[ladder > lo]
    cap = min(2 * lo, M)
    goal = np.array([next((int(r) for r in above if r >= min(k, cap)), cap) for k in need])
    hi = int(goal.min())  # one round per goal; the others follow in the next calls
    return pts[goal == hi], lo, hi - lo


def rungs(m: int, M: int) -> np.ndarray:
    """The episode counts an adaptive point can hold: m·√2^k rounded (m, 1.4m, 2m, 2.8m, …), and M."""
    k = np.arange(0, 2 * int(np.ceil(np.log2(max(M / m, 1)))) + 1)
    r = np.unique(np.round(m * np.sqrt(2.0) ** k).astype(np.int64))
    return np.unique(np.append(r[r < M], M))


def evaluate_budget(
    agent: Agent,
    base: NamedArrays,
    basis: Sequence[NamedArrays],
    coords: np.ndarray | None,
    n_points: int,
    ev: EvalSpec,
    chunks: list[ChunkData],
    *,
    on_chunk: Callable[[ChunkData], None],
    workers: int | Any | None = None,
    max_envs: int | None = None,
    generic: bool = False,
    members: NamedArrays | None = None,
    member_seeds: np.ndarray | None = None,
    on_round: Callable[[int, int, int], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Evaluate what ``chunks`` (the run's stored results) lack under ``ev``'s budget; returns env steps.

    Each finished chunk is appended to ``chunks`` and passed to ``on_chunk`` (store it there).
    ``on_round(points, first_episode, episodes)`` announces each adaptive round (and the single
    round of a fixed budget); ``on_progress(points, env_steps)`` follows every chunk.
    """

    def run(todo: np.ndarray, budget: Budget) -> int:
        def keep(points: np.ndarray, res: BlockResult) -> None:
            c = ChunkData(points, **res.arrays(), first_episode=budget.first)
            chunks.append(c)
            on_chunk(c)
            if on_progress is not None:
                on_progress(len(points), res.env_steps)

        if on_round is not None:
            on_round(len(todo), budget.first, budget.episodes or 0)
        return evaluate_points(agent, base, basis, coords, todo, budget, seed=ev.seed, deterministic=ev.deterministic,
                               workers=workers, max_envs=max_envs, generic=generic, on_chunk=keep, members=members,
                               member_seeds=member_seeds)

    if ev.target_sem is None:
        done = np.zeros(n_points, bool)
        for c in chunks:
            done[c.points] = True
        return run(np.flatnonzero(~done), Budget(episodes=ev.episodes, steps=ev.steps))
    steps = 0
    while (step := next_round(chunks, n_points, ev)) is not None:
        pts, first, count = step
        log.info("adaptive budget: %d points × episodes %d–%d", len(pts), first, first + count - 1)
        steps += run(pts, Budget(episodes=count, first=first))
    return steps
