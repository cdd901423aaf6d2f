"""The batched evaluator against the truth: every reward counted, SB3's own evaluator, CRN."""

import numpy as np
import pytest
import torch

from rlscape.core.directions import random_direction
from rlscape.core.evaluate import Budget, PopulationEvaluator
from rlscape.core.execute import evaluate_points
from rlscape.core.policy import Agent, load_checkpoint
from rlscape.core.threads import single_threaded
from tests.core.rounding import assert_within_rounding


def _plane_coords(g: int = 3, m: float = 0.6) -> np.ndarray:
    a = np.linspace(-m, m, g)
    return np.stack([x.ravel() for x in np.meshgrid(a, a, indexing="ij")], axis=1)


def _evaluator(agent, seed=0, deterministic=False, max_envs=512):
    theta = agent.parameters("actor")
    dirs = [random_direction(theta, seed, i).values for i in range(2)]
    return PopulationEvaluator(agent, theta, dirs, seed=seed, deterministic=deterministic, max_envs=max_envs)


def test_cartpole_every_reward_counts(cartpole_ppo):
    agent = load_checkpoint(cartpole_ppo)
    res = _evaluator(agent).evaluate(_plane_coords(), Budget(episodes=6))
    assert res.returns.shape == (9, 6)
    # CartPole pays +1 on every step including the terminal one: return == length everywhere
    np.testing.assert_array_equal(res.returns, res.lengths)
    assert res.env_steps == res.lengths.sum()


def test_results_do_not_depend_on_batching(cartpole_ppo):
    agent = load_checkpoint(cartpole_ppo)
    coords = _plane_coords()
    a = _evaluator(agent, max_envs=512).evaluate(coords, Budget(episodes=5))
    b = _evaluator(agent, max_envs=3).evaluate(coords, Budget(episodes=5))  # rectangles of 1 point × 3 episodes
    c = _evaluator(agent).evaluate(coords[::-1], Budget(episodes=5))
    np.testing.assert_array_equal(a.returns, b.returns)
    np.testing.assert_array_equal(a.returns, c.returns[::-1])
    # the forward pass sees blocks of a fixed shape: critic values are bit for bit the same too
    np.testing.assert_array_equal(a.value_sums, b.value_sums)
    np.testing.assert_array_equal(a.td_sq_sums, c.td_sq_sums[::-1])


@pytest.mark.parametrize(("algo", "env_id"), [("ppo", "CartPole-v1"), ("ppo", "Pendulum-v1"), ("sac", "Pendulum-v1")])
def test_max_envs_and_workers_do_not_change_a_single_number(untrained, algo, env_id):
    """Rectangles of 4 envs or of 512, one worker or two: the same plane, bit for bit. Before the
    fixed row blocks, Pendulum's returns moved by up to 9e-4 (PPO) and 3.8e-2 (SAC): the batched
    products' kernels, and so their rounding, changed with the number of episodes per rectangle."""
    agent = load_checkpoint(untrained(algo, env_id), env_id)
    theta = agent.parameters("all" if agent.has_value else "actor")
    dirs = [random_direction(theta, 0, i).values for i in range(2)]
    coords = _plane_coords(5, 1.0)
    runs = []
    for max_envs, workers in ((4, 1), (512, 1), (37, 2)):
        got = {}

        def keep(points, res, got=got):
            for k, p in enumerate(points):
                got[int(p)] = (res.returns[k], res.value_sums[k], res.td_sq_sums[k])

        evaluate_points(agent, theta, dirs, coords, np.arange(len(coords)), Budget(episodes=10), seed=2,
                        deterministic=False, workers=workers, max_envs=max_envs, on_chunk=keep)
        runs.append(np.array([np.concatenate(got[k]) for k in range(len(coords))]))
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


def test_finished_points_leave_the_forward_pass_without_changing_a_number(cartpole_ppo):
    """40 explicit members of one episode each end at different steps; the rectangle of 40 drops
    finished members from its forward pass (the numpy chain computes each point with its own BLAS
    calls) and must give what rectangles of one member give, values included."""
    agent = load_checkpoint(cartpole_ppo)
    theta = agent.parameters("all")
    rng = np.random.default_rng(0)
    members = {n: (v[None] + 0.3 * rng.standard_normal((40, *v.shape))).astype(np.float32) for n, v in theta.items()}
    sizes = []  # the points each forward call computes
    runs = []
    for max_envs in (1, 40):
        e = PopulationEvaluator(agent, {n: theta[n] for n in members}, members=members, seed=1, deterministic=True,
                                max_envs=max_envs)
        forward = e._forward
        e._forward = lambda params, x, forward=forward: sizes.append(x.shape[0]) or forward(params, x)
        runs.append(e.evaluate(np.arange(40), Budget(episodes=1)))
        e.close()
    assert len(set(runs[1].lengths.ravel().tolist())) > 5  # the members do end at different steps
    np.testing.assert_array_equal(runs[0].returns, runs[1].returns)
    np.testing.assert_array_equal(runs[0].value_sums, runs[1].value_sums)
    np.testing.assert_array_equal(runs[0].td_sq_sums, runs[1].td_sq_sums)
    wide = [k for k in sizes if k > 1]
    assert wide[0] == 40 and min(wide) < 10  # the 40-member rectangle shrank as members finished


def test_rectangles_hold_as_many_distinct_points_as_the_cache_does(cartpole_ppo):
    from rlscape.core.evaluate import PARAM_CACHE_BYTES

    agent = load_checkpoint(cartpole_ppo)
    theta = agent.parameters("all")
    big = {n: np.zeros((3, *v.shape), np.float32) for n, v in theta.items()}
    e = PopulationEvaluator(agent, {n: theta[n] for n in big}, members=big, seed=0, deterministic=True)
    per_point = sum(v[0].nbytes for v in big.values())
    assert e.cache_points == PARAM_CACHE_BYTES // per_point
    e.close()


def test_single_output_products_do_not_depend_on_the_batch():
    """The property the fixed row blocks rely on, checked on this machine's BLAS: at a fixed number of
    rows a batched product's row does not depend on the batch count or on its position."""
    from rlscape.core.evaluate import Budget, block_rows

    assert [block_rows(Budget(episodes=e)) for e in (1, 4, 10, 50, 64, 100, 1000)] == [1, 4, 10, 50, 64, 50, 63]
    assert block_rows(Budget(steps=1000)) == 4  # the first round of a steps budget: never padded
    with single_threaded():  # as the evaluator computes
        _check_row_invariance()


def _check_row_invariance() -> None:
    from rlscape.core.fastmlp import _batched_linear, _matmul_np

    def numpy_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # the evaluator's path (no autograd)
        return torch.from_numpy(_matmul_np(x.numpy(), w.numpy().swapaxes(-1, -2)))

    def shared_numpy_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # one weight for all points
        return torch.from_numpy(_matmul_np(x.numpy(), w[0].numpy().T))

    g = torch.Generator().manual_seed(0)
    for linear in (_batched_linear, numpy_linear, shared_numpy_linear):
        for rows in (1, 2, 3, 4, 8, 10, 16, 50, 63, 64):
            if linear is _batched_linear and rows < 8:  # torch's path serves autograd only (blocks of ≥ 8 rows there)
                continue
            for n_in, n_out in ((4, 64), (64, 64), (64, 1), (256, 2), (3, 1), (64, 3), (256, 6), (400, 17), (11, 300)):
                w = torch.randn(40, n_out, n_in, generator=g)
                if linear is shared_numpy_linear:
                    w = w[:1].expand(40, -1, -1)
                x = torch.randn(40, rows, n_in, generator=g)
                ref = linear(x[:1], w[:1])
                for count in (2, 4, 8, 17, 40):
                    assert torch.equal(linear(x[:count], w[:count])[:1], ref), (linear.__name__, rows, n_in, n_out, count)
                for _ in range(3):
                    perm = torch.randperm(rows, generator=g)
                    assert torch.equal(linear(x[:1, perm], w[:1]), ref[:, perm]), (linear.__name__, rows, n_in, n_out)


def test_common_random_numbers(cartpole_ppo):
    """Episode e is the same experiment at every point: a point repeated anywhere gives the same row."""
    agent = load_checkpoint(cartpole_ppo)
    coords = np.array([[0.3, -0.2], [0.0, 0.0], [0.3, -0.2]])
    res = _evaluator(agent).evaluate(coords, Budget(episodes=8))
    np.testing.assert_array_equal(res.returns[0], res.returns[2])
    assert len(np.unique(res.returns[1])) > 1  # episodes differ from each other


def test_steps_budget_finishes_the_episode_in_progress(cartpole_ppo):
    agent = load_checkpoint(cartpole_ppo)
    res = _evaluator(agent).evaluate(_plane_coords(3, 1.0), Budget(steps=700))
    for row in res.lengths:
        ran = row[row > 0]
        assert ran.sum() >= 700 and ran[:-1].sum() < 700
    # the same episodes as an episodes budget would run: a prefix of episode ids
    k = 4
    n = int((res.lengths[k] > 0).sum())
    ref = _evaluator(agent).evaluate(_plane_coords(3, 1.0)[k : k + 1], Budget(episodes=n))
    np.testing.assert_array_equal(ref.returns[0], res.returns[k, :n])


def test_workers_do_not_change_results(cartpole_ppo):
    agent = load_checkpoint(cartpole_ppo)
    theta = agent.parameters("actor")
    dirs = [random_direction(theta, 0, i).values for i in range(2)]
    coords = _plane_coords(5)
    out = {}
    for workers in (1, 2):
        got = np.full((len(coords), 4), np.nan)

        def on_chunk(pts, res, got=got):
            got[pts] = res.returns

        evaluate_points(agent, theta, dirs, coords, np.arange(len(coords)), Budget(episodes=4), seed=3,
                        deterministic=False, workers=workers, max_envs=8, on_chunk=on_chunk)
        out[workers] = got
    assert not np.isnan(out[1]).any()
    np.testing.assert_array_equal(out[1], out[2])


def _agree(ours: np.ndarray, theirs: np.ndarray) -> None:
    se = np.sqrt(ours.var(ddof=1) / ours.size + theirs.var(ddof=1) / theirs.size)
    assert abs(ours.mean() - theirs.mean()) <= 4 * se + 1e-9, (ours.mean(), theirs.mean(), se)


@pytest.mark.parametrize("deterministic", [False, True])
def test_centre_agrees_with_sb3_evaluate_policy(cartpole_ppo, deterministic):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    agent = load_checkpoint(cartpole_ppo)
    ours = _evaluator(agent, seed=11, deterministic=deterministic).evaluate(np.zeros((1, 2)), Budget(episodes=150)).returns[0]
    model = PPO.load(cartpole_ppo / "model.zip", device="cpu")
    env = make_vec_env("CartPole-v1", n_envs=1, seed=123)
    torch.manual_seed(0)
    theirs, _ = evaluate_policy(model, env, n_eval_episodes=150, deterministic=deterministic, return_episode_rewards=True)
    _agree(ours, np.asarray(theirs, float))
    assert ours.std() > 0  # the comparison is not between constants


def test_continuous_actions_agree_with_sb3(untrained):
    """Gaussian policy with clipping to the Box, on Pendulum."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    path = untrained("ppo", "Pendulum-v1")
    agent = load_checkpoint(path, "Pendulum-v1")
    ours = _evaluator(agent, seed=5).evaluate(np.zeros((1, 2)), Budget(episodes=60)).returns[0]
    model = PPO.load(path, device="cpu")
    torch.manual_seed(0)
    theirs, _ = evaluate_policy(model, make_vec_env("Pendulum-v1", n_envs=4, seed=9), n_eval_episodes=60,
                                deterministic=False, return_episode_rewards=True)
    _agree(ours, np.asarray(theirs, float))


def test_model_is_never_modified(cartpole_ppo):
    agent = load_checkpoint(cartpole_ppo)
    before = {n: p.detach().clone() for n, p in agent.head.named_parameters()}
    _evaluator(agent).evaluate(_plane_coords(3, 5.0), Budget(episodes=2))
    for n, p in agent.head.named_parameters():
        assert torch.equal(p, before[n]), n


def test_critic_statistics_only_where_there_is_a_critic(cartpole_ppo, untrained):
    ppo = _evaluator(load_checkpoint(cartpole_ppo)).evaluate(np.zeros((1, 2)), Budget(episodes=3))
    assert np.isfinite(ppo.value_sums).all() and (ppo.td_sq_sums > 0).all()
    sac = load_checkpoint(untrained("sac", "Pendulum-v1"), "Pendulum-v1")
    res = _evaluator(sac).evaluate(np.zeros((1, 2)), Budget(episodes=2))
    assert np.isnan(res.value_sums).all()


@pytest.mark.parametrize(
    "algo, env_id, deterministic",
    [("sac", "Pendulum-v1", False), ("td3", "Pendulum-v1", True), ("dqn", "CartPole-v1", False), ("a2c", "CartPole-v1", False)],
)
def test_other_action_heads_agree_with_sb3(untrained, algo, env_id, deterministic):
    """Squashed Gaussian (SAC), tanh (TD3), ε-greedy (DQN), categorical (A2C) against SB3's evaluator."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    path = untrained(algo, env_id)
    agent = load_checkpoint(path, env_id)
    if algo == "dqn":
        agent.exploration_rate = 0.3  # make ε-greedy matter; SB3's model gets the same ε below
    n = 30
    ours = _evaluator(agent, seed=2, deterministic=deterministic).evaluate(np.zeros((1, 2)), Budget(episodes=n)).returns[0]
    model = getattr(sb3, algo.upper()).load(path, device="cpu")
    model.exploration_rate = agent.exploration_rate
    torch.manual_seed(0)
    np.random.seed(0)
    theirs, _ = evaluate_policy(model, make_vec_env(env_id, n_envs=4, seed=17), n_eval_episodes=n,
                                deterministic=deterministic, return_episode_rewards=True)
    _agree(ours, np.asarray(theirs, float))


# -- fast paths: the same numbers as the general ones ----------------------------------------------

@pytest.mark.parametrize(("algo", "env_id"), [("ppo", "CartPole-v1"), ("ppo", "Pendulum-v1"), ("a2c", "Acrobot-v1"),
                                               ("dqn", "MountainCar-v0"), ("sac", "MountainCarContinuous-v0")])
def test_native_envs_give_the_generic_results(untrained, algo, env_id):
    agent = load_checkpoint(untrained(algo, env_id), env_id)
    theta = agent.parameters("actor")
    dirs = [random_direction(theta, 0, i).values for i in range(2)]
    coords = _plane_coords(3, 0.5)
    runs = []
    for generic in (False, True):
        ev = PopulationEvaluator(agent, theta, dirs, seed=1, deterministic=False, max_envs=64, generic=generic)
        assert (type(ev.venv).__name__ == "GymVecEnv") == generic
        runs.append(ev.evaluate(coords, Budget(episodes=3)))
    native, generic = runs
    np.testing.assert_array_equal(native.lengths, generic.lengths)
    np.testing.assert_array_equal(native.returns, generic.returns)
    np.testing.assert_array_equal(native.value_sums, generic.value_sums)


@pytest.mark.parametrize(("algo", "env_id"), [("ppo", "CartPole-v1"), ("ppo", "Pendulum-v1"), ("trpo", "Acrobot-v1"),
                                               ("sac", "Pendulum-v1"), ("td3", "Pendulum-v1"), ("dqn", "CartPole-v1")])
@pytest.mark.parametrize("which", ["actor", "all"])
def test_fast_mlp_forward_equals_the_vmap_forward(untrained, algo, env_id, which):
    from torch.func import functional_call, vmap

    from rlscape.core.fastmlp import fast_mlp_forward

    agent = load_checkpoint(untrained(algo, env_id), env_id)
    fast = fast_mlp_forward(agent.head)
    assert fast is not None, "SB3 MLP heads take the fast path"
    theta = agent.parameters(which)
    dirs = [random_direction(theta, 0, i).values for i in range(2)]
    ev = PopulationEvaluator(agent, theta, dirs, seed=0, deterministic=False)
    params = ev._stacked(np.random.default_rng(0).normal(size=(5, 2)))
    space = agent.observation_space
    rng = np.random.default_rng(1)  # seeded observations inside the (finite-clipped) Box
    low, high = np.maximum(space.low, -5), np.minimum(space.high, 5)
    obs = torch.from_numpy((low + (high - low) * rng.random((5, 7, *space.shape))).astype(np.float32))
    slow = vmap(lambda p, o: functional_call(agent.head, p, (o,)), in_dims=(0, 0))(params, obs)
    got = fast(params, obs)
    assert_within_rounding(agent.head, got, slow, f"{algo} {which}")  # other kernels, other rounding


class _PendulumNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.actor = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
        self.critic = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
        self.log_std = torch.nn.Parameter(torch.zeros(1))


def _pendulum_policy(net, obs):
    return torch.distributions.Normal(net.actor(obs), net.log_std.exp())


def _pendulum_value(net, obs):
    return net.critic(obs).squeeze(-1)


def test_vmap_heads_do_not_depend_on_max_envs_either():
    """An adapter policy takes the vmap path; a single-output layer under vmap is a batched product
    whose kernel changes with the number of points per call, so vmap runs groups of a fixed size."""
    from rlscape.core.policy import Agent

    agent = Agent.from_torch(_PendulumNet(), _pendulum_policy, "Pendulum-v1", value=_pendulum_value)
    theta = agent.parameters("all")
    dirs = [random_direction(theta, 0, i).values for i in range(2)]
    coords = _plane_coords(5, 1.0)
    runs = []
    for max_envs in (4, 512):
        ev = PopulationEvaluator(agent, theta, dirs, seed=3, deterministic=False, max_envs=max_envs)
        res = ev.evaluate(coords, Budget(episodes=6))
        runs.append(np.concatenate([res.returns, res.value_sums], axis=1))
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize(("algo", "env_id"), [("ppo", "CartPole-v1"), ("ppo", "Pendulum-v1"), ("sac", "Pendulum-v1"),
                                               ("dqn", "CartPole-v1")])
def test_fast_forward_equals_sb3s_own_forward(untrained, algo, env_id):
    """The evaluator's numpy forward against SB3's own modules, point by point on copies of the
    policy holding each point's parameters (methods-independent: SB3's ``get_distribution``,
    ``predict_values``, ``actor.get_action_dist_params``, ``q_net``), within float32 rounding."""
    import copy

    from rlscape.core.fastmlp import fast_mlp_forward

    agent = load_checkpoint(untrained(algo, env_id), env_id)
    theta = agent.parameters("all")
    dirs = [random_direction(theta, 0, i).values for i in range(2)]
    coords = np.random.default_rng(0).normal(size=(4, 2))
    params = PopulationEvaluator(agent, theta, dirs, seed=0, deterministic=False)._stacked(coords)
    space = agent.observation_space
    low, high = np.maximum(space.low, -5), np.minimum(space.high, 5)
    obs = (low + (high - low) * np.random.default_rng(1).random((4, 10, *space.shape))).astype(np.float32)
    with torch.inference_mode():
        got = fast_mlp_forward(agent.head)(params, torch.from_numpy(obs))
    for k in range(len(coords)):
        policy = copy.deepcopy(agent.head.p)
        with torch.no_grad():
            for name, value in policy.named_parameters():
                if Agent.functional_name(name) in params:  # the others are the head's own in both
                    value.copy_(params[Agent.functional_name(name)][k])
            o = torch.from_numpy(obs[k])
            if algo == "ppo":
                dist = policy.get_distribution(o).distribution
                if "logits" in got:  # torch's Categorical stores normalised logits: compare log-probabilities
                    log_p = torch.log_softmax(got["logits"][k], -1)
                    torch.testing.assert_close(log_p, dist.logits, rtol=0, atol=_tol(agent, dist.logits))
                else:
                    torch.testing.assert_close(got["mean"][k], dist.mean, rtol=0, atol=_tol(agent, dist.mean))
                value = policy.predict_values(o).squeeze(-1)
                torch.testing.assert_close(got["value"][k], value, rtol=0, atol=_tol(agent, value))
            elif algo == "sac":
                mean, log_std, _ = policy.actor.get_action_dist_params(o)
                torch.testing.assert_close(got["mean"][k], mean, rtol=0, atol=_tol(agent, mean))
                torch.testing.assert_close(got["log_std"][k], log_std, rtol=0, atol=_tol(agent, log_std))
            else:
                q = policy.q_net(o)
                torch.testing.assert_close(got["q"][k], q, rtol=0, atol=_tol(agent, q))


def _tol(agent, want: torch.Tensor) -> float:
    from tests.core.rounding import relative_tolerance

    return relative_tolerance(agent.head) * float(want.abs().max()) + 1e-30
