"""Cliff labels on synthetic lines over training, and the cliff dive's arithmetic and updates."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from rlscape.analyses.cliffs import change, cliff_dive, dive_dataset, dive_table, label_cliffs, one_update
from rlscape.core.errors import RlscapeError
from tests import training_runs


@pytest.fixture(scope="session")
def tiny_ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return training_runs.tiny_ppo_run(tmp_path_factory)


ALPHA = np.round(np.linspace(-1, 1, 11), 12)  # first step: 0.2


def synthetic(rows: dict[int, dict[float, float]], episodes: int = 0) -> xr.Dataset:
    """A line over training: J = 100 everywhere unless ``rows[step][alpha]`` says otherwise."""
    steps = sorted(rows)
    mean = np.full((len(steps), ALPHA.size), 100.0)
    for i, s in enumerate(steps):
        for a, v in rows[s].items():
            mean[i, int(np.argmin(np.abs(ALPHA - a)))] = v
    if not episodes:
        return xr.Dataset({"return_mean": (("step", "alpha"), mean)}, coords={"step": steps, "alpha": ALPHA})
    spread = np.linspace(-1, 1, episodes)  # per-episode returns whose mean is exactly `mean`
    returns = mean[..., None] + spread
    return xr.Dataset({"returns": (("step", "alpha", "episode"), returns)}, coords={"step": steps, "alpha": ALPHA})


ROWS = {
    0: {},                                   # flat: no cliff
    1000: {0.0: 100.0, 0.2: 40.0},           # falls 60 % in the first step, 60 > 25 % of the range: cliff
    2000: {0.0: 2.0, 0.2: 0.5},              # falls 75 % but only 1.5 (< 25 % of the range): no cliff
    3000: {0.0: -20.0, 0.2: -70.0},          # negative: falls by 50 = 250 % of |J0|, > 25 % of 170: cliff
    4000: {0.0: 100.0, 0.2: 90.0, 0.4: 0.0},  # falls only at the second step: no cliff
    5000: {0.0: 100.0, -0.2: 0.0},           # falls on the negative side only
}


@pytest.mark.parametrize("episodes", [0, 5])
def test_labels_on_a_synthetic_line_over_training(episodes):
    labels = label_cliffs(synthetic(ROWS, episodes))
    assert labels.attrs["global_range"] == pytest.approx(170.0)  # 100 − (−70), over every step and offset
    assert labels.attrs["first_step"] == pytest.approx(0.2)
    assert dict(zip(labels.step.values.tolist(), labels.cliff.values.tolist(), strict=True)) == {
        0: False, 1000: True, 2000: False, 3000: True, 4000: False, 5000: False}
    np.testing.assert_allclose(labels.fall.sel(step=[1000, 2000, 3000]), [60.0, 1.5, 50.0])
    np.testing.assert_allclose(labels.relative_fall.sel(step=[1000, 2000, 3000]), [0.6, 0.75, 2.5])
    np.testing.assert_allclose(labels.j0.sel(step=3000), -20.0)


def test_thresholds_window_and_side_are_parameters():
    ds = synthetic(ROWS)
    wide = label_cliffs(ds, first_step=0.4)
    assert bool(wide.cliff.sel(step=4000)) and wide.attrs["first_step"] == pytest.approx(0.4)
    neg = label_cliffs(ds, side="negative")
    assert bool(neg.cliff.sel(step=5000)) and not bool(neg.cliff.sel(step=1000))
    both = label_cliffs(ds, side="both")
    assert both.cliff.sel(step=[1000, 3000, 5000]).all()
    strict = label_cliffs(ds, min_relative_fall=0.7)  # 60 % is no longer enough; 250 % still is
    assert not bool(strict.cliff.sel(step=1000)) and bool(strict.cliff.sel(step=3000))
    loose = label_cliffs(ds, min_range_fraction=0.0)  # the small fall now counts
    assert bool(loose.cliff.sel(step=2000))


def test_bad_lines_are_refused_with_one_line():
    no_zero = synthetic(ROWS).isel(alpha=slice(0, 5))
    with pytest.raises(RlscapeError, match="α = 0"):
        label_cliffs(no_zero)
    with pytest.raises(RlscapeError, match="dims"):
        label_cliffs(synthetic(ROWS).isel(step=0))
    with pytest.raises(RlscapeError, match="--first-step"):
        label_cliffs(synthetic(ROWS), first_step=0.1)
    with pytest.raises(RlscapeError, match="--side"):
        label_cliffs(synthetic(ROWS), side="up")  # type: ignore[arg-type]


def test_change_and_welch_match_a_recomputation():
    assert change(np.array(100.0), np.array(50.0)) == pytest.approx(-0.5)
    assert change(np.array(-100.0), np.array(-150.0)) == pytest.approx(-0.5)  # worse is negative for R0 < 0 too
    assert change(np.array(-100.0), np.array(-50.0)) == pytest.approx(0.5)
    assert np.isnan(change(np.array(0.0), np.array(3.0)))
    rng = np.random.default_rng(0)
    S, A, T, E = 4, 2, 3, 6
    before = rng.normal(50, 5, (S, E))
    after = rng.normal(40, 5, (S, A, T, E))
    cliff = [True, False, True, False]
    ds = dive_dataset([0, 1, 2, 3], cliff, before, after, np.ones((S, A, T)))
    r0 = before.mean(1)
    for a in range(A):
        ch = np.sign(r0)[:, None] * (after[:, a].mean(-1) / r0[:, None] - 1)
        np.testing.assert_allclose(ds.change.isel(algo=a), ch)
        per_ckpt = ch.mean(1)  # the checkpoint is the unit: its trials averaged first
        ref = stats.ttest_ind(per_ckpt[[0, 2]], per_ckpt[[1, 3]], equal_var=False)
        assert float(ds.welch_t[a]) == pytest.approx(ref.statistic) and float(ds.welch_p[a]) == pytest.approx(ref.pvalue)
        assert int(ds.n_cliff[a]) == 2 and float(ds.mean_change_cliff[a]) == pytest.approx(ch[[0, 2]].mean())
        assert float(ds.sem_change_cliff[a]) == pytest.approx(per_ckpt[[0, 2]].std(ddof=1) / np.sqrt(2))
    table = dive_table(ds)
    assert table.splitlines()[1].startswith("A2C") and table.splitlines()[2].startswith("PPO")


def _digest(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir()) if f.is_file()}


def test_one_update_is_one_seeded_update_and_leaves_the_checkpoint_alone(tiny_ppo_run):
    ckpt = tiny_ppo_run / "checkpoints" / "0000001024"
    files = _digest(ckpt)
    from rlscape.core.policy import load_checkpoint

    theta0 = load_checkpoint(ckpt).parameters("all")
    a2c, a2c_again, ppo = one_update(ckpt, "a2c", 7), one_update(ckpt, "a2c", 7), one_update(ckpt, "ppo", 7)
    assert (a2c.gradient_steps, a2c.rollout_steps) == (1, 40)  # one A2C step on 8 envs × 5 steps
    assert (ppo.gradient_steps, ppo.rollout_steps) == (8, 40)  # 1 epoch of minibatches of 5
    assert all(np.array_equal(a2c.params[n], a2c_again.params[n]) for n in theta0)  # seeded
    assert any(not np.array_equal(a2c.params[n], theta0[n]) for n in theta0)  # it moved …
    assert any(not np.array_equal(a2c.params[n], ppo.params[n]) for n in theta0)
    assert _digest(ckpt) == files  # … and the checkpoint on disk did not
    with pytest.raises(RlscapeError, match="a2c or ppo"):
        one_update(ckpt, "sac", 0)


def test_cliff_dive_on_a_tiny_run(tiny_ppo_run, tmp_path):
    ds = cliff_dive(tiny_ppo_run, [0, 1024, 2048], [True, False, False], tmp_path / "dive", trials=2, episodes=4,
                    workers=1, progress=False)
    assert dict(ds.sizes) == {"step": 3, "algo": 2, "trial": 2, "episode": 4}
    assert ds.algo.values.tolist() == ["a2c", "ppo"] and ds.cliff.values.tolist() == [True, False, False]
    r0 = ds.returns_before.mean("episode")
    r = ds.returns_after.mean("episode")
    np.testing.assert_allclose(ds.change, np.sign(r0) * (r / r0 - 1))  # recomputed from the stored returns
    assert np.isnan(ds.welch_t).all()  # one cliff checkpoint: the test (checkpoint as unit) needs two
    assert (ds.update_norm > 0).all()
    stored = xr.open_zarr(tmp_path / "dive" / "results.zarr")
    np.testing.assert_array_equal(stored.returns_after.values, ds.returns_after.values)
    # an interrupted dive resumes from its finished checkpoints; another spec never reuses them
    import json

    run_file = tmp_path / "dive" / "run.json"
    run_file.write_text(json.dumps({**json.loads(run_file.read_text()), "status": "running"}))
    again = cliff_dive(tiny_ppo_run, [0, 1024, 2048], [True, False, False], tmp_path / "dive", trials=2, episodes=4,
                       workers=1, progress=False)
    np.testing.assert_array_equal(again.change.values, ds.change.values)
    run_file.write_text(json.dumps({**json.loads(run_file.read_text()), "status": "running"}))
    with pytest.raises(RlscapeError, match="holds a different run"):
        cliff_dive(tiny_ppo_run, [0, 1024, 2048], [True, False, False], tmp_path / "dive", trials=2, episodes=5,
                   workers=1, progress=False)


@pytest.fixture(scope="session")
def norm_run(tmp_path_factory):
    return training_runs.norm_ppo_run(tmp_path_factory)


def _a2c_dive_reference(ckpt, seed, norm_reward):
    """The dive's A2C update written with plain SB3: a fresh A2C (the dive's configuration) holding the
    checkpoint's weights, 8 envs behind the checkpoint's VecNormalize (frozen, rewards as trained)."""
    import random

    import torch
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from rlscape.analyses.cliffs import DIVE_HYPERPARAMS
    from rlscape.core.updater import StepSeeds

    hp = {**DIVE_HYPERPARAMS["common"], **DIVE_HYPERPARAMS["a2c"]}
    n_envs = hp.pop("n_envs")
    seeds = StepSeeds.of(seed)
    with torch.random.fork_rng(devices=[]):
        venv = VecNormalize.load(str(ckpt / "vecnormalize.pkl"), make_vec_env("CartPole-v1", n_envs=n_envs))
        venv.training, venv.norm_reward = False, norm_reward
        src = PPO.load(ckpt / "model.zip", device="cpu")
        model = A2C(type(src.policy), venv, gamma=src.gamma, policy_kwargs=src.policy_kwargs, device="cpu", **hp)
        model.policy.load_state_dict(src.policy.state_dict())
        model._setup_learn(40, None)
        torch.manual_seed(seeds.rng)
        np.random.seed(seeds.rng)
        random.seed(seeds.rng)
        venv.seed(seeds.env)
        model._last_obs = venv.reset()
        model._last_episode_starts = np.ones(n_envs, bool)
        cb = CallbackList([])
        cb.init_callback(model)
        assert model.collect_rollouts(venv, cb, model.rollout_buffer, n_rollout_steps=5)
        model.train()
        venv.close()
    return {n: p.detach().numpy() for n, p in model.policy.named_parameters()}


def test_dive_update_rolls_out_in_the_training_pipeline_with_normalised_rewards(norm_run):
    """Once the dive's update saw raw rewards although the checkpoint trained on normalised ones."""
    ckpt = norm_run / "checkpoints" / "0000001024"
    got = one_update(ckpt, "a2c", 9)
    ref = _a2c_dive_reference(ckpt, 9, norm_reward=True)
    for n in ref:  # the same SB3 operations on the same data in the same order: bit-identical
        np.testing.assert_array_equal(got.params[n], ref[n], err_msg=n)
    raw = _a2c_dive_reference(ckpt, 9, norm_reward=False)
    assert any(not np.array_equal(got.params[n], raw[n]) for n in ref)


def test_welch_of_the_cliff_dive_holds_its_level_under_the_null():
    """Null: no cliff effect, but the trials of one checkpoint share its θ (a checkpoint effect c_s).

    change[s, a, t] = c_s + e_{s,a,t}, c ~ N(0, 1), e ~ N(0, 0.6²); 6 cliff + 6 non-cliff checkpoints,
    5 trials. Pooling the 30 trials per group as independent samples rejects at 5 % about 35 % of the
    time (0.352 in 40 000 simulations); the checkpoint as unit (means of its trials) about 5 %
    (Welch on 6 vs 6 is slightly conservative: 0.045 in 40 000). N = 2 × 1000 tests (two algorithms per
    dataset, independent): binomial SE √(p(1−p)/N) = 0.0049 at p = 0.05 and 0.0107 at p = 0.35;
    the tolerances are 3 SE.
    """
    from rlscape.stats import welch_t_test

    rng = np.random.default_rng(2026)
    S, A, T, n_sim = 12, 2, 5, 1000
    cliff = np.arange(S) < S // 2
    before = np.ones((S, 1))  # R0 = 1, so change = R − 1
    new_p, old_p = [], []
    for _ in range(n_sim):
        ch = rng.normal(0, 1, (S, A, 1)) + rng.normal(0, 0.6, (S, A, T))
        ds = dive_dataset(np.arange(S), cliff, before, (1 + ch)[..., None], np.ones((S, A, T)))
        new_p.extend(ds.welch_p.values)
        old_p.extend(welch_t_test(ch[cliff, a].ravel(), ch[~cliff, a].ravel()).p for a in range(A))
    N = n_sim * A
    old_rate, new_rate = np.mean(np.array(old_p) < 0.05), np.mean(np.array(new_p) < 0.05)
    assert abs(old_rate - 0.35) < 3 * np.sqrt(0.35 * 0.65 / N), old_rate
    assert abs(new_rate - 0.05) < 3 * np.sqrt(0.05 * 0.95 / N), new_rate
