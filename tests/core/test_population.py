"""Populations of explicit parameter vectors: the same numbers as plane points, any split of the work."""

import numpy as np
import pytest

import rlscape
from rlscape.core.directions import random_direction
from rlscape.core.errors import RlscapeError
from rlscape.core.policy import load_checkpoint


@pytest.fixture(scope="module")
def agent(cartpole_ppo):
    return load_checkpoint(cartpole_ppo)


def _plane_members(agent, grid=3, magnitude=0.5):
    """A small plane through θ0 and the same points written out as members (float32, as the evaluator sums)."""
    theta0 = agent.parameters("actor")
    d1, d2 = (random_direction(theta0, 0, i).values for i in range(2))
    ds = rlscape.plane(agent, dir1=d1, dir2=d2, grid=grid, magnitude=magnitude, episodes=6, seed=4, workers=1,
                       progress=False)
    thetas = {n: np.stack([(theta0[n] + np.float32(a) * d1[n]) + np.float32(b) * d2[n]
                           for a in ds.alpha.values for b in ds.beta.values]) for n in theta0}
    return ds, thetas


def test_members_equal_plane_points_bit_for_bit(agent):
    plane, thetas = _plane_members(agent)
    pop = rlscape.evaluate_population(agent, thetas, episodes=6, seed=4, workers=1)
    assert dict(pop.sizes) == {"member": 9, "episode": 6}
    flat = plane.stack(member=("alpha", "beta"))
    for var in ("returns", "lengths", "discounted_returns"):
        np.testing.assert_array_equal(pop[var].values, flat[var].transpose("member", "episode").values, err_msg=var)
    for var in ("return_mean", "return_std", "return_sem", "value_mean", "td_error_mean", "n_episodes"):
        np.testing.assert_array_equal(pop[var].values, flat[var].values, err_msg=var)
    assert pop.attrs["kind"] == "population" and pop.attrs["critic_reward_units"] == "raw"
    assert len(np.unique(pop.return_mean.values)) > 1  # the members really differ


def test_names_not_given_stay_at_theta0(agent):
    """Moving only the action layer: member 0 = θ0 exactly gives θ0's returns."""
    theta0 = agent.parameters("all")
    name = "action_net.weight"
    thetas = {name: np.stack([theta0[name], theta0[name] * 3])}
    pop = rlscape.evaluate_population(agent, thetas, episodes=4, workers=1)
    ref = rlscape.evaluate_population(agent, {"value_net.bias": theta0["value_net.bias"][None]}, episodes=4, workers=1)
    np.testing.assert_array_equal(pop.returns.values[0], ref.returns.values[0])
    assert not np.array_equal(pop.returns.values[1], pop.returns.values[0])


def test_workers_and_resume_give_the_same_results(agent, tmp_path):
    _, thetas = _plane_members(agent, grid=3)
    one = rlscape.evaluate_population(agent, thetas, episodes=5, seed=1, workers=1)
    two = rlscape.evaluate_population(agent, thetas, episodes=5, seed=1, workers=2, out=tmp_path / "pop")
    for var in one.data_vars:
        np.testing.assert_array_equal(one[var].values, two[var].values, err_msg=var)
    stored = rlscape.load(tmp_path / "pop")
    np.testing.assert_array_equal(stored.returns.values, one.returns.values)
    # a killed run: drop half the chunks and the status, resume, the same numbers
    chunks = sorted((tmp_path / "pop" / "chunks").glob("points-*.npz"))
    for f in chunks[: len(chunks) // 2]:
        f.unlink()
    run = tmp_path / "pop" / "run.json"
    run.write_text(run.read_text().replace('"complete"', '"running"'))
    again = rlscape.evaluate_population(agent, thetas, episodes=5, seed=1, workers=1, out=tmp_path / "pop")
    np.testing.assert_array_equal(again.returns.values, one.returns.values)
    with pytest.raises(RlscapeError, match="different run"):  # other members: another run
        rlscape.evaluate_population(agent, {n: v * 2 for n, v in thetas.items()}, episodes=5, seed=1, workers=1,
                                    out=tmp_path / "pop")


def test_bad_thetas_are_refused_in_one_line(agent):
    theta0 = agent.parameters("all")
    w = theta0["action_net.weight"]
    bad = {
        "unknown parameters": {"nope": w[None]},
        "has shape": {"action_net.weight": w},
        "NaN": {"action_net.weight": np.full((2, *w.shape), np.nan)},
        "different numbers of members": {"action_net.weight": np.stack([w, w]), "action_net.bias": theta0["action_net.bias"][None]},
        "empty": {},
    }
    for message, thetas in bad.items():
        with pytest.raises(RlscapeError, match=message) as err:
            rlscape.evaluate_population(agent, thetas, episodes=2, workers=1)
        assert "\n" not in str(err.value)


# -- TD errors in the critic's units (methods.md §3) ------------------------------------------------

@pytest.fixture(scope="module")
def normalized_cartpole(tmp_path_factory):
    """PPO trained briefly on CartPole under VecNormalize(norm_obs, norm_reward): the critic learned
    values of rewards divided by the running return std (here ≈ 7: +1 rewards are ≈ 0.14)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("normalized") / "ckpt"
    venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=0), norm_obs=True, norm_reward=True)
    model = PPO("MlpPolicy", venv, n_steps=256, batch_size=64, n_epochs=2, seed=0, device="cpu")
    model.learn(1024)
    path.mkdir()
    model.save(path / "model.zip")
    venv.save(path / "vecnormalize.pkl")
    return path


def test_td_errors_use_the_rewards_the_critic_was_trained_on(normalized_cartpole):
    """The TD error's rewards are in the critic's units: δ_t = r̃_t + γ·V(s_{t+1})·(1 − terminated) − V(s_t) with r̃ = SB3's own
    ``VecNormalize.normalize_reward`` (frozen statistics), computed independently step by step."""
    import pickle

    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    from rlscape.core.evaluate import reset_seed
    from tests.core.rounding import relative_tolerance

    agent = load_checkpoint(normalized_cartpole, "CartPole-v1")
    theta0 = agent.parameters("all")
    episodes, seed = 3, 2
    ds = rlscape.evaluate_population(agent, {"value_net.bias": theta0["value_net.bias"][None]}, episodes=episodes,
                                     seed=seed, deterministic=True, workers=1)
    assert ds.attrs["critic_reward_units"].startswith("VecNormalize frozen")

    model = PPO.load(normalized_cartpole / "model.zip", device="cpu")
    with open(normalized_cartpole / "vecnormalize.pkl", "rb") as fh:
        vn = pickle.load(fh)
    vn.training = False
    assert isinstance(vn, VecNormalize) and vn.norm_reward and abs(float(vn.ret_rms.var) - 1) > 0.5

    def value(obs: np.ndarray) -> float:
        with torch.no_grad():
            return float(model.policy.predict_values(torch.as_tensor(vn.normalize_obs(obs)[None], dtype=torch.float32))[0, 0])

    deltas, raw_deltas, values = [], [], []
    for e in range(episodes):
        env = gym.make("CartPole-v1")
        obs, _ = env.reset(seed=reset_seed(seed, e))
        done = False
        while not done:
            action, _ = model.predict(vn.normalize_obs(obs), deterministic=True)
            v = value(obs)
            obs, r, term, trunc, _ = env.step(int(action))
            v_next = 0.0 if term else value(obs)
            r_critic = float(vn.normalize_reward(np.array([r]))[0])
            deltas.append(r_critic + agent.gamma * v_next - v)
            raw_deltas.append(r + agent.gamma * v_next - v)
            values.append(v)
            done = term or trunc
    want = float(np.mean(np.square(deltas)))
    raw = float(np.mean(np.square(raw_deltas)))
    assert int(ds.lengths.sum()) == len(deltas)
    # V from another kernel: each value within ε = (relative rounding bound)·max|V|, so each δ within
    # 2ε and the mean of δ² within 4ε·(rms δ + ε)
    eps = relative_tolerance(agent.head) * max(abs(v) for v in values)
    assert abs(float(ds.td_error_mean[0]) - want) <= 4 * eps * (np.sqrt(want) + eps)
    assert raw > 5 * want  # raw rewards would have given another number altogether
    np.testing.assert_array_equal(ds.returns.values[0], ds.lengths.values[0])  # returns stay raw (+1 per step)


def test_atari_critic_rewards_are_clipped_to_their_sign():
    from rlscape.core.envs import EnvSpec, RewardNorm

    spec = EnvSpec("PongNoFrameskip-v4", atari=True)
    np.testing.assert_array_equal(spec.critic_reward(np.array([3.0, -2.0, 0.0, 0.5])), [1.0, -1.0, 0.0, 1.0])
    assert spec.critic_reward_units() == "sign(r) (AtariWrapper clip_reward)"
    both = EnvSpec("PongNoFrameskip-v4", atari=True, reward_norm=RewardNorm(var=4.0, clip=10.0, epsilon=0.0))
    np.testing.assert_array_equal(both.critic_reward(np.array([5.0, -1.0])), [0.5, -0.5])  # sign, then scale
    assert EnvSpec("CartPole-v1").critic_reward_units() == "raw"


@pytest.mark.parametrize("deterministic", [True, False])
def test_member_seeds_give_each_member_the_episodes_of_its_own_seed(agent, deterministic):
    """One population with member_seeds = one population per member on its own seed, bit for bit
    (resets and, stochastic, the action noise); and two workers change nothing."""
    _, thetas = _plane_members(agent)
    seeds = [5, 17, 17, 3, 99, 5, 8, 1, 2]
    pop = rlscape.evaluate_population(agent, thetas, episodes=3, seed=0, deterministic=deterministic, workers=1,
                                      member_seeds=seeds)
    two = rlscape.evaluate_population(agent, thetas, episodes=3, seed=0, deterministic=deterministic, workers=2,
                                      member_seeds=seeds)
    np.testing.assert_array_equal(pop.returns.values, two.returns.values)
    np.testing.assert_array_equal(pop.member_seed.values, seeds)
    for k, s in enumerate(seeds):
        one = rlscape.evaluate_population(agent, {n: v[k : k + 1] for n, v in thetas.items()}, episodes=3, seed=s,
                                          deterministic=deterministic, workers=1)
        np.testing.assert_array_equal(pop.returns.values[k], one.returns.values[0], err_msg=f"member {k}")
        np.testing.assert_array_equal(pop.value_mean.values[k], one.value_mean.values[0])
    with pytest.raises(RlscapeError, match="one seed per member"):
        rlscape.evaluate_population(agent, thetas, episodes=3, member_seeds=seeds[:2], workers=1)
