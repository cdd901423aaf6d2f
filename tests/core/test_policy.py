"""Loading agents: every supported SB3 algorithm, custom torch policies, Atari and MuJoCo pipelines."""

import ale_py
import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rlscape.core.directions import random_direction
from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import Budget, PopulationEvaluator
from rlscape.core.policy import Agent, load_checkpoint


def _run(agent: Agent, coords: np.ndarray, episodes: int = 2, deterministic: bool = False, params: str = "actor"):
    theta = agent.parameters(params)
    dirs = [random_direction(theta, 0, i).values for i in range(2)]
    ev = PopulationEvaluator(agent, theta, dirs, seed=0, deterministic=deterministic)
    try:
        return ev.evaluate(coords, Budget(episodes=episodes))
    finally:
        ev.close()


@pytest.mark.parametrize(
    "algo, env_id",
    [("ppo", "CartPole-v1"), ("a2c", "Pendulum-v1"), ("trpo", "CartPole-v1"), ("sac", "MountainCarContinuous-v0"),
     ("td3", "Pendulum-v1"), ("ddpg", "Pendulum-v1"), ("dqn", "Acrobot-v1")],
)
def test_every_algorithm_loads_and_evaluates(untrained, algo, env_id):
    agent = load_checkpoint(untrained(algo, env_id), env_id)
    assert agent.algo == algo  # detected from the zip
    coords = np.array([[0.0, 0.0], [1.0, -1.0]])
    for deterministic in (False, True):
        res = _run(agent, coords, deterministic=deterministic)
        assert res.returns.shape == (2, 2) and np.isfinite(res.returns).all()
        assert (res.lengths > 0).all()


def test_actor_and_critic_selection(untrained):
    agent = load_checkpoint(untrained("ppo", "CartPole-v1"), "CartPole-v1")
    actor, critic, both = (set(agent.parameters(w)) for w in ("actor", "critic", "all"))
    assert "action_net.weight" in actor and "log_std" not in actor
    assert "value_net.weight" in critic and not actor & critic and actor | critic == both
    sac = load_checkpoint(untrained("sac", "Pendulum-v1"), "Pendulum-v1")
    assert all(n.startswith("actor.") for n in sac.parameters("actor"))
    assert not any("target" in n for n in sac.parameters("actor"))
    with pytest.raises(RlscapeError, match="critic"):
        sac.parameters("critic")


class CleanRLAgent(nn.Module):
    """A CleanRL-style agent: plain torch, no SB3."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.actor = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 2))
        self.critic = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1))


def cleanrl_distribution(module: CleanRLAgent, obs: torch.Tensor) -> torch.distributions.Distribution:
    return torch.distributions.Categorical(logits=module.actor(obs))


def cleanrl_value(module: CleanRLAgent, obs: torch.Tensor) -> torch.Tensor:
    return module.critic(obs).squeeze(-1)


def test_custom_torch_policy_through_an_adapter():
    net = CleanRLAgent()
    agent = Agent.from_torch(net, cleanrl_distribution, "CartPole-v1", value=cleanrl_value)
    assert agent.kind == "categorical" and agent.has_value
    names = set(agent.parameters("all"))
    assert "actor.0.weight" in names and "critic.0.weight" in names
    res = _run(agent, np.array([[0.0, 0.0], [0.5, 0.5]]), episodes=3)
    np.testing.assert_array_equal(res.returns, res.lengths)
    assert np.isfinite(res.value_sums).all()


def test_gaussian_adapter_policy():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))

    def dist(m: nn.Module, obs: torch.Tensor) -> torch.distributions.Distribution:
        return torch.distributions.Normal(m(obs), torch.full((obs.shape[0], 1), 0.5))

    agent = Agent.from_torch(net, dist, "Pendulum-v1")
    assert agent.kind == "gaussian"
    res = _run(agent, np.zeros((1, 2)), episodes=2)
    assert (res.lengths == 200).all()


def test_atari_pipeline_matches_sb3_training_pipeline(tmp_path):
    """Our eval env gives exactly the observations SB3's training pipeline gives the policy."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecTransposeImage

    gym.register_envs(ale_py)  # SB3 makes the env before rlscape has registered the ALE ids
    env_id = "BreakoutNoFrameskip-v4"
    venv = VecFrameStack(make_atari_env(env_id, n_envs=1, seed=0), 4)
    model = PPO("CnnPolicy", venv, n_steps=16, batch_size=16, seed=0, device="cpu")
    model.save(tmp_path / "model.zip")
    agent = load_checkpoint(tmp_path / "model.zip", env_id)
    assert agent.env.atari and agent.env.frame_stack == 4 and agent.env.channel_first

    ours = agent.env.make()
    theirs = VecTransposeImage(VecFrameStack(make_atari_env(env_id, n_envs=1, seed=0), 4))
    theirs.seed(123)
    o_theirs = theirs.reset()[0]
    o_ours, _ = ours.reset(seed=123)
    np.testing.assert_array_equal(o_ours, o_theirs)
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = int(rng.integers(4))
        o_theirs, _, done, _ = theirs.step(np.array([a]))
        o_ours, _, term, trunc, _ = ours.step(a)
        if done[0] or term or trunc:
            break
        np.testing.assert_array_equal(o_ours, o_theirs[0])

    res = _run(agent, np.zeros((1, 2)), episodes=1)
    assert res.lengths[0, 0] > 0 and np.isfinite(res.returns).all()


def test_mujoco_plane_points(untrained):
    agent = load_checkpoint(untrained("ppo", "Hopper-v5"), "Hopper-v5")
    res = _run(agent, np.array([[0.0, 0.0], [0.5, 0.5], [-0.5, 0.5]]), episodes=2)
    assert (res.lengths > 0).all() and np.isfinite(res.returns).all()


def test_observation_normalisation_is_the_checkpoints_own(tmp_path):
    import pickle

    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=0))
    venv.obs_rms.mean = np.array([0.5, -0.2, 0.3])
    venv.obs_rms.var = np.array([2.0, 0.5, 4.0])
    model = PPO("MlpPolicy", venv, seed=0, device="cpu")
    (tmp_path / "ckpt").mkdir()
    model.save(tmp_path / "ckpt" / "model.zip")
    venv.save(tmp_path / "ckpt" / "vecnormalize.pkl")
    agent = load_checkpoint(tmp_path / "ckpt", "Pendulum-v1")
    env = agent.env.make()
    obs, _ = env.reset(seed=1)
    raw, _ = agent.env.__class__(agent.env.env_id).make().reset(seed=1)
    expected = np.clip((raw - venv.obs_rms.mean) / np.sqrt(venv.obs_rms.var + venv.epsilon), -10, 10)
    np.testing.assert_allclose(obs, expected, rtol=1e-5)  # float32 (x − μ)/σ vs float64: a few ulp (u = 6e-8)
    env.action_space.seed(0)
    for _ in range(5):  # frozen: statistics do not move while evaluating
        env.step(env.action_space.sample())
    np.testing.assert_array_equal(agent.env.obs_norm.mean, np.float32([0.5, -0.2, 0.3]))
    with open(tmp_path / "ckpt" / "vecnormalize.pkl", "rb") as fh:
        assert pickle.load(fh).obs_rms.mean.tolist() == [0.5, -0.2, 0.3]


def test_atari_evaluation_scores_whole_games_with_raw_rewards():
    from stable_baselines3.common.atari_wrappers import ClipRewardEnv, EpisodicLifeEnv

    from rlscape.core.envs import EnvSpec

    env = EnvSpec("BreakoutNoFrameskip-v4", atari=True, frame_stack=4, channel_first=True).make()
    chain = []
    while hasattr(env, "env"):
        chain.append(type(env))
        env = env.env
    assert EpisodicLifeEnv not in chain and ClipRewardEnv not in chain


def test_box2d_env(untrained):
    agent = load_checkpoint(untrained("ppo", "LunarLander-v3"), "LunarLander-v3")
    res = _run(agent, np.array([[0.0, 0.0], [0.5, -0.5]]), episodes=2)
    assert (res.lengths > 0).all() and np.isfinite(res.returns).all()


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_gsde_checkpoints_evaluate_their_mean_action(tmp_path, algo):
    import stable_baselines3 as sb3

    getattr(sb3, algo.upper())("MlpPolicy", "Pendulum-v1", use_sde=True, seed=0, device="cpu").save(tmp_path / "m.zip")
    agent = load_checkpoint(tmp_path / "m.zip", "Pendulum-v1")
    res = _run(agent, np.array([[0.0, 0.0], [0.5, 0.5]]), episodes=2, deterministic=True)
    assert np.isfinite(res.returns).all()
    with pytest.raises(RlscapeError, match="--deterministic"):
        _run(agent, np.zeros((1, 2)), deterministic=False)


def test_model_whose_saved_spaces_do_not_unpickle(tmp_path, untrained):
    """Like RL-Zoo models saved with the old `gym`: the env's spaces are used instead."""
    import json
    import zipfile

    src = untrained("ppo", "CartPole-v1")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp_path / "old.zip", "w") as zout:
        for item in zin.infolist():
            buf = zin.read(item.filename)
            if item.filename == "data":
                data = json.loads(buf)
                for key in ("observation_space", "action_space"):
                    data[key][":serialized:"] = "gASVAAAAAAAAAACMA2d5bZSMBXNwYWNlc5STlC4="  # unpicklable
                buf = json.dumps(data).encode()
            zout.writestr(item, buf)
    agent = load_checkpoint(tmp_path / "old.zip", "CartPole-v1")
    res = _run(agent, np.zeros((1, 2)), episodes=2)
    np.testing.assert_array_equal(res.returns, res.lengths)
