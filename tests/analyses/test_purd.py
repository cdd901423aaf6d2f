"""Post-update return distribution, interpolation and Algorithm 1 (methods.md §8)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlscape import stats
from rlscape.analyses.cvar_train import CvarTrainSpec, run_algorithm, state_digest
from rlscape.analyses.interpolate import InterpolationSpec, interpolate, perturbations
from rlscape.analyses.purd import PurdSpec, eval_seed, evaluate_members, purd, purd_summary, update_seed
from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import reset_seed
from rlscape.core.policy import load_checkpoint
from rlscape.core.updater import StepSeeds
from tests.analyses import linear_gaussian as lg


class BoundedLinearGaussian(lg.LinearGaussianTask):
    """The linear-Gaussian task with finite action bounds (SB3 needs them), far from any action taken."""

    action_space = gym.spaces.Box(-1e3, 1e3, (2,), np.float32)


BOUNDED_ID = "tests.analyses.test_purd:PurdLinearGaussian-v0"
if "PurdLinearGaussian-v0" not in gym.registry:
    gym.register("PurdLinearGaussian-v0", entry_point=BoundedLinearGaussian)


def _save(model, folder: Path, env_id: str, buffer: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.zip")
    if buffer:
        model.save_replay_buffer(folder / "replay_buffer.pkl")
    (folder / "env.json").write_text(json.dumps({"env_id": env_id}))
    return folder


@pytest.fixture(scope="module")
def td3_ckpts(tmp_path_factory):
    """Two TD3 Pendulum checkpoints of one run (steps 120 and 160), with Adam moments and buffer."""
    from stable_baselines3 import TD3

    root = tmp_path_factory.mktemp("td3")
    with torch.random.fork_rng(devices=[]):
        model = TD3("MlpPolicy", "Pendulum-v1", learning_starts=50, buffer_size=1000, batch_size=64, seed=0, device="cpu",
                    policy_kwargs={"net_arch": [16]})
        model.learn(120)
        a = _save(model, root / "a", "Pendulum-v1", True)
        model.learn(40, reset_num_timesteps=False)
        b = _save(model, root / "b", "Pendulum-v1", True)
    return a, b


def test_purd_equals_a_plain_loop_of_sb3_actor_steps_on_copies(td3_ckpts):
    """Each sample: one actor Adam step of SB3's TD3 loss on a copy of the saved model with the
    same minibatch rows, then one deterministic episode from the fixed initial state. The updates
    are bit-identical (same operations on the same data); the returns are compared with SB3's own
    predict() loop to 1e-6 relative (the batched evaluator's float32 matmul may differ in the last
    bit from SB3's per-state forward)."""
    from stable_baselines3 import TD3
    from stable_baselines3.common.logger import Logger

    ckpt = td3_ckpts[0]
    ds = purd(PurdSpec(checkpoint=str(ckpt), updates=5, bootstrap=50, seed=3), workers=1, progress=False)
    ref = TD3.load(ckpt / "model.zip", device="cpu")
    ref.load_replay_buffer(ckpt / "replay_buffer.pkl")
    env = gym.make("Pendulum-v1")
    s0 = reset_seed(eval_seed(3), 0)
    np.testing.assert_array_equal(ds["initial_obs"].values[0], env.reset(seed=s0)[0])
    for i in range(5):
        seed = update_seed(3, i)
        assert int(ds["update_seed"][i]) == seed
        m = copy.deepcopy(ref)
        m.set_logger(Logger(None, []))
        rows = np.random.default_rng(StepSeeds.of(seed).batch).integers(0, m.replay_buffer.pos, size=256)
        before = {n: p.detach().clone() for n, p in m.actor.named_parameters()}
        for group in m.actor.optimizer.param_groups:
            group["lr"] = m.lr_schedule(m._current_progress_remaining)
        data = m.replay_buffer._get_samples(rows, env=None)
        loss = -m.critic.q1_forward(data.observations, m.actor(data.observations)).mean()
        m.actor.optimizer.zero_grad()
        loss.backward()
        m.actor.optimizer.step()
        norm = np.sqrt(sum(float(torch.sum((p.detach() - before[n]).double() ** 2)) for n, p in m.actor.named_parameters()))
        assert float(ds["update_norm"][i]) == pytest.approx(norm, rel=1e-12)
        obs, _ = env.reset(seed=s0)
        total, done = 0.0, False
        while not done:
            action, _ = m.predict(obs, deterministic=True)
            obs, r, term, trunc, _ = env.step(action)
            total += float(r)
            done = term or trunc
        assert float(ds["return"][i]) == pytest.approx(total, rel=1e-6)
    assert np.all(ds["churn"].values > 0) and np.all(ds["update_norm"].values > 0)
    assert float(ds["pre_return"]) != float(ds["return"][0])


def test_updates_are_independent_of_n_and_of_chunking(td3_ckpts):
    small = purd(PurdSpec(checkpoint=str(td3_ckpts[0]), updates=3, bootstrap=10, chunk=2), workers=1, progress=False)
    large = purd(PurdSpec(checkpoint=str(td3_ckpts[0]), updates=5, bootstrap=10, chunk=5), workers=1, progress=False)
    np.testing.assert_array_equal(small["returns"].values, large["returns"].values[:3])
    np.testing.assert_array_equal(small["update_norm"].values, large["update_norm"].values[:3])


def test_run_directory_resumes_from_stored_samples(td3_ckpts, tmp_path):
    spec = PurdSpec(checkpoint=str(td3_ckpts[0]), updates=4, bootstrap=10, chunk=2)
    first = purd(spec, tmp_path / "p", workers=1, progress=False)
    import rlscape.analyses.purd as mod

    calls = []
    real = mod.sample_updates
    mod.sample_updates = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        # unfinished run (status running) of the same spec: nothing left to sample
        (tmp_path / "p" / "run.json").write_text(json.dumps({**json.loads((tmp_path / "p" / "run.json").read_text()), "status": "running"}))
        again = purd(spec, tmp_path / "p", workers=1, progress=False)
    finally:
        mod.sample_updates = real
    assert calls == []
    np.testing.assert_array_equal(first["returns"].values, again["returns"].values)


def test_summary_is_the_stats_functions_with_bootstrap_cis():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(100, 5, 900), rng.normal(10, 5, 100)])  # a left tail of 10 %
    s = purd_summary(x, alpha=0.1, n_resamples=300)
    assert s["mean"][0] == pytest.approx(np.mean(x))
    assert s["cvar"][0] == pytest.approx(float(stats.cvar(x, 0.1)))
    assert s["mode"][0] == pytest.approx(float(stats.histogram_mode(x)))
    assert s["ltp"][0] == pytest.approx(float(stats.ltp(x)))
    assert 0.07 < s["ltp"][0] < 0.13
    for name, (v, lo, hi) in s.items():
        assert lo <= v <= hi, name
    with pytest.raises(RlscapeError):
        purd_summary(np.array([1.0]))


def test_linear_gaussian_purd_matches_the_closed_form(tmp_path):
    """PPO with a linear Gaussian policy on the one-step task, plain SGD, advantages not
    normalised, one minibatch = the whole rollout of n one-step episodes: the first PPO step is
    Δθ = lr · (1/n) Σ (r_i − V(s_i)) ∇ log π(a_i|s_i) (ratio 1, no clipping), whose mean is lr·∇J
    (a state-dependent baseline adds no bias). Its evaluation is closed form too: the
    deterministic return from the fixed initial state s0 is −‖W's0 + b' − c‖²."""
    from stable_baselines3 import PPO

    n, lr, N = 64, 0.01, 200
    with torch.random.fork_rng(devices=[]):
        model = PPO("MlpPolicy", BOUNDED_ID, n_steps=n, batch_size=n, n_epochs=1, learning_rate=lr, ent_coef=0.0,
                    normalize_advantage=False, max_grad_norm=1e9, gamma=0.0, gae_lambda=1.0, seed=0, device="cpu",
                    policy_kwargs={"net_arch": {"pi": [], "vf": []}, "optimizer_class": torch.optim.SGD, "log_std_init": float(np.log(lg.SIGMA))})
    ckpt = _save(model, tmp_path / "lg", BOUNDED_ID, False)
    ds = purd(PurdSpec(checkpoint=str(ckpt), updates=N, bootstrap=20, seed=1), workers=1, progress=False)
    assert ds.attrs["batch_size"] == n and ds.attrs["ppo_update"] == "minibatch"  # PPO's own minibatch, not --batch-size
    agent = load_checkpoint(ckpt)
    w0, b0 = agent.parameters("all")["action_net.weight"], agent.parameters("all")["action_net.bias"]
    # the same N updates again, straight from the updater (the PURD keeps only their norms)
    from rlscape.core.updater import Updater

    deltas = []
    with Updater.from_checkpoint(ckpt) as up:
        for i in range(N):
            r = up.step(update_seed(1, i), mode="actor")
            deltas.append(np.concatenate([r.delta["action_net.weight"].ravel(), r.delta["action_net.bias"]]))
            assert r.norm == pytest.approx(float(ds["update_norm"][i]), rel=1e-6)
    deltas = np.asarray(deltas, np.float64)
    g = lg.exact_gradient(w0.astype(np.float64), b0.astype(np.float64))
    expect = lr * np.concatenate([g["lin.weight"].ravel(), g["lin.bias"]])
    mean, sem = stats.mean_sem(deltas, axis=0)
    assert np.all(np.abs(mean - expect) < 4 * sem), (mean, expect, sem)
    # each PURD sample: −‖W's0 + b' − c‖² at the recorded fixed initial state
    s0 = ds["initial_obs"].values[0]
    w1 = w0[None] + deltas[:, :4].reshape(N, 2, 2)
    b1 = b0[None] + deltas[:, 4:]
    closed = -np.sum((np.einsum("kij,j->ki", w1, s0) + b1 - lg.C) ** 2, axis=1)
    np.testing.assert_allclose(ds["return"].values, closed, rtol=1e-4)  # float32 parameters and forward


def test_interpolation_uses_the_same_draws_at_every_alpha(td3_ckpts):
    a, b = td3_ckpts
    ds = interpolate(InterpolationSpec(checkpoint_a=str(a), checkpoint_b=str(b), points=3, samples=4, sigma=1e-2, bootstrap=20),
                     workers=1, progress=False)
    assert ds["return"].shape == (3, 4)
    agent_a, agent_b = load_checkpoint(a), load_checkpoint(b)
    ta, tb = agent_a.parameters("actor"), agent_b.parameters("actor")
    noise = perturbations({n: v.shape for n, v in ta.items()}, 4, 1e-2, 0)
    # the end points are A and B with the same perturbations
    for alpha_i, theta in ((0, ta), (2, tb)):
        r, _ = evaluate_members(agent_a, {n: theta[n][None] + noise[n] for n in ta}, episodes=1, seed=eval_seed(0),
                                deterministic=True, workers=1)
        np.testing.assert_array_equal(ds["return"].values[alpha_i], r[:, 0])
    # independent per tensor and per sample: distinct streams
    first = next(iter(noise))
    assert not np.allclose(noise[first][0], noise[first][1])
    bare = interpolate(InterpolationSpec(checkpoint_a=str(a), checkpoint_b=str(b), points=3, samples=4, sigma=0.0), workers=1,
                       progress=False)
    assert bare.sizes["sample"] == 1 and np.isnan(bare["cvar"].values).all()


def test_rejection_restores_the_pre_proposal_state_exactly(td3_ckpts, monkeypatch):
    """Force every proposal to be rejected (a CVaR that keeps falling): the updater's state after
    the run equals the root's — parameters, targets, Adam moments and step counts, counters,
    buffer position and the seed stream — and the caller's global RNGs are untouched."""
    import rlscape.analyses.cvar_train as mod
    from rlscape.core.updater import Updater

    real = mod.purd_summary
    calls = iter(range(100))

    def falling(*a, **k):
        s = real(*a, **k)
        s["cvar"] = (-float(next(calls)),) * 3
        return s

    monkeypatch.setattr(mod, "purd_summary", falling)
    ckpt = td3_ckpts[0]
    agent = load_checkpoint(ckpt)
    spec = CvarTrainSpec(checkpoint=str(ckpt), proposals=3, updates=3, bootstrap=10)
    torch_state = torch.random.get_rng_state()
    with Updater.from_checkpoint(ckpt, which="actor", agent=agent) as up:
        root = up.state()
        ds = run_algorithm(None, spec, agent, up, workers=1, progress=False)
        after = up.state()
    assert torch.equal(torch_state, torch.random.get_rng_state())
    assert ds["accepted"].values.tolist() == [True, False, False, False]
    assert (ds["update_norm"].values[1:] > 0).all()  # each proposal did move the actor before it was undone
    assert state_digest(after) == state_digest(root)
    assert set(ds["digest_after"].values) == {state_digest(root)}
    for k in root.policy:
        assert torch.equal(root.policy[k], after.policy[k]), k
    for name, opt in root.optimizers.items():
        for pid, st in opt["state"].items():
            for key, v in st.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(after.optimizers[name]["state"][pid][key])), (name, key)
    assert root.counters == after.counters and root.buffer == after.buffer and root.rng == after.rng


def test_without_rejection_every_proposal_is_kept_and_the_state_moves(td3_ckpts, tmp_path):
    from rlscape.analyses.cvar_train import cvar_train

    spec = CvarTrainSpec(checkpoint=str(td3_ckpts[0]), proposals=2, updates=3, bootstrap=10, reject=False)
    ds = cvar_train(spec, tmp_path / "base", workers=1, progress=False)
    assert ds["accepted"].values.all()
    d0, d1 = ds["digest_before"].values, ds["digest_after"].values
    assert d1[1] != d0[1] and d0[2] == d1[1]  # each proposal starts where the previous one left the state
    # resume: a finished run of the same spec is reused, results identical
    again = cvar_train(spec, tmp_path / "base2", workers=1, progress=False)
    np.testing.assert_array_equal(ds["purd"].values, again["purd"].values)


def test_checkpoint_without_optimizer_state_is_refused(tmp_path):
    from stable_baselines3 import TD3

    model = TD3("MlpPolicy", "Pendulum-v1", learning_starts=10, buffer_size=100, seed=0, device="cpu", policy_kwargs={"net_arch": [8]})
    ckpt = _save(model, tmp_path / "nobuf", "Pendulum-v1", False)
    with pytest.raises(RlscapeError, match="replay buffer.*rlscape train"):
        purd(PurdSpec(checkpoint=str(ckpt), updates=2), progress=False)


@pytest.mark.parametrize(("algo", "ppo_update", "mode"), [
    ("td3", "minibatch", "actor"), ("sac", "minibatch", "actor"), ("ddpg", "iteration", "actor"), ("dqn", "minibatch", "train"),
    ("ppo", "minibatch", "actor"), ("ppo", "iteration", "train"), ("a2c", "minibatch", "actor"),
])
def test_each_algorithm_samples_with_its_own_rule(algo, ppo_update, mode):
    """methods.md §8: actor step (off-policy), one minibatch step or one iteration (on-policy), the Q step (DQN)."""
    assert PurdSpec(checkpoint="x", algo=algo, ppo_update=ppo_update).mode == mode


@pytest.mark.parametrize("bad", [{"updates": 1}, {"alpha": 0.0}, {"episodes_per_update": 0}, {"init": "fixedish"}])
def test_bad_spec_values_are_refused(bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        PurdSpec(checkpoint="x", **bad)


def test_cvar_train_resumes_after_a_crash_with_the_same_results(td3_ckpts, tmp_path, monkeypatch):
    """A run killed after proposal 1 resumes from proposals.npz + state.pt and ends exactly as an
    uninterrupted run (the restored updater state carries the accepted policy and its optimizer)."""
    import rlscape.analyses.cvar_train as mod

    spec = CvarTrainSpec(checkpoint=str(td3_ckpts[0]), proposals=3, updates=3, bootstrap=10)
    whole = mod.cvar_train(spec, tmp_path / "whole", workers=1, progress=False)
    real, calls = mod.current_purd, [0]

    def crash_on_third(*a, **k):
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("killed")
        return real(*a, **k)

    monkeypatch.setattr(mod, "current_purd", crash_on_third)
    with pytest.raises(RuntimeError, match="killed"):
        mod.cvar_train(spec, tmp_path / "cut", workers=1, progress=False)
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "failed"
    monkeypatch.setattr(mod, "current_purd", real)
    resumed = mod.cvar_train(spec, tmp_path / "cut", workers=1, progress=False)
    for v in ("purd", "accepted", "digest_before", "digest_after", "purd_cvar"):
        np.testing.assert_array_equal(resumed[v].values, whole[v].values, err_msg=v)
