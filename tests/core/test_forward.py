"""Batched forward strategies against the reference: one ``functional_call`` per point."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from rlscape.core.forward import STRATEGIES, choose_strategy, make_forward
from rlscape.core.policy import _ActorCriticHead, load_checkpoint
from tests.core.rounding import assert_within_rounding


def _nature_cnn_head() -> nn.Module:
    """SB3's PPO CnnPolicy (NatureCNN, shared features, policy + value) on 4×84×84 frames."""
    from stable_baselines3.common.policies import ActorCriticCnnPolicy

    torch.manual_seed(0)
    obs_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    policy = ActorCriticCnnPolicy(obs_space, gym.spaces.Discrete(6), lambda _: 0.0)
    policy.set_training_mode(False)
    return _ActorCriticHead(policy, gaussian=False)


class _TiedConv(nn.Module):
    """A small conv head whose output layer reuses (ties) a parameter of another layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(3 * 4 * 4, 5)
        self.out = nn.Linear(5, 5, bias=False)
        self.out2 = nn.Linear(5, 5, bias=False)
        self.out2.weight = self.out.weight

    def forward(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.fc(torch.relu(self.conv(obs)).flatten(1))
        return {"logits": self.out(h) + self.out2(torch.tanh(h))}


def _stacked(head: nn.Module, K: int, names: list[str] | None = None, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    own = dict(head.named_parameters())
    return {n: own[n].detach()[None] + 0.1 * torch.randn((K, *own[n].shape), generator=g) for n in (names or own)}


def _rand(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    """Seeded uniform observations in [0, scale): the same inputs on every run and every machine."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * scale


def _reference(head: nn.Module, params: dict[str, torch.Tensor], obs: torch.Tensor) -> dict[str, torch.Tensor]:
    outs = [functional_call(head, {n: v[k] for n, v in params.items()}, (obs[k],)) for k in range(obs.shape[0])]
    return {key: torch.stack([o[key] for o in outs]) for key in outs[0]}


@pytest.fixture(scope="module")
def heads(cartpole_ppo) -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """name → (head, observation shape): an MLP, SB3's NatureCNN, a conv head with a tied weight."""
    return {"mlp": (load_checkpoint(cartpole_ppo).head, (4,)), "nature_cnn": (_nature_cnn_head(), (4, 84, 84)),
            "tied_conv": (_TiedConv(), (2, 6, 6))}


def test_strategy_follows_the_head_structure(heads):
    assert choose_strategy(heads["mlp"][0]) == "vmap"
    assert choose_strategy(heads["nature_cnn"][0]) == "loop"
    assert choose_strategy(heads["tied_conv"][0]) == "loop"
    with pytest.raises(ValueError, match="unknown forward strategy"):
        make_forward(heads["mlp"][0], "jit")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategies_match_one_functional_call_per_point(heads, strategy):
    for name, (head, shape) in heads.items():
        K, E = 3, 5
        obs = _rand(K, E, *shape, seed=2, scale=255 if name == "nature_cnn" else 1)
        for names in (None, [n for n, _ in head.named_parameters()][:2]):  # all parameters, or only some moved
            params = _stacked(head, K, names)
            with torch.inference_mode():
                got = make_forward(head, strategy)(params, obs)
                want = _reference(head, params, obs)
            for key in want:
                assert got[key].shape[:2] == (K, E), (name, key)
            assert_within_rounding(head, got, want, f"{name} {strategy}")  # other kernels: rounding differs


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_point_does_not_depend_on_the_other_points_of_the_batch(heads, strategy):
    for name, (head, shape) in heads.items():
        K, E = 4, 4
        params = _stacked(head, K)
        obs = _rand(K, E, *shape, seed=3)
        forward = make_forward(head, strategy)
        perm = torch.tensor([2, 0, 3, 1])
        with torch.inference_mode():
            full = forward(params, obs)
            alone = forward({n: v[1:2] for n, v in params.items()}, obs[1:2])
            permuted = forward({n: v[perm] for n, v in params.items()}, obs[perm])
        if strategy == "loop":  # the same kernels on the same data: bit for bit
            for key in full:
                assert torch.equal(alone[key][0], full[key][1]) and torch.equal(permuted[key], full[key][perm]), (name, key)
        else:  # vmap: another batch may take another kernel
            assert_within_rounding(head, {k: v[0] for k, v in alone.items()}, {k: v[1] for k, v in full.items()}, name)
            assert_within_rounding(head, permuted, {k: v[perm] for k, v in full.items()}, name)


def test_loop_never_touches_the_users_module():
    head = _TiedConv()
    before = {n: (p, p.detach().clone()) for n, p in head.named_parameters()}
    forward = make_forward(head, "loop")
    params = _stacked(head, 3)
    obs = _rand(3, 2, 2, 6, 6, seed=4)
    forward(params, obs)
    for n, p in head.named_parameters():
        assert p is before[n][0] and torch.equal(p, before[n][1])
    assert head.out2.weight is head.out.weight
    # after a failure half-way the private copy is restored too: the next call is still right
    with pytest.raises(RuntimeError):
        forward(params, _rand(3, 2, 7, 6, 6, seed=5))
    with pytest.raises(KeyError, match="no such parameters"):
        forward({"nope": params["conv.weight"]}, obs)
    assert torch.equal(forward({}, obs)["logits"][0], head(obs[0])["logits"])  # the same module and kernel
    assert torch.equal(forward(params, obs)["logits"], _reference(head, params, obs)["logits"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_shared_modules_are_left_clean(heads, strategy):
    """SB3 registers a shared features extractor under three names; vmap + functional_call used to
    leave batched tensors in such a module. Our strategies work on a private copy."""
    head, shape = heads["nature_cnn"]
    assert head.p.features_extractor is head.p.pi_features_extractor
    before = {n: p.detach().clone() for n, p in head.named_parameters()}
    forward = make_forward(head, strategy)
    params = _stacked(head, 2)
    obs = _rand(2, 3, *shape, seed=6, scale=255)
    only_head = {n: v for n, v in params.items() if n.startswith("p.action_net")}
    with torch.inference_mode():
        forward(params, obs)
        # a later call that moves only the action layer sees the features extractor's own values
        # (vmap runs the shared convolutions on all K·E frames at once: other kernels, other rounding;
        # a module left dirty would move the logits by O(1), a thousand times the rounding bound)
        assert_within_rounding(head, {"logits": forward(only_head, obs)["logits"]},
                               {"logits": _reference(head, only_head, obs)["logits"]}, strategy)
    for n, p in head.named_parameters(remove_duplicate=False):
        assert torch.equal(p, before[n.replace("pi_features", "features").replace("vf_features", "features")]), n


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_heads_that_cannot_be_copied_are_evaluated_without_touching_them(strategy):
    """gSDE policies hold non-leaf tensors, which ``deepcopy`` refuses: the head itself is used."""
    head = _TiedConv()
    head.noise_matrix = torch.ones(2, requires_grad=True) * 2  # a non-leaf tensor, as SB3's gSDE keeps
    forward = make_forward(head, strategy)
    assert forward.module is head
    before = {n: p.detach().clone() for n, p in head.named_parameters()}
    params = _stacked(head, 3)
    obs = _rand(3, 2, 2, 6, 6, seed=7)
    with torch.inference_mode():
        got = forward(params, obs)
    assert_within_rounding(head, {"logits": got["logits"]}, {"logits": _reference(head, params, obs)["logits"]}, strategy)
    for n, p in head.named_parameters():
        torch.testing.assert_close(p + 0, before[n], rtol=0, atol=0)
    assert head.out2.weight is head.out.weight


def test_cnn_agent_results_do_not_depend_on_the_batch(tmp_path):
    """Through the evaluator: a CNN agent's point gives the same games alone as among others."""
    import ale_py
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from rlscape.core.directions import random_direction
    from rlscape.core.evaluate import Budget, PopulationEvaluator

    env_id = "BreakoutNoFrameskip-v4"
    gym.register_envs(ale_py)
    venv = VecFrameStack(make_atari_env(env_id, n_envs=1, seed=0), 4)
    PPO("CnnPolicy", venv, n_steps=16, batch_size=16, seed=0, device="cpu").save(tmp_path / "model.zip")
    venv.close()
    agent = load_checkpoint(tmp_path / "model.zip", env_id)
    theta = agent.parameters("actor")
    dirs = [random_direction(theta, 0, i).values for i in range(2)]
    coords = np.array([[0.0, 0.0], [0.4, -0.3], [-0.5, 0.2]])  # small: untrained policies that still FIRE

    def run(c: np.ndarray):
        ev = PopulationEvaluator(agent, theta, dirs, seed=5, deterministic=False)
        assert isinstance(ev._forward, type(make_forward(agent.head, "loop")))
        try:
            return ev.evaluate(c, Budget(episodes=1))
        finally:
            ev.close()

    together = run(coords)
    alone = run(coords[1:2])
    np.testing.assert_array_equal(alone.returns[0], together.returns[1])
    np.testing.assert_array_equal(alone.lengths[0], together.lengths[1])
    np.testing.assert_array_equal(alone.value_sums[0], together.value_sums[1])  # one point's own kernels: bit for bit
    assert len(np.unique(together.value_sums)) == 3  # and each point is evaluated with its own parameters


def test_loop_computes_only_the_active_points_and_the_same_numbers():
    head = _nature_cnn_head()
    fwd = make_forward(head, "loop")
    params = _stacked(head, 4)
    obs = _rand(4, 2, 4, 84, 84, seed=8, scale=255)
    full = fwd(params, obs)
    active = np.array([False, True, False, True])
    part = fwd(params, obs, active=active)
    for key in full:
        assert torch.equal(part[key][active], full[key][active])  # bit for bit
        assert not part[key][~active].any()  # never computed
