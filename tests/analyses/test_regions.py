"""Linear regions (methods.md §9): exact 1-D counts, 2-D partitions, refusal of non-PL networks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from rlscape.analyses.regions import (
    agent_network,
    collect_states,
    count_trajectories,
    load_segments,
    plane_through_states,
    pooled_density,
    run_regions,
    to_input,
)
from rlscape.core.errors import RlscapeError
from rlscape.core.piecewise import PiecewiseLinear, count_segments, dense_counts, partition_plane, plane_basis
from rlscape.core.policy import load_checkpoint
from rlscape.training.train import parse_hyperparams, resolve_hyperparams, sb3_kwargs
from tests.training_runs import relu_run

# -- training a ReLU agent: the command the refusal message names must work --------------------------

@pytest.mark.parametrize("name, cls", [("relu", torch.nn.ReLU), ("ReLU", torch.nn.ReLU), ("leaky_relu", torch.nn.LeakyReLU),
                                       ("tanh", torch.nn.Tanh), ("nn.ReLU", torch.nn.ReLU)])
def test_activation_given_by_its_short_name(name, cls):
    hp = resolve_hyperparams("ppo", "Hopper-v5", parse_hyperparams(f'{{"policy_kwargs": {{"activation_fn": "{name}"}}}}', "Hopper-v5"))
    box = gym.spaces.Box(-1, 1, (3,), np.float32)
    assert sb3_kwargs("ppo", hp, box)["policy_kwargs"]["activation_fn"] is cls


# -- hand-built networks with known counts -------------------------------------------------------------

def _hyperplane_net(normals: np.ndarray, offsets: np.ndarray) -> nn.Sequential:
    """One hidden ReLU unit per hyperplane n_i·x + c_i = 0, then a linear output."""
    k, d = normals.shape
    first = nn.Linear(d, k)
    out = nn.Linear(k, 1)
    with torch.no_grad():
        first.weight.copy_(torch.as_tensor(normals))
        first.bias.copy_(torch.as_tensor(offsets))
        out.weight.fill_(1.0)
        out.bias.zero_()
    return nn.Sequential(first, nn.ReLU(), out).double()


def test_hand_built_hyperplanes_give_known_counts():
    # hyperplanes x0 = 0.1, 0.3, 0.5, 0.7 and x1 = 0.5; segments along x0 in [0, 1] at several heights
    normals = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]])
    offsets = np.array([-0.1, -0.3, -0.5, -0.7, -0.5])
    net = PiecewiseLinear.from_module(_hyperplane_net(normals, offsets))
    a = np.array([[0.0, 0.2], [0.0, 0.9], [0.2, 0.0], [0.0, 0.0], [0.05, 0.05]])
    b = np.array([[1.0, 0.2], [1.0, 0.9], [0.2, 1.0], [1.0, 1.0], [0.06, 0.06]])
    r = count_segments(net, a, b)
    # horizontal: 4 crossings; vertical at x0 = 0.2: crosses x1 = 0.5 only; diagonal: crosses all 5
    # hyperplanes, but x0 = 0.5 and x1 = 0.5 at the same point (one transition, two units flip); tiny: none
    assert r.regions.tolist() == [5, 5, 2, 5, 1]
    assert r.transitions.tolist() == [4, 4, 1, 4, 0]
    np.testing.assert_allclose(r.breakpoints[r.breakpoint_segment == 0], [0.1, 0.3, 0.5, 0.7], atol=1e-12)
    np.testing.assert_allclose(r.length, [1, 1, 1, np.sqrt(2), np.sqrt(2) * 0.01])


def test_dead_later_layer_does_not_add_regions():
    # layer 2 has a unit that is negative everywhere: its zero never lies on the segment; and a unit whose
    # input is a ReLU of a layer-1 unit: a layer-1 breakpoint it inherits is counted once
    seq = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    with torch.no_grad():
        seq[0].weight.fill_(1.0)
        seq[0].bias.fill_(-0.5)  # kink at x = 0.5
        seq[2].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        seq[2].bias.copy_(torch.tensor([-0.25, -1.0]))  # unit 1 on for x > 0.75; unit 2 never on
    net = PiecewiseLinear.from_module(seq)
    r = count_segments(net, np.array([[0.0]]), np.array([[1.0]]))
    assert r.regions.tolist() == [3]
    np.testing.assert_allclose(np.sort(r.breakpoints), [0.5, 0.75])


def test_identity_and_leaky_relu_are_piecewise_linear_and_tanh_is_refused():
    seq = nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.1), nn.Linear(4, 4), nn.Identity(), nn.Linear(4, 2))
    net = PiecewiseLinear.from_module(seq)
    assert net.hidden_sizes == [4]  # Linear ∘ Identity ∘ Linear composes into one map
    x = torch.randn(7, 3)
    np.testing.assert_allclose(net(x.numpy()), seq(x).detach().numpy(), atol=1e-5)
    with pytest.raises(RlscapeError, match=r"Tanh.*activation_fn.*relu"):
        PiecewiseLinear.from_module(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)))


# -- exact vs dense sampling on random networks ----------------------------------------------------------

def _random_relu_net(sizes: tuple[int, ...], seed: int) -> PiecewiseLinear:
    """Linear–ReLU–…–Linear with the given layer sizes, PyTorch's default initialisation, seeded."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()]
    return PiecewiseLinear.from_module(nn.Sequential(*layers[:-1]))


@pytest.mark.parametrize("sizes", [(2, 8, 8, 3), (5, 16, 16, 16, 2)])
def test_exact_counts_bound_and_are_reached_by_dense_sampling(sizes):
    net = _random_relu_net(sizes, seed=0)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, sizes[0])) * 2, rng.normal(size=(30, sizes[0])) * 2
    exact = count_segments(net, a, b).regions
    agree = []
    for n in (10, 100, 1000, 10_000):
        dense = dense_counts(net, a, b, n)
        assert (dense <= exact).all()  # sampling can only miss regions
        agree.append((dense == exact).mean())
    assert agree == sorted(agree) and agree[-1] >= 0.9 and agree[0] < agree[-1]
    # where 10 000 points still miss a region, it is narrower than the sampling step
    r = count_segments(net, a, b)
    for s in np.flatnonzero(dense_counts(net, a, b, 10_000) < exact):
        bp = np.r_[0.0, np.sort(r.breakpoints[r.breakpoint_segment == s]), 1.0]
        assert np.diff(bp).min() < 1 / 9_999


def test_counts_do_not_depend_on_chunking():
    net = _random_relu_net((4, 32, 32, 1), seed=3)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(101, 4)), rng.normal(size=(101, 4))
    whole = count_segments(net, a, b)
    parts = count_segments(net, a, b, chunk=7)
    np.testing.assert_array_equal(whole.regions, parts.regions)
    np.testing.assert_array_equal(whole.breakpoint_segment, parts.breakpoint_segment)


# -- 2-D partitions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [(2, 6, 1), (4, 12, 12, 2)])
def test_plane_areas_sum_to_the_box_and_each_polygon_has_one_pattern(sizes):
    net = _random_relu_net(sizes, seed=2)
    rng = np.random.default_rng(0)
    origin = rng.normal(size=sizes[0])
    e1, e2 = plane_basis(origin, origin + rng.normal(size=sizes[0]), origin + rng.normal(size=sizes[0]))
    part = partition_plane(net, origin, e1, e2, (-2.0, 3.0, -1.0, 2.0))
    assert part.area.sum() == pytest.approx(15.0, rel=1e-9)
    assert len({p.tobytes() for p in part.patterns}) == part.n_regions  # each region once
    for poly, pattern in zip(part.polygons, part.patterns, strict=True):
        w = rng.dirichlet(np.ones(len(poly)), size=20)  # interior points: convex combinations of the vertices
        uv = w @ poly
        x = origin + uv[:, :1] * e1 + uv[:, 1:] * e2
        assert (net.patterns(x) == pattern).all()
    if sizes == (2, 6, 1):  # 6 lines in general position cut the box into at most 1 + 6 + 15 pieces
        assert 1 <= part.n_regions <= 22


def test_one_hidden_layer_plane_matches_line_arrangement():
    # 3 lines in general position through the box → 7 regions
    normals = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    net = PiecewiseLinear.from_module(_hyperplane_net(normals, np.array([0.0, 0.0, -0.5])))
    part = partition_plane(net, np.zeros(2), np.array([1.0, 0.0]), np.array([0.0, 1.0]), (-1.0, 1.0, -1.0, 1.0))
    assert part.n_regions == 7
    assert part.area.sum() == pytest.approx(4.0)


# -- agents ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return relu_run(tmp_path_factory)


def test_agent_network_is_the_policy_on_normalised_inputs(run_dir):
    agent = load_checkpoint(run_dir / "checkpoints" / "0000001024")
    net = agent_network(agent)
    assert net.hidden_sizes == [8, 8] and net.input_dim == 2
    x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    with torch.no_grad():
        logits = agent.head(torch.from_numpy(x))["logits"].numpy()
    np.testing.assert_allclose(net(x), logits, atol=1e-5)
    value = agent_network(agent, "value")
    with torch.no_grad():
        np.testing.assert_allclose(value(x)[:, 0], agent.head(torch.from_numpy(x))["value"].numpy(), atol=1e-5)


def test_tanh_agent_is_refused_with_the_training_hint(cartpole_ppo):
    with pytest.raises(RlscapeError, match=r"uses Tanh.*rlscape train .*activation_fn.*relu") as exc:
        agent_network(load_checkpoint(cartpole_ppo))
    assert "\n" not in str(exc.value)


def test_run_regions_over_training(run_dir, tmp_path):
    ds = run_regions(run_dir, tmp_path / "r", trajectories=2, random_lines_n=20, seed=1)
    assert ds.attrs["kind"] == "regions" and ds.attrs["schema_version"] == 1
    assert ds.step.values.tolist() == [0, 512, 1024]
    # per-trajectory totals are the sums of the per-segment counts
    for i in range(3):
        r = ds.isel(step=i)
        for j in range(2):
            mine = r.current_segment_trajectory.values == j
            assert int(r.current_transitions[j]) == int(np.nansum(r.current_segment_transitions.values[mine]))
            assert float(r.current_length[j]) == pytest.approx(np.nansum(r.current_segment_length.values[mine]))
    # the fixed trajectories are the final policy's own: equal to its current ones at the last step
    last = ds.isel(step=-1)
    np.testing.assert_array_equal(last.fixed_transitions.values, last.current_transitions.values)
    assert (ds.current_regions == ds.current_transitions + 1).all()
    assert (ds.current_unique_regions <= ds.current_regions).all()
    np.testing.assert_allclose(ds.current_density, ds.current_transitions / ds.current_length)
    np.testing.assert_allclose(ds.current_density_per_neuron, ds.current_density / 16)
    np.testing.assert_allclose(ds.current_density_pooled, ds.current_transitions.sum("trajectory") / ds.current_length.sum("trajectory"))
    lines = ds.segment_family.values[0] == "line"
    assert lines.sum() == 20 and (ds.regions.values[:, lines] >= 1).all()
    # stored, and the same numbers again from the same seed
    again = run_regions(run_dir, tmp_path / "r2", trajectories=2, random_lines_n=20, seed=1)
    xr.testing.assert_identical(ds.drop_attrs(), again.drop_attrs())
    stored = xr.open_zarr(tmp_path / "r" / "results.zarr").load()
    np.testing.assert_array_equal(stored.current_transitions, ds.current_transitions)


def test_trajectory_counts_equal_dense_sampling_of_its_segments(run_dir):
    agent = load_checkpoint(run_dir / "checkpoints" / "0000001024")
    net = agent_network(agent)
    visited = collect_states(agent, 1, seed=0)
    x = to_input(agent, visited.states[0])
    tc = count_trajectories(net, [x])
    dense = dense_counts(net, x[:-1], x[1:], 2000)
    assert (dense <= tc.segments.regions).all()
    assert int(tc.transitions[0]) >= int((dense - 1).sum())


def test_plane_of_a_2d_state_space_and_through_three_states(run_dir):
    agent = load_checkpoint(run_dir / "checkpoints" / "0000001024")
    net = agent_network(agent)
    ds = plane_through_states(agent, net, state_space=True, seed=0)
    assert ds.attrs["area_sum"] == pytest.approx(ds.attrs["box_area"], rel=1e-9)
    assert ds.attrs["n_regions"] == ds.sizes["region"] >= 1
    u0, u1, v0, v1 = ds.attrs["box"]
    assert (ds.traj_u >= u0).all() and (ds.traj_u <= u1).all() and float(ds.traj_off_plane.max()) == 0.0
    three = plane_through_states(agent, net, seed=0)  # in a 2-D space the plane through three states is the space
    assert float(three.traj_off_plane.max()) < 1e-9
    assert (float(three.anchor_u[0]), float(three.anchor_v[0])) == (0.0, 0.0)
    assert three.attrs["area_sum"] == pytest.approx(three.attrs["box_area"], rel=1e-9)


def test_bad_segments_file_is_refused(tmp_path):
    f = tmp_path / "s.npy"
    np.save(f, np.zeros((4, 3, 2)))
    with pytest.raises(RlscapeError, match=r"shape \(S, 2, 2\)"):
        load_segments(f, 2)


def test_pooled_density_and_its_jackknife_error():
    # items (transitions, length): (0, 0.01), (1, 0.01), (10, 1): mean of ratios 36.7, pooled 11/1.02
    d, se = pooled_density(np.array([0, 1, 10]), np.array([0.01, 0.01, 1.0]))
    assert d == pytest.approx(11 / 1.02)
    loo = np.array([11 / 1.01, 10 / 1.01, 1 / 0.02])
    assert se == pytest.approx(np.sqrt(2 / 3 * ((loo - loo.mean()) ** 2).sum()))
    assert np.isnan(pooled_density(np.array([3]), np.array([1.0]))[1])


@pytest.mark.parametrize("algo, kwargs, out", [
    ("ppo", {"share_features_extractor": False, "net_arch": {"pi": [8, 8], "vf": [6]}}, "logits"),
    ("dqn", {"net_arch": [8, 8]}, "q"),
])
def test_separate_extractors_and_other_heads(tmp_path, algo, kwargs, out):
    import json

    import stable_baselines3 as sb3

    cls = {"ppo": sb3.PPO, "dqn": sb3.DQN}[algo]
    extra = {"buffer_size": 100} if algo == "dqn" else {}
    cls("MlpPolicy", "CartPole-v1", seed=0, device="cpu", policy_kwargs={"activation_fn": nn.ReLU, **kwargs}, **extra).save(tmp_path / "model.zip")
    (tmp_path / "env.json").write_text(json.dumps({"env_id": "CartPole-v1", "env_kwargs": {}}))
    agent = load_checkpoint(tmp_path)
    net = agent_network(agent)
    assert net.hidden_sizes == [8, 8]
    x = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net(x), agent.head(torch.from_numpy(x))[out].numpy(), atol=1e-5)
    if algo == "ppo":
        assert agent_network(agent, "value").hidden_sizes == [6]
    else:
        with pytest.raises(RlscapeError, match="no state-value network"):
            agent_network(agent, "value")
