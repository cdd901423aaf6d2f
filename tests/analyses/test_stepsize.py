"""Step-size search against synthetic return curves whose crossing is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from rlscape.analyses.stepsize import FALLS_IMMEDIATELY, FOUND, NEVER_FALLS, find_step_size, threshold_for
from rlscape.core.errors import RlscapeError


class Curve:
    """J(α) = J0 − tol·|J0|·(α/c)^p: it crosses the threshold exactly at α = c. Counts its calls."""

    def __init__(self, j0: float, c: float, tol: float = 0.05, p: float = 2.0) -> None:
        self.j0, self.c, self.tol, self.p = j0, c, tol, p
        self.calls: list[np.ndarray] = []

    def __call__(self, alphas: np.ndarray) -> np.ndarray:
        self.calls.append(np.array(alphas))
        return self.j0 - self.tol * abs(self.j0) * (np.asarray(alphas) / self.c) ** self.p


@pytest.mark.parametrize("j0", [150.0, -150.0, 0.4, -3e4])
@pytest.mark.parametrize("c", [3.3e-6, 0.037, 1.0, 412.0])
def test_finds_the_known_crossing_positive_and_negative(j0, c):
    f = Curve(j0, c)
    r = find_step_size(f, None, rel_precision=0.01)
    assert r.status == FOUND
    assert r.bracket_lo <= c <= r.bracket_hi  # the crossing is bracketed …
    assert r.bracket_hi / r.bracket_lo <= 1.01  # … to the stated relative precision
    assert r.alpha == r.bracket_lo and c / 1.01 <= r.alpha <= c
    assert r.threshold == pytest.approx(j0 - 0.05 * abs(j0))  # below J0 also when J0 < 0
    assert r.j0 == j0 and r.alphas[0] == 0.0  # J(θ) came from the same evaluator, in round 1
    # counts are reported and match what the evaluator saw
    assert r.n_evaluations == sum(len(c_) for c_ in f.calls) == r.alphas.size
    assert r.n_rounds == len(f.calls) and all(len(c_) <= 13 for c_ in f.calls)
    np.testing.assert_allclose(r.values, f(r.alphas))
    # every α but the first J(θ) point stays within the bounds
    assert np.all((r.alphas[1:] >= 1e-7) & (r.alphas[1:] <= 1e3))


def test_negative_return_uses_the_absolute_threshold():
    """Defect 9: (1 − tol)·J0 is *above* J0 when J0 < 0, so the old rule lost at once."""
    j0 = -200.0
    assert threshold_for(j0, 0.05) == -210.0
    r = find_step_size(Curve(j0, 0.5), j0)
    assert r.status == FOUND and r.alpha == pytest.approx(0.5, rel=0.02)


def test_given_j0_is_not_evaluated_again():
    f = Curve(10.0, 0.2)
    r = find_step_size(f, 10.0)
    assert 0.0 not in r.alphas and r.j0 == 10.0
    assert r.bracket_lo <= 0.2 <= r.bracket_hi


def test_never_falls_returns_hi_and_falls_immediately_returns_zero():
    flat = find_step_size(lambda a: np.full(len(a), 5.0), None, lo=1e-4, hi=10.0)
    assert flat.status == NEVER_FALLS and flat.alpha == 10.0 and flat.n_rounds == 1
    cliff = Curve(5.0, 1e-9)  # crosses far below lo
    r = find_step_size(cliff, None, lo=1e-4, hi=10.0)
    assert r.status == FALLS_IMMEDIATELY and r.alpha == 0.0 and r.bracket_hi == 1e-4 and r.n_rounds == 1
    assert np.all(r.alphas[1:] >= 1e-4) and np.all(r.alphas <= 10.0)


def test_first_crossing_of_a_non_monotone_curve():
    """A dip below the threshold in [0.01, 1], recovery after it: α* is the first crossing.

    (A dip narrower than the first ladder's spacing, ×8.1 by default, can be missed; see the docs.)
    """

    def f(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return np.where((a >= 0.01) & (a <= 1.0), 0.0, 100.0)

    r = find_step_size(f, None, rel_precision=0.01)
    assert r.status == FOUND and r.bracket_lo < 0.01 <= r.bracket_hi <= 0.01 * 1.01


def test_nan_counts_as_lost_and_bad_settings_are_refused():
    r = find_step_size(lambda a: np.where(np.asarray(a) > 0.3, np.nan, 1.0), None)
    assert r.status == FOUND and r.bracket_lo <= 0.3 <= r.bracket_hi
    for kwargs in ({"tol": -0.1}, {"lo": 0.0}, {"lo": 2.0, "hi": 1.0}, {"rel_precision": 0.0}, {"ladder": 1}):
        with pytest.raises(RlscapeError):
            find_step_size(Curve(1.0, 1.0), None, **kwargs)
    with pytest.raises(RlscapeError, match="finite return"):
        find_step_size(lambda a: np.full(len(a), np.nan), None)


# -- with a real agent ------------------------------------------------------------------------------

def test_search_on_an_agent_matches_the_line_evaluator(cartpole_ppo, tmp_path):
    """Every (α, J) the search records is what `rlscape.line` gives at that α (same seed: same episodes)."""
    from rlscape.analyses.stepsize import StepSizeSpec, stepsize
    from rlscape.analyses.surface import line
    from rlscape.core.spec import EvalSpec

    spec = StepSizeSpec(checkpoint=str(cartpole_ppo), evaluation=EvalSpec(episodes=3, seed=2), rel_precision=0.2, ladder=6)
    ds = stepsize(spec, tmp_path / "ss", workers=1, progress=False)
    a = ds.attrs
    assert a["status"] in ("found", "never_falls", "falls_immediately") and ds.alpha.values[0] == 0.0
    assert a["n_evaluations"] == ds.sizes["alpha"] and a["threshold"] == pytest.approx(a["j0"] - 0.05 * abs(a["j0"]))
    kept = ds.return_mean.values >= a["threshold"]
    if a["status"] == "found":
        assert a["bracket_hi"] / a["bracket_lo"] <= 1.2
        assert kept[ds.alpha.values == a["alpha_star"]].all() and not kept[ds.alpha.values == a["bracket_hi"]].any()
    pick = ds.alpha.values[[1, -1]]
    ref = line(cartpole_ppo, direction="random", points=2, range=(float(pick[0]), float(pick[1])), episodes=3, seed=2,
               workers=1, progress=False)
    np.testing.assert_allclose(ref.return_mean.values, ds.return_mean.sel(alpha=pick).values, rtol=1e-6)
    # resumable: a rerun of the same spec after a crash re-evaluates nothing (cached), a finished one is refused
    import json

    run = json.loads((tmp_path / "ss" / "run.json").read_text())
    assert run["status"] == "complete" and run["n_evaluations"] == a["n_evaluations"] and "torch" in run["versions"]
    (tmp_path / "ss" / "run.json").write_text(json.dumps({**run, "status": "running"}))
    again = stepsize(spec, tmp_path / "ss", workers=1, progress=False)
    np.testing.assert_array_equal(again.returns.values, ds.returns.values)
    assert json.loads((tmp_path / "ss" / "run.json").read_text())["env_steps_this_session"] == 0  # all from the cache
    with pytest.raises(RlscapeError, match="already holds"):
        stepsize(spec, tmp_path / "ss", workers=1, progress=False)
    # an unfinished run of another spec is refused, never resumed from the other spec's evaluations
    (tmp_path / "ss" / "run.json").write_text(json.dumps({**run, "status": "running"}))
    other = spec.model_copy(update={"evaluation": EvalSpec(episodes=2, seed=2), "ladder": 2, "rel_precision": 5.0})
    with pytest.raises(RlscapeError, match="holds a different run"):
        stepsize(other, tmp_path / "ss", workers=1, progress=False)
    fresh = stepsize(other, tmp_path / "ss", workers=1, progress=False, overwrite=True)
    assert fresh.sizes["episode"] == 2 and json.loads((tmp_path / "ss" / "run.json").read_text())["env_steps_this_session"] > 0
