"""`rlscape grad-quality` and `rlscape value-error` as a user meets them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.cli.test_cli import run_cli
from tests.training_runs import norm_ppo_run


@pytest.fixture(scope="session")
def norm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return norm_ppo_run(tmp_path_factory)


def test_grad_quality_over_training_with_normalised_rewards(norm_run, tmp_path, capsys):
    out = tmp_path / "gq"
    args = ["grad-quality", norm_run, "--out", out, "--samples", "100,400", "--repeats", "3", "--true-samples", "1000",
            "--checkpoints", "0,2048"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr").load()
    assert ds.attrs["kind"] == "grad-quality" and list(ds["step"].values) == [0, 2048]
    assert ds["pairwise_cosine"].dims == ("step", "samples", "repeat", "other")
    assert ds.attrs["reward_units"].startswith("training")
    assert np.all(ds["pairs"].values >= np.array([100, 400])[None, :, None])
    assert (out / "plots" / "grad_quality.png").is_file()
    assert ds.attrs["algorithm_batch"] == 256  # n_steps 256 × 1 env
    # recomputed from scratch (--overwrite), the same spec and seed give the same numbers
    code, _, err = run_cli([*args, "--overwrite"], capsys)
    assert code == 0, err
    again = xr.open_zarr(out / "results.zarr").load()
    np.testing.assert_array_equal(again["true_cosine"].values, ds["true_cosine"].values)


def test_value_error_over_training(norm_run, tmp_path, capsys):
    out = tmp_path / "ve"
    code, stdout, err = run_cli(["value-error", norm_run, "--out", out, "--episodes", "5"], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr").load()
    assert list(ds["step"].values) == [0, 1024, 2048]
    assert np.all(np.isfinite(ds["mre"].values))
    assert "critic MRE" in stdout
    assert (out / "plots" / "value_error.png").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--samples", "100,abc"], "--samples"),
    (["--repeats", "1"], "--repeats"),
    (["--estimator", "gae", "--baseline", "none"], "--baseline critic"),
    (["--true-samples", "50"], "--true-samples"),
])
def test_bad_input_is_a_one_line_error(cartpole_ppo, tmp_path, capsys, extra, message):
    code, _, err = run_cli(["grad-quality", cartpole_ppo, "--out", tmp_path / "x", *extra], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_surrogate_plane(cartpole_ppo, tmp_path, capsys):
    out = tmp_path / "sur"
    code, stdout, err = run_cli(["surrogate", cartpole_ppo, "--out", out, "--samples", "200,400", "--grid", "3", "--workers", "2"], capsys)
    assert code == 0, err
    ds = xr.open_zarr(out / "results.zarr").load()
    assert ds["surrogate"].dims == ("samples", "alpha", "beta") and ds["surrogate"].shape == (2, 3, 3)
    assert abs(float(ds["surrogate"].values[0, 0, 0])) < 1e-6  # θ0: ratio 1, normalised advantages have mean 0
    assert np.all(ds["pairs"].values >= [200, 400])
    assert float(ds.attrs["step_norm"]) > 0
    assert (out / "plots" / "surrogate.png").is_file()
    # the true return does not depend on how many processes evaluate it
    code, _, err = run_cli(["surrogate", cartpole_ppo, "--out", tmp_path / "one", "--samples", "200,400", "--grid", "3",
                            "--workers", "1", "--no-plot"], capsys)
    assert code == 0, err
    one = xr.open_zarr(tmp_path / "one" / "results.zarr").load()
    np.testing.assert_array_equal(one["return_mean"].values, ds["return_mean"].values)
    np.testing.assert_array_equal(one["surrogate"].values, ds["surrogate"].values)


def test_surrogate_refuses_a_policy_without_a_critic(untrained, tmp_path, capsys):
    code, _, err = run_cli(["surrogate", untrained("sac", "Pendulum-v1"), "--out", tmp_path / "s", "--env", "Pendulum-v1"], capsys)
    assert code == 2 and "PPO, A2C or TRPO" in err
