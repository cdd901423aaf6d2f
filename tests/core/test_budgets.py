"""Adaptive episode budgets: the allocation rule, common random numbers, resume mid-allocation."""

import json

import numpy as np
import pytest

import rlscape
from rlscape.core.budgets import adaptive_sem, episode_counts, next_round, pooled_variance, rungs
from rlscape.core.errors import RlscapeError
from rlscape.core.policy import load_checkpoint
from rlscape.core.spec import EvalSpec
from rlscape.core.store import ChunkData


def _chunk(points, returns, first=0):
    returns = np.asarray(returns, float)
    lengths = np.where(np.isnan(returns), 0, 1)
    nan = np.full_like(returns, np.nan)
    return ChunkData(np.asarray(points), returns, lengths, nan, nan, nan, first_episode=first)


def test_the_rule_adds_episodes_to_the_uncertain_points_and_stops_at_the_target_or_the_cap():
    from scipy.stats import chi2

    ev = EvalSpec.from_budget("auto", None, target_sem=2.0, min_episodes=4, max_episodes=16)
    assert rungs(4, 16).tolist() == [4, 6, 8, 11, 16] and rungs(10, 400).tolist()[:5] == [10, 14, 20, 28, 40]
    # nothing yet: every point runs episodes 0–3
    pts, first, n = next_round([], 3, ev)
    assert (pts.tolist(), first, n) == ([0, 1, 2], 0, 4)
    # point 0 certain, 1 noisy, 2 identical returns: the pooled pseudo-episode makes neither 0 nor 2 certain
    chunks = [_chunk([0, 1, 2], [[5, 5, 5, 5], [0, 10, 0, 10], [7, 7, 7, 7]])]
    v = pooled_variance(chunks, 3, 4)
    assert v == pytest.approx(np.var([0, 10, 0, 10], ddof=1) / 3)
    sem = adaptive_sem(np.array([[5.0, 5, 5, 5], [0, 10, 0, 10]]), v)
    q4 = chi2.ppf(0.1, 4)  # the variance's 90 % upper bound
    assert sem[0] == pytest.approx(np.sqrt(v / q4 / 4)) and sem[1] == pytest.approx(np.sqrt((100 + v) / q4 / 4))
    assert 0 < sem[0] <= 2.0 < sem[1]
    # only the noisy point goes on; the plain estimate (100 + v)/4/S² ≈ 7 episodes → the rung 8 (= 2n, the cap)
    pts, first, n = next_round(chunks, 3, ev)
    assert (pts.tolist(), first, n) == ([1], 4, 4)
    chunks.append(_chunk([1], [[0, 10, 0, 10]], first=4))
    # at 8 the plain estimate says 7 are enough but the bound is still above S: the next rung, 11 (not 16)
    assert next_round(chunks, 3, ev)[1:] == (8, 3)
    chunks.append(_chunk([1], [[0, 10, 0]], first=8))
    assert next_round(chunks, 3, ev)[1:] == (11, 5)  # still above: 11 → 16 (the cap)
    chunks.append(_chunk([1], [[10, 0, 10, 0, 10]], first=11))
    assert next_round(chunks, 3, ev) is None  # 16 = max_episodes: stop even though SEM > target
    assert episode_counts(chunks, 3).tolist() == [4, 16, 4]
    # a tighter target: the identical-returns points are not taken as certain (pooled variance)
    tight = EvalSpec.from_budget("auto", None, target_sem=1.0, min_episodes=4)
    assert next_round(chunks[:1], 3, tight)[0].tolist() == [0, 2]  # to the next rung, 6; point 1 (to 8) in its own round
    assert next_round(chunks[:1] + [_chunk([0, 2], [[5, 5], [7, 7]], first=4)], 3, tight)[0].tolist() == [1]
    # a point that needs many more episodes than it has grows by at most 2× per round
    loud = [_chunk([0, 1], [[0, 100, 0, 100], [1, 1, 1, 1]])]
    assert next_round(loud, 2, ev)[1:] == (4, 4)


def test_the_allocation_does_not_depend_on_how_the_chunks_were_split():
    ev = EvalSpec.from_budget("auto", None, target_sem=0.5, min_episodes=4, max_episodes=64)
    rng = np.random.default_rng(0)
    whole = [_chunk(np.arange(6), rng.normal(size=(6, 4)) * np.arange(6)[:, None])]
    split = [_chunk(whole[0].points[i : i + 2], whole[0].returns[i : i + 2]) for i in (4, 0, 2)]
    a, b = next_round(whole, 6, ev), next_round(split, 6, ev)
    assert a[0].tolist() == b[0].tolist() and a[1:] == b[1:]


@pytest.fixture(scope="module")
def agent(cartpole_ppo):
    return load_checkpoint(cartpole_ppo)


def _line(agent, **kw):
    return rlscape.line(agent, points=7, range=(-1.5, 1.5), seed=3, workers=1, progress=False, **kw)


def test_adaptive_line_meets_the_target_and_keeps_common_random_numbers(agent):
    ds = _line(agent, episodes="auto", target_sem=6.0, min_episodes=4, max_episodes=64)
    n = ds.n_episodes.values
    assert len(set(n.tolist())) > 1, "points got different numbers of episodes"
    assert ds.attrs["target_sem"] == 6.0 and ds.attrs["episodes_rule"] == "auto" and ds.sizes["episode"] == n.max()
    returns = ds.returns.values
    for k in range(len(n)):
        assert np.all(np.isfinite(returns[k, : n[k]])) and np.all(np.isnan(returns[k, n[k] :]))
        assert n[k] in rungs(4, 64)
    # each point stopped because it met the target (with the pooled pseudo-episode) or hit the cap
    v = float(np.mean(np.var(returns[:, :4], axis=1, ddof=1)))
    sem = adaptive_sem(returns, v)
    assert np.all((sem <= 6.0) | (n == 64))
    for k in np.flatnonzero(n > 4):  # it grew from a rung p ≥ n/2 where it was above the target
        before = [p for p in rungs(4, 64) if n[k] / 2 <= p < n[k]]
        assert any(adaptive_sem(returns[k : k + 1, :p], v)[0] > 6.0 for p in before)
    # episode e is the same experiment as in a fixed budget: the prefix equals a fixed run bit for bit
    fixed = _line(agent, episodes=int(n.max()))
    for k in range(len(n)):
        np.testing.assert_array_equal(returns[k, : n[k]], fixed.returns.values[k, : n[k]])


def test_adaptive_run_resumes_mid_allocation_to_the_same_numbers(agent, tmp_path):
    out = tmp_path / "line"
    kw = {"episodes": "auto", "target_sem": 6.0, "min_episodes": 4, "max_episodes": 64}
    whole = _line(agent, out=out, **kw)
    chunks = sorted((out / "chunks").glob("points-*.npz"), key=lambda f: f.name.split("-")[-1])
    assert len(chunks) >= 3
    # a run killed in the middle: keep round 1 in part and the later rounds in part
    for f in chunks[1::2]:
        f.unlink()
    info = json.loads((out / "run.json").read_text())
    info["status"] = "running"
    (out / "run.json").write_text(json.dumps(info))
    again = _line(agent, out=out, **kw)
    for var in ("returns", "n_episodes", "return_mean", "return_sem"):
        np.testing.assert_array_equal(again[var].values, whole[var].values, err_msg=var)


def test_adaptive_population_and_bad_flags(agent):
    theta = agent.parameters("actor")
    members = {n: np.stack([v, v * 0.5, v * 2]) for n, v in theta.items()}
    pop = rlscape.evaluate_population(agent, members, episodes="auto", target_sem=8.0, min_episodes=4, max_episodes=32,
                                      workers=1)
    assert pop.attrs["episodes_rule"] == "auto" and pop.n_episodes.values.min() >= 4
    with pytest.raises(RlscapeError, match="--target-sem"):
        EvalSpec.from_budget("auto", None)
    with pytest.raises(RlscapeError, match="go with --episodes auto"):
        EvalSpec.from_budget(10, None, target_sem=1.0)
    with pytest.raises(RlscapeError, match="at least --min-episodes"):
        EvalSpec.from_budget("auto", None, target_sem=1.0, min_episodes=20, max_episodes=10)


def test_an_unfinished_run_of_the_first_doubling_rule_is_not_resumed_under_the_ladder(agent, tmp_path):
    out = tmp_path / "line"
    kw = {"episodes": "auto", "target_sem": 6.0, "min_episodes": 4, "max_episodes": 16}
    _line(agent, out=out, **kw)
    spec = json.loads((out / "spec.json").read_text())
    assert spec["evaluation"]["adaptive_rule"] == 2
    del spec["evaluation"]["adaptive_rule"]  # the spec a run of the first rule wrote
    (out / "spec.json").write_text(json.dumps(spec))
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "running"}))
    with pytest.raises(RlscapeError, match="adaptive_rule"):
        _line(agent, out=out, **kw)
