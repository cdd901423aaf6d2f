"""Training runs: whole checkpoints (optimizer state, replay buffer, VecNormalize) that reload into SB3,
continue training, resume after a crash, and load into rlscape for evaluation."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from rlscape.core.errors import RlscapeError
from rlscape.core.policy import load_checkpoint
from rlscape.core.runs import is_training_run, list_checkpoints, select_checkpoints
from rlscape.training.train import (
    LinearSchedule,
    _table,
    default_hyperparams,
    parse_hyperparams,
    resolve_hyperparams,
    sb3_kwargs,
    train,
)

# PPO on CartPole with the tuned defaults (8 envs × 32 steps = 256-step rollouts), fewer epochs to be quick:
# 256 / batch 256 = 1 minibatch per epoch, so 5 Adam steps per rollout.
PPO_HP = {"n_epochs": 5}
PPO_STEPS = 1024
DQN_HP = {"learning_starts": 100, "buffer_size": 2000, "train_freq": 4, "gradient_steps": 1, "batch_size": 32,
          "target_update_interval": 100, "policy_kwargs": {"net_arch": [32, 32]}}
SAC_HP = {"learning_starts": 50, "buffer_size": 1000, "batch_size": 32, "normalize": True,
          "policy_kwargs": {"net_arch": [16, 16]}}


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train("CartPole-v1", "ppo", steps=PPO_STEPS, save_every=256, out=tmp_path_factory.mktemp("t") / "ppo",
                 seed=3, hyperparams=PPO_HP, progress=False)


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train("CartPole-v1", "dqn", steps=600, save_every=200, out=tmp_path_factory.mktemp("t") / "dqn", seed=0,
                 hyperparams=DQN_HP, progress=False)


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train("Pendulum-v1", "sac", steps=150, save_every=75, out=tmp_path_factory.mktemp("t") / "sac", seed=0,
                 hyperparams=SAC_HP, progress=False)


def _adam_steps(state: dict) -> set[int]:
    return {int(s["step"]) for s in state["state"].values()}


def _zip_optimizer(path: Path, name: str = "policy.optimizer.pth") -> dict:
    with zipfile.ZipFile(path) as zf:
        assert name in zf.namelist()
        return torch.load(io.BytesIO(zf.read(name)), weights_only=False)


# -- layout ------------------------------------------------------------------------------------------

def test_ppo_run_layout_names_sort_by_step(ppo_run):
    ckpts = list_checkpoints(ppo_run)
    assert [s for s, _ in ckpts] == [0, 256, 512, 768, 1024]
    names = [p.name for _, p in ckpts]
    assert names == sorted(names) and all(len(n) == 10 for n in names)
    assert sorted(p.name for p in (ppo_run / "checkpoints").iterdir()) == names  # no temporary folders left
    assert is_training_run(ppo_run) and not is_training_run(ppo_run / "checkpoints")
    info = json.loads((ppo_run / "train.json").read_text())
    assert info["status"] == "complete" and info["final_step"] == PPO_STEPS and info["seed"] == 3
    assert info["hyperparams"]["n_epochs"] == 5 and info["hyperparams"]["learning_rate"] == "lin_0.001"  # override + default
    assert "stable-baselines3" in info["versions"] and info["n_envs"] == 8
    env = json.loads((ppo_run / "env.json").read_text())
    assert env["env_id"] == "CartPole-v1" and env["algo"] == "ppo" and env["atari"] is False and env["normalize"] is False
    for step, folder in ckpts:
        ck = json.loads((folder / "checkpoint.json").read_text())
        assert ck["step"] == step and ck["wall_time_s"] >= 0 and len(ck["recent_returns"]) <= 100
        assert not (folder / "replay_buffer.pkl").exists() and not (folder / "vecnormalize.pkl").exists()
    last = json.loads((ckpts[-1][1] / "checkpoint.json").read_text())
    assert last["episodes"] > 0 and all(r >= 1 for r in last["recent_returns"])  # CartPole: +1 per step


def test_optimizer_state_is_saved_and_reloads(ppo_run):
    from stable_baselines3 import PPO

    for step, folder in list_checkpoints(ppo_run):
        saved = _zip_optimizer(folder / "model.zip")
        # 5 epochs × 1 minibatch per 256-step rollout: Adam has taken 5·step/256 steps
        assert _adam_steps(saved) == ({5 * step // 256} if step else set())
        model = PPO.load(folder / "model.zip", device="cpu")
        loaded = model.policy.optimizer.state_dict()
        assert loaded["state"].keys() == saved["state"].keys()
        for k, s in saved["state"].items():
            for name in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(loaded["state"][k][name], s[name], rtol=0, atol=0)


def test_checkpoint_continues_training_in_sb3(ppo_run):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    folder = dict(list_checkpoints(ppo_run))[512]
    model = PPO.load(folder / "model.zip", env=make_vec_env("CartPole-v1", n_envs=8, seed=0), device="cpu")
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(512, reset_num_timesteps=False)  # (the linear schedules reach lr 0 at the very last update)
    assert model.num_timesteps == 1024
    assert _adam_steps(model.policy.optimizer.state_dict()) == {20}  # continues from 10, not from 0
    assert any(not torch.equal(before[k], v) for k, v in model.policy.state_dict().items())


def test_same_seed_same_checkpoints(tmp_path):
    from stable_baselines3 import PPO

    def run(name: str, seed: int, steps: int) -> Path:
        return train("CartPole-v1", "ppo", steps=steps, save_every=256, out=tmp_path / name, seed=seed, hyperparams=PPO_HP,
                     progress=False)

    def params(run: Path, step: int) -> dict[str, torch.Tensor]:
        return PPO.load(dict(list_checkpoints(run))[step] / "model.zip", device="cpu").policy.state_dict()

    a, b, c = run("a", 3, 512), run("b", 3, 512), run("c", 4, 256)
    for step in (0, 256, 512):
        pa, pb = params(a, step), params(b, step)
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
        ra, rb = (json.loads((dict(list_checkpoints(x))[step] / "checkpoint.json").read_text()) for x in (a, b))
        assert ra["recent_returns"] == rb["recent_returns"] and ra["episodes"] == rb["episodes"]
    pa, pc = params(a, 0), params(c, 0)
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)


# -- off-policy: replay buffer -----------------------------------------------------------------------

def test_dqn_replay_buffer_is_saved_and_reloads(dqn_run):
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env

    ckpts = list_checkpoints(dqn_run)
    assert [s for s, _ in ckpts] == [0, 200, 400, 600]
    for step, folder in ckpts:
        assert (folder / "replay_buffer.pkl").is_file()
        model = DQN.load(folder / "model.zip", device="cpu")
        model.load_replay_buffer(folder / "replay_buffer.pkl")
        assert model.replay_buffer.size() == step  # every transition up to the checkpoint, none more
        assert model.num_timesteps == step
        saved = _zip_optimizer(folder / "model.zip")
        # after learning_starts=100, one gradient step every 4 env steps
        assert _adam_steps(saved) == ({(step - 100) // 4} if step > 100 else set())
    # a middle checkpoint continues training with its buffer
    folder = dict(ckpts)[400]
    model = DQN.load(folder / "model.zip", env=make_vec_env("CartPole-v1", n_envs=1, seed=0), device="cpu")
    model.load_replay_buffer(folder / "replay_buffer.pkl")
    obs = model.replay_buffer.observations[:400].copy()
    model.learn(100, reset_num_timesteps=False)
    assert model.num_timesteps == 500 and model.replay_buffer.size() == 500
    np.testing.assert_array_equal(model.replay_buffer.observations[:400], obs)
    assert _adam_steps(model.policy.optimizer.state_dict()) == {100}


def test_no_replay_buffer_option(tmp_path):
    run = train("CartPole-v1", "dqn", steps=100, save_every=50, out=tmp_path / "r", hyperparams=DQN_HP, replay_buffer=False,
                progress=False)
    # train_freq=4: checkpoints fall on the first 4-step boundary at or past each multiple of 50
    assert [s for s, _ in list_checkpoints(run)] == [0, 52, 100]
    assert not list(run.glob("checkpoints/*/replay_buffer.pkl"))


def test_sac_with_normalisation_saves_statistics_and_buffer(sac_run):
    import pickle

    ckpts = list_checkpoints(sac_run)
    assert [s for s, _ in ckpts] == [0, 75, 150]
    assert json.loads((sac_run / "env.json").read_text())["normalize"] is True
    counts = []
    for _, folder in ckpts:
        assert (folder / "replay_buffer.pkl").is_file() and (folder / "vecnormalize.pkl").is_file()
        with open(folder / "vecnormalize.pkl", "rb") as fh:
            counts.append(pickle.load(fh).obs_rms.count)
    assert counts[0] < counts[1] < counts[2]  # each checkpoint holds its own statistics
    agent = load_checkpoint(ckpts[-1][1])
    with open(ckpts[-1][1] / "vecnormalize.pkl", "rb") as fh:
        np.testing.assert_allclose(agent.env.obs_norm.mean, pickle.load(fh).obs_rms.mean, rtol=1e-6)


# -- resume ------------------------------------------------------------------------------------------

def test_resume_continues_from_last_checkpoint_after_a_crash(ppo_run, tmp_path):
    import shutil

    run = tmp_path / "crashed"
    shutil.copytree(ppo_run, run)
    # a crash after the checkpoint at 512: later checkpoints never written, one half-written
    for step in (768, 1024):
        shutil.rmtree(run / "checkpoints" / f"{step:010d}")
    half = run / "checkpoints" / ".tmp-0000000768"
    half.mkdir()
    (half / "model.zip").write_bytes(b"partial")
    info = json.loads((run / "train.json").read_text())
    (run / "train.json").write_text(json.dumps(dict(info, status="running")))
    assert [s for s, _ in list_checkpoints(run)] == [0, 256, 512]
    saved = {s: (p / "model.zip").read_bytes() for s, p in list_checkpoints(run)}

    train("CartPole-v1", "ppo", steps=PPO_STEPS, save_every=256, out=run, seed=3, hyperparams=PPO_HP, resume=True, progress=False)
    ckpts = list_checkpoints(run)
    assert [s for s, _ in ckpts] == [0, 256, 512, 768, 1024]
    assert not half.exists()
    assert all((p / "model.zip").read_bytes() == saved[s] for s, p in ckpts if s <= 512)  # nothing overwritten
    assert _adam_steps(_zip_optimizer(ckpts[-1][1] / "model.zip")) == {20}  # optimizer continued
    info = json.loads((run / "train.json").read_text())
    assert info["status"] == "complete" and info["final_step"] == PPO_STEPS and info["resumed"][0]["at_step"] == 512
    ck = json.loads((ckpts[-1][1] / "checkpoint.json").read_text())
    assert ck["episodes"] > json.loads((ckpts[2][1] / "checkpoint.json").read_text())["episodes"]
    # resuming a finished run does nothing; extending it trains on
    train("CartPole-v1", "ppo", steps=PPO_STEPS, save_every=256, out=run, seed=3, hyperparams=PPO_HP, resume=True, progress=False)
    assert [s for s, _ in list_checkpoints(run)][-1] == PPO_STEPS


def test_resume_off_policy_restores_buffer(dqn_run, tmp_path):
    import shutil

    from stable_baselines3 import DQN

    run = tmp_path / "dqn"
    shutil.copytree(dqn_run, run)
    shutil.rmtree(run / "checkpoints" / f"{600:010d}")
    train("CartPole-v1", "dqn", steps=600, save_every=200, out=run, seed=0, hyperparams=DQN_HP, resume=True, progress=False)
    folder = list_checkpoints(run)[-1][1]
    model = DQN.load(folder / "model.zip", device="cpu")
    model.load_replay_buffer(folder / "replay_buffer.pkl")
    assert model.num_timesteps == 600 and model.replay_buffer.size() == 600  # 400 restored + 200 new
    assert _adam_steps(_zip_optimizer(folder / "model.zip")) == {125}


# -- into rlscape ------------------------------------------------------------------------------------

def test_every_checkpoint_loads_and_evaluates(ppo_run, dqn_run):
    import rlscape

    for run in (ppo_run, dqn_run):
        for step, folder in list_checkpoints(run):
            agent = load_checkpoint(folder)
            assert agent.info["num_timesteps"] == step and agent.env.env_id == "CartPole-v1"
    agent = load_checkpoint(list_checkpoints(ppo_run)[-1][1])
    ds = rlscape.line(agent, points=3, episodes=2, seed=0, workers=1)
    assert ds.return_mean.shape == (3,) and np.isfinite(ds.return_mean.values).all()
    assert (ds.return_mean.values >= 1).all()


def test_select_checkpoints(ppo_run):
    assert [s for s, _ in select_checkpoints(ppo_run, None)] == [0, 256, 512, 768, 1024]
    assert [s for s, _ in select_checkpoints(ppo_run, "all")] == [0, 256, 512, 768, 1024]
    assert [s for s, _ in select_checkpoints(ppo_run, "1024, 0")] == [0, 1024]
    with pytest.raises(RlscapeError, match="available steps: 0, 256, 512, 768, 1024"):
        select_checkpoints(ppo_run, "300")
    with pytest.raises(RlscapeError, match="integers"):
        select_checkpoints(ppo_run, "last")


def test_atari_cnn_run_rebuilds_the_same_pipeline(tmp_path):
    """Off-policy, CNN, Atari preprocessing, frame stacking and an image replay buffer in one tiny run."""
    run = train("PongNoFrameskip-v4", "dqn", steps=32, save_every=16, out=tmp_path / "dqn", n_envs=1, device="cpu",
                hyperparams={"learning_starts": 8, "buffer_size": 64, "train_freq": 4}, progress=False)
    env = json.loads((run / "env.json").read_text())
    assert env["atari"] is True and env["frame_stack"] == 4 and env["hyperparams"]["policy"] == "CnnPolicy"
    agent = load_checkpoint(list_checkpoints(run)[-1][1])
    assert agent.observation_space.shape == (4, 84, 84) and agent.env.atari and agent.env.channel_first
    assert [s for s, _ in list_checkpoints(run)] == [0, 16, 32]
    assert (list_checkpoints(run)[-1][1] / "replay_buffer.pkl").is_file()


# -- hyperparameters ---------------------------------------------------------------------------------

def test_shipped_defaults_resolve_and_build_for_every_entry():
    table = _table()
    for algo, entries in table.items():
        for key in entries:
            env_id = "PongNoFrameskip-v4" if key == "atari" else ("SomeUnknownEnv-v0" if key == "default" else key)
            hp = resolve_hyperparams(algo, env_id)
            json.dumps(hp)
            space = gym.spaces.Discrete(2) if algo == "dqn" or key in ("CartPole-v1", "Acrobot-v1", "MountainCar-v0",
                                                                       "LunarLander-v3", "atari") and algo in ("ppo", "a2c", "trpo") \
                else gym.spaces.Box(-1, 1, (3,))
            kwargs = sb3_kwargs(algo, hp, space)
            assert "policy" not in kwargs and "n_envs" not in kwargs


def test_defaults_overrides_and_formats():
    hp = default_hyperparams("ppo", "CartPole-v1")
    assert hp["n_envs"] == 8 and hp["n_steps"] == 32 and hp["gamma"] == 0.98 and hp["policy"] == "MlpPolicy"
    assert default_hyperparams("dqn", "PongNoFrameskip-v4")["policy"] == "CnnPolicy"
    assert default_hyperparams("sac", "NotAnEnv-v0") == {"policy": "MlpPolicy", "n_envs": 1}
    hp = resolve_hyperparams("ppo", "CartPole-v1", {"gamma": 0.9, "n_timesteps": 1e6,
                                                    "policy_kwargs": "dict(net_arch=[dict(pi=[8], vf=[8])], activation_fn=nn.ReLU)"},
                             n_envs=2)
    assert hp["gamma"] == 0.9 and hp["n_envs"] == 2 and "n_timesteps" not in hp
    assert hp["policy_kwargs"] == {"net_arch": {"pi": [8], "vf": [8]}, "activation_fn": "nn.ReLU"}
    kw = sb3_kwargs("ppo", hp, gym.spaces.Discrete(2))
    assert kw["policy_kwargs"]["activation_fn"] is torch.nn.ReLU
    assert isinstance(kw["learning_rate"], LinearSchedule) and kw["learning_rate"](0.5) == pytest.approx(5e-4)
    kw = sb3_kwargs("td3", resolve_hyperparams("td3", "Pendulum-v1", {"train_freq": [1, "episode"]}), gym.spaces.Box(-2, 2, (1,)))
    assert kw["train_freq"] == (1, "episode") and kw["action_noise"]._sigma.tolist() == [0.1]


def test_parse_hyperparams_sources(tmp_path):
    f = tmp_path / "hp.yaml"
    f.write_text(yaml.safe_dump({"CartPole-v1": {"gamma": 0.95}, "Pendulum-v1": {"gamma": 0.5}}))
    assert parse_hyperparams(str(f), "CartPole-v1") == {"gamma": 0.95}  # Zoo layout
    assert parse_hyperparams('{"learning_rate": 0.001}') == {"learning_rate": 0.001}
    assert parse_hyperparams("gamma: 0.9") == {"gamma": 0.9}
    for bad, match in (("{learning_rate: [1,", "not valid YAML"), ("[1, 2]", "mapping"), ("missing.yaml", "does not exist")):
        with pytest.raises(RlscapeError, match=match):
            parse_hyperparams(bad)


# -- bad input: one line, nothing written ------------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "match"),
    [
        (dict(env_id="Pendulum-v1", algo="dqn"), "DQN cannot act in Pendulum-v1.*use one of ppo, a2c, trpo, sac, td3, ddpg"),
        (dict(env_id="CartPole-v1", algo="sac"), "SAC cannot act in CartPole-v1"),
        (dict(algo="reinforce"), "unknown algorithm 'reinforce'"),
        (dict(env_id="NoSuchEnv-v9"), "unknown env id"),
        (dict(save_every=5000), "--save-every 5000 is larger than --steps 1000"),
        (dict(hyperparams="{gamma: 0.9"), "not valid YAML"),
        (dict(hyperparams='{"gamam": 0.9}'), "unknown hyperparameter 'gamam' for PPO"),
        (dict(hyperparams='{"learning_rate": "lin_fast"}'), "lin_X"),
        (dict(hyperparams='{"seed": 1}'), "set by rlscape"),
        (dict(hyperparams='{"batch_size": 0}'), "cannot build PPO"),
        (dict(hyperparams='{"policy_kwargs": {"activation_fn": "nn.Nope"}}'), "nn.Nope"),
        (dict(device="gpu"), "--device must be"),
        (dict(steps=0), "--steps must be a positive integer"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args, match, tmp_path):
    kw = dict(env_id="CartPole-v1", algo="ppo", steps=1000, save_every=500, out=tmp_path / "run", progress=False) | args
    env_id, algo = kw.pop("env_id"), kw.pop("algo")
    with pytest.raises(RlscapeError, match=match) as err:
        train(env_id, algo, **kw)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def test_existing_run_is_never_touched_without_resume(ppo_run):
    before = {p: p.stat().st_mtime_ns for p in ppo_run.rglob("*")}
    with pytest.raises(RlscapeError, match="pass --resume"):
        train("CartPole-v1", "ppo", steps=PPO_STEPS, save_every=256, out=ppo_run, seed=3, hyperparams=PPO_HP, progress=False)
    with pytest.raises(RlscapeError, match=r"different training run \(differs in: seed\)"):
        train("CartPole-v1", "ppo", steps=PPO_STEPS, save_every=256, out=ppo_run, seed=4, hyperparams=PPO_HP, resume=True,
              progress=False)
    assert {p: p.stat().st_mtime_ns for p in ppo_run.rglob("*")} == before


def test_checkpoints_of_the_former_module_path_still_load():
    """Checkpoints trained before training moved to rlscape.training pickle their schedules under the old path."""
    import pickle

    from rlscape.training.train import LinearSchedule

    blob = pickle.dumps(LinearSchedule(1e-3)).replace(b"rlscape.training.train", b"rlscape.analyses.train")
    sched = pickle.loads(blob)
    assert sched(0.5) == LinearSchedule(1e-3)(0.5)
