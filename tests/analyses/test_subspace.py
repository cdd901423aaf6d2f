"""Gradient fraction in the top Hessian eigenspace: known answers, the analysis on a tiny run."""

from __future__ import annotations

import numpy as np
import pytest

from rlscape.analyses.subspace import gradient_fraction, run_subspace, subspace_overlap
from rlscape.core.errors import RlscapeError
from tests import training_runs


def test_gradient_fraction_and_overlap_have_their_closed_forms():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    g = Q[:, 0] * 3.0 + Q[:, 1] * 4.0  # ‖g‖² = 25: 9 along the first eigenvector, 16 along the second
    np.testing.assert_allclose(gradient_fraction(Q[:, :5], g, [1, 2, 5]), [9 / 25, 1.0, 1.0], atol=1e-12)
    assert np.isnan(gradient_fraction(Q[:, :2], np.zeros(20), [1])[0])
    assert subspace_overlap(Q[:, :3], Q[:, :3]) == pytest.approx(1.0)
    assert subspace_overlap(Q[:, :3], Q[:, 3:6]) == pytest.approx(0.0, abs=1e-12)
    assert subspace_overlap(Q[:, :2], Q[:, [1, 2]]) == pytest.approx(0.5)
    # random k-dim subspaces of R^P overlap by k/P on average
    P, k = 200, 10
    vals = [subspace_overlap(np.linalg.qr(rng.normal(size=(P, k)))[0], np.linalg.qr(rng.normal(size=(P, k)))[0]) for _ in range(200)]
    assert np.mean(vals) == pytest.approx(k / P, rel=0.15)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return training_runs.tiny_ppo_run(tmp_path_factory)


def test_subspace_over_training(run, tmp_path):
    ds = run_subspace(run, tmp_path / "s", ks=(1, 3), episodes=6, checkpoints="1024,2048", progress=False)
    assert dict(ds.sizes)["step"] == 2 and list(ds.k.values) == [1, 3]
    f = ds.fraction.values
    assert np.all((f >= 0) & (f <= 1 + 1e-9)) and np.all(np.diff(f, axis=1) >= -1e-12)  # more vectors hold more of g
    assert np.isnan(ds.overlap.values[0]).all() and np.all((ds.overlap.values[1] >= 0) & (ds.overlap.values[1] <= 1 + 1e-9))
    assert (ds.eigenvalues.values[:, 0] <= ds.eigenvalues.values[:, -1]).all()  # SA: most negative first
    with pytest.raises(RlscapeError, match="--k must stay below"):
        run_subspace(run, tmp_path / "t", ks=(10**6,), episodes=4, checkpoints="1024")
    assert not (tmp_path / "t").exists()
