"""Linear regions of ReLU policies along their own trajectories (methods.md §9; Cohan et al. 2022).

Reads top to bottom: the network of an agent → visited states → segments (current trajectories,
a fixed trajectory of the final policy, random lines, user segments) → exact counts
(:mod:`rlscape.core.piecewise`) → one dataset per checkpoint → over training (dim ``step``) →
the run directory. The 2-D partition of a plane through three visited states comes last.

Conventions (where the paper's code and the issue are silent, what a researcher would expect):

- Trajectories are sampled with the **deterministic** (mean / greedy) action, as the reference
  code does by default, from reset seeds :func:`~rlscape.core.evaluate.reset_seed` ``(seed, e)``.
- States are stored raw and normalised with **each checkpoint's own** frozen VecNormalize
  statistics before counting, so a fixed trajectory is the same set of physical states at every
  checkpoint, seen through that checkpoint's input pipeline (as in the reference code).
  Consecutive normalised states are joined by straight segments in the network's input space.
- A trajectory's ``transitions`` is the sum over its segments; its ``regions`` = transitions + 1
  (regions in visiting order, a revisit counts again); ``unique_regions`` counts distinct patterns.
- Density = transitions / Euclidean length in input space; per neuron: divided again by the
  number of hidden neurons. Per-step summaries pool a family: Σ transitions / Σ length over its
  trajectories (lines), with a jackknife standard error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import reset_seed, select_actions
from rlscape.core.kinds import kind_attrs
from rlscape.core.piecewise import (
    PiecewiseLinear,
    PlanePartition,
    SegmentCounts,
    count_segments,
    partition_plane,
    plane_basis,
)
from rlscape.core.policy import Agent

log = logging.getLogger(__name__)

NETWORKS = ("policy", "value")
LINE_SEED_TAG = 0x11E5  # seed-sequence tag of the random-line end points


# -- the network ------------------------------------------------------------------------------------

def agent_network(agent: Agent | torch.nn.Module, network: str = "policy") -> PiecewiseLinear:
    """The piecewise-linear map from the network's input (after observation normalisation) to the
    policy's output (``policy``: logits / Gaussian mean / Q-values / action) or to V(s) (``value``).

    A plain ``torch.nn.Sequential`` (or any module :meth:`PiecewiseLinear.from_module` accepts) is
    taken as it is. Refuses non-piecewise-linear activations with one line naming them.
    """
    if network not in NETWORKS:
        raise RlscapeError(f"--network must be one of {', '.join(NETWORKS)}, not {network!r}")
    if not isinstance(agent, Agent):
        return PiecewiseLinear.from_module(agent)
    p: Any = getattr(agent.head, "p", agent.head)  # the wrapped SB3 policy (or the user's module)
    algo = agent.algo
    if algo in ("ppo", "a2c", "trpo"):
        if network == "policy":
            fx = p.features_extractor if p.share_features_extractor else p.pi_features_extractor
            parts = [fx, p.mlp_extractor.policy_net, p.action_net]
        else:
            fx = p.features_extractor if p.share_features_extractor else p.vf_features_extractor
            parts = [fx, p.mlp_extractor.value_net, p.value_net]
    elif network == "value":
        raise RlscapeError(f"{algo.upper()} agents have no state-value network; use --network policy")
    elif algo == "sac":
        parts = [p.actor.features_extractor, p.actor.latent_pi, p.actor.mu]
    elif algo in ("td3", "ddpg"):
        mu = list(p.actor.mu)
        if mu and isinstance(mu[-1], torch.nn.Tanh):  # the output squashing: monotone per output, no new regions
            mu = mu[:-1]
        parts = [p.actor.features_extractor, *mu]
    elif algo == "dqn":
        parts = [p.q_net.features_extractor, p.q_net.q_net]
    else:
        parts = [p]
    parts = [_feature_module(m) for m in parts]
    net = PiecewiseLinear.from_module(*parts, description=f"{algo} {network} network")
    return net


def _feature_module(m: torch.nn.Module) -> torch.nn.Module:
    """SB3 feature extractors: FlattenExtractor is a Flatten; an MLP extractor exposes its Sequential."""
    name = type(m).__name__
    if name == "FlattenExtractor":
        return torch.nn.Flatten()
    if hasattr(m, "cnn") or name in ("NatureCNN", "CombinedExtractor"):
        raise RlscapeError(f"the network starts with {name}; linear regions are implemented for MLP policies (Linear layers)")
    return m


# -- visited states (one small function, to be swapped for core/trajectories.py) -------------------

@dataclasses.dataclass
class Visited:
    """Raw (un-normalised) states of E episodes: ``states[e]`` (T_e + 1, obs_dim) including the
    final observation; ``returns`` (E,) undiscounted."""

    states: list[np.ndarray]
    returns: np.ndarray


@torch.inference_mode()
def collect_states(agent: Agent, episodes: int, seed: int, *, max_steps: int | None = None) -> Visited:
    """Run ``episodes`` deterministic episodes of ``agent`` and keep the raw visited states.

    The env is the agent's own pipeline without the observation normalisation (kept raw so that
    other checkpoints can normalise the same states with their own statistics); actions are the
    mode of the policy computed on the normalised observation.
    """
    if episodes < 1:
        raise RlscapeError(f"--trajectories must be a positive integer, not {episodes}")
    spec = agent.env
    if spec.atari or spec.frame_stack > 1 or spec.channel_first:
        raise RlscapeError("linear regions are implemented for vector observations (MLP policies), not image pipelines")
    raw_spec = dataclasses.replace(spec, obs_norm=None)
    norm = spec.obs_norm
    states, returns = [], []
    env = raw_spec.make()
    try:
        for e in range(episodes):
            obs, _ = env.reset(seed=reset_seed(seed, e))
            traj = [np.asarray(obs, np.float64).ravel()]
            total, t = 0.0, 0
            while True:
                x = np.asarray(obs, np.float32)[None]
                x = norm(x) if norm is not None else x
                out = agent.head(torch.from_numpy(np.asarray(x, np.float32)))
                action = select_actions(agent, {k: v[None] for k, v in out.items()}, None, True)[0, 0]
                obs, r, term, trunc, _ = env.step(action)
                traj.append(np.asarray(obs, np.float64).ravel())
                total += float(r)
                t += 1
                if term or trunc or (max_steps is not None and t >= max_steps):
                    break
            states.append(np.stack(traj))
            returns.append(total)
    finally:
        env.close()
    return Visited(states, np.asarray(returns))


def to_input(agent: Agent | None, states: np.ndarray) -> np.ndarray:
    """Raw states (…, obs_dim) → the network's input space (the agent's frozen normalisation), float64."""
    if agent is None or agent.env.obs_norm is None:
        return np.asarray(states, np.float64)
    n = agent.env.obs_norm
    return np.clip((states - n.mean) / np.sqrt(n.var.astype(np.float64) + n.epsilon), -n.clip, n.clip)


# -- counting along trajectories and lines ---------------------------------------------------------

@dataclasses.dataclass
class TrajectoryCounts:
    """Counts along N polylines (trajectories) of consecutive states.

    Per segment (M segments in all, polyline by polyline): ``segments`` (:class:`SegmentCounts`) and
    ``owner`` (M,). Per polyline: ``transitions``, ``regions`` (= transitions + 1), ``unique_regions``,
    ``length`` (Euclidean, input space), ``n_states``.
    """

    segments: SegmentCounts
    owner: np.ndarray
    transitions: np.ndarray
    regions: np.ndarray
    unique_regions: np.ndarray
    length: np.ndarray
    n_states: np.ndarray


def count_trajectories(net: PiecewiseLinear, polylines: Sequence[np.ndarray]) -> TrajectoryCounts:
    """Exact counts along polylines ``polylines[i]`` (T_i, input_dim) in the network's input space,
    all segments of all polylines counted in one batched call."""
    if not polylines:
        raise RlscapeError("no trajectory to count along")
    a = np.concatenate([p[:-1] for p in polylines])
    b = np.concatenate([p[1:] for p in polylines])
    owner = np.concatenate([np.full(len(p) - 1, i, np.int64) for i, p in enumerate(polylines)])
    seg = count_segments(net, a, b, keep_patterns=True)
    n = len(polylines)
    transitions = np.bincount(owner, weights=seg.transitions, minlength=n).astype(np.int64)
    length = np.bincount(owner, weights=seg.length, minlength=n)
    unique = np.zeros(n, np.int64)
    patterns, piece_segment = seg.piece_patterns, seg.piece_segment
    if patterns is None or piece_segment is None:  # keep_patterns=True always returns them
        raise AssertionError("count_segments returned no patterns")
    piece_owner = owner[piece_segment]
    for i in range(n):
        rows = patterns[piece_owner == i]
        unique[i] = len(np.unique(rows, axis=0)) if len(rows) else 1
    return TrajectoryCounts(seg, owner, transitions, transitions + 1, unique, length,
                            np.array([len(p) for p in polylines], np.int64))


def _density(transitions: np.ndarray, length: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(length > 0, transitions / np.where(length > 0, length, 1.0), np.nan)


def pooled_density(transitions: np.ndarray, length: np.ndarray) -> tuple[float, float]:
    """Σ transitions / Σ length over items (trajectories, lines, segments) and its jackknife
    standard error (leave one item out). Pooling weighs items by length, so many short items with
    0 or 1 transition (e.g. lines near the mean state) do not dominate as a mean of ratios would.
    ``transitions``, ``length``: (n,) → (density, sem); NaN where undefined."""
    t = np.asarray(transitions, np.float64)
    ln = np.asarray(length, np.float64)
    T, L = t.sum(), ln.sum()
    if len(t) == 0 or L <= 0:
        return float("nan"), float("nan")
    if len(t) < 2:
        return float(T / L), float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        loo = (T - t) / (L - ln)
    loo = loo[np.isfinite(loo)]
    n = len(loo)
    sem = float(np.sqrt((n - 1) / n * ((loo - loo.mean()) ** 2).sum())) if n > 1 else float("nan")
    return float(T / L), sem


def random_lines(final_states: Sequence[np.ndarray], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` lines from the mean of ``n`` sampled visited states to each of them (raw state space):
    (a, b) of shape (n, obs_dim). States are drawn uniformly over all visited states, seeded."""
    pool = np.concatenate(list(final_states))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), LINE_SEED_TAG]))
    picked = pool[rng.choice(len(pool), size=n, replace=len(pool) < n)]
    mean = picked.mean(axis=0)
    return np.broadcast_to(mean, picked.shape).copy(), picked


# -- one checkpoint --------------------------------------------------------------------------------

def regions_at(agent: Agent, net: PiecewiseLinear, *, current: Visited, fixed: Visited | None,
               lines: tuple[np.ndarray, np.ndarray] | None, user: np.ndarray | None) -> dict[str, Any]:
    """All counts at one checkpoint, as plain arrays (see :func:`to_dataset` for their meaning).

    ``current``/``fixed`` hold raw states (normalised here with this agent's statistics); ``lines``
    raw end points (n, obs_dim) × 2; ``user`` segments (S, 2, input_dim) already in input space.
    """
    res: dict[str, Any] = {"n_neurons": net.n_neurons}
    for name, visited in (("current", current), ("fixed", fixed)):
        if visited is None:
            continue
        tc = count_trajectories(net, [to_input(agent, s) for s in visited.states])
        res[name] = tc
        res[f"{name}_return"] = visited.returns
    if lines is not None:
        res["line"] = count_segments(net, to_input(agent, lines[0]), to_input(agent, lines[1]))
    if user is not None:
        res["user"] = count_segments(net, user[:, 0], user[:, 1])
    return res


def to_dataset(res: dict[str, Any], network: str) -> Any:
    """One checkpoint's counts as an ``xarray.Dataset`` (no ``step`` dim).

    Per trajectory (dim ``trajectory``: episode e, the same reset seed for the current and the final
    policy): ``{current,fixed}_transitions``,
    ``_regions``, ``_unique_regions``, ``_length``, ``_n_states``, ``_density``,
    ``_density_per_neuron``, ``_return``. Per segment (dim ``segment``): the segments of the fixed
    trajectories, random lines and user segments, with ``segment_family`` (fixed|line|user) and
    ``segment_trajectory`` (−1 for lines and user segments): ``regions``, ``transitions``,
    ``length``, ``density``, ``density_per_neuron``. The segments of the current trajectories
    (dim ``current_segment``): ``current_segment_transitions``, ``current_segment_length``,
    ``current_segment_trajectory``. Summaries (scalars): ``{current,fixed,line,user}_density_pooled``
    (Σ transitions / Σ length over trajectories / lines / segments) and ``_sem`` (jackknife), also
    ``_density_per_neuron_pooled`` / ``_sem``.
    """
    import xarray as xr

    N = res["n_neurons"]
    data: dict[str, Any] = {}
    summaries: dict[str, float] = {}
    for name, dim in (("current", "trajectory"), ("fixed", "trajectory")):  # episode e: the same reset seed in both
        tc = res.get(name)
        if tc is None:
            continue
        dens = _density(tc.transitions, tc.length)
        for key, val in (("transitions", tc.transitions), ("regions", tc.regions), ("unique_regions", tc.unique_regions),
                         ("length", tc.length), ("n_states", tc.n_states), ("density", dens),
                         ("density_per_neuron", dens / N), ("return", res[f"{name}_return"])):
            data[f"{name}_{key}"] = (dim, np.asarray(val))
        summaries[f"{name}_density_pooled"], summaries[f"{name}_density_sem"] = pooled_density(tc.transitions, tc.length)
    cur = res["current"].segments
    data["current_segment_transitions"] = ("current_segment", cur.transitions.astype(np.float64))
    data["current_segment_length"] = ("current_segment", cur.length)
    data["current_segment_trajectory"] = ("current_segment", res["current"].owner)
    fams, owners, regs, lens = [], [], [], []
    if "fixed" in res:
        fs = res["fixed"].segments
        fams.append(np.full(len(fs.regions), "fixed"))
        owners.append(res["fixed"].owner)
        regs.append(fs.regions)
        lens.append(fs.length)
    for name in ("line", "user"):
        if name in res:
            sc: SegmentCounts = res[name]
            fams.append(np.full(len(sc.regions), name))
            owners.append(np.full(len(sc.regions), -1, np.int64))
            regs.append(sc.regions)
            lens.append(sc.length)
            summaries[f"{name}_density_pooled"], summaries[f"{name}_density_sem"] = pooled_density(sc.transitions, sc.length)
    if regs:
        r, ln = np.concatenate(regs), np.concatenate(lens)
        d = _density(r - 1, ln)
        data.update(segment_family=("segment", np.concatenate(fams).astype(str)), segment_trajectory=("segment", np.concatenate(owners)),
                    regions=("segment", r), transitions=("segment", r - 1), length=("segment", ln), density=("segment", d),
                    density_per_neuron=("segment", d / N))
    for k, v in summaries.items():
        data[k] = ((), v)
        data[k.replace("_density_", "_density_per_neuron_")] = ((), v / N)
    for k in list(data):
        if k.endswith("_density_pooled") or k.endswith("_density_per_neuron_pooled"):
            data[k] = xr.Variable((), data[k][1], attrs={"long_name": "Σ transitions / Σ length over the family's items"})
    ds = xr.Dataset(data)
    ds.attrs.update(**kind_attrs("regions"), network=network, n_neurons=N)
    return ds


def _pad_concat(parts: list[Any]) -> Any:
    """Stack per-checkpoint datasets along ``step``; the ``current_segment`` / ``trajectory`` dims
    may differ in length between checkpoints and are padded with NaN (−1 for indices)."""
    import xarray as xr

    sizes = {dim: max(p.sizes.get(dim, 0) for p in parts) for dim in ("current_segment",)}
    padded = []
    for p in parts:
        q = p
        for dim, n in sizes.items():
            if p.sizes[dim] < n:
                q = q.pad({dim: (0, n - p.sizes[dim])})
                q["current_segment_trajectory"] = q["current_segment_trajectory"].fillna(-1)
        padded.append(q)
    ds = xr.concat(padded, dim="step", data_vars="all", coords="minimal", combine_attrs="override")
    ds["current_segment_trajectory"] = ds["current_segment_trajectory"].astype(np.int64)
    return ds


# -- the analysis as the CLI runs it ---------------------------------------------------------------

def load_segments(path: str | Path, input_dim: int) -> np.ndarray:
    """User segments from a ``.npy`` file of shape (S, 2, input_dim) in the network's input space."""
    try:
        seg = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RlscapeError(f"cannot read --segments {path} ({type(exc).__name__}); give a .npy array of shape (S, 2, {input_dim})") from None
    if seg.ndim != 3 or seg.shape[1] != 2 or seg.shape[2] != input_dim or seg.shape[0] < 1:
        raise RlscapeError(f"--segments must have shape (S, 2, {input_dim}) (start and end points in the network's input space), not {seg.shape}")
    if not np.issubdtype(seg.dtype, np.number) or not np.isfinite(seg).all():
        raise RlscapeError("--segments must hold finite numbers")
    return seg.astype(np.float64)


def _train_return(folder: Path) -> float:
    f = Path(folder) / "checkpoint.json"
    try:
        recent = json.loads(f.read_text()).get("recent_returns") or []
    except (OSError, json.JSONDecodeError):
        return float("nan")
    return float(np.mean(recent)) if recent else float("nan")


def run_regions(source: str | Path, out: str | Path, *, checkpoints: str | None = None, trajectories: int = 10,
                random_lines_n: int = 100, segments: str | Path | None = None, network: str = "policy", seed: int = 0,
                env_id: str | None = None, algo: str | None = None, overwrite: bool = False) -> Any:
    """Exact region counts of a checkpoint, or of every (chosen) checkpoint of a training run.

    At each checkpoint: ``trajectories`` current deterministic episodes; with a run also the same
    number of episodes of the **final** checkpoint ("fixed" trajectories, as in the paper); random
    lines from the mean of ``random_lines_n`` states visited by the final policy to each of them;
    and user ``segments``. Writes ``results.zarr`` (attrs kind="regions", dim ``step`` for a run).
    """
    from rlscape.core.policy import load_checkpoint

    if trajectories < 1:
        raise RlscapeError(f"--trajectories must be a positive integer, not {trajectories}")
    if random_lines_n < 0:
        raise RlscapeError(f"--random-lines must be ≥ 0, not {random_lines_n}")
    if seed < 0:
        raise RlscapeError(f"--seed must be ≥ 0, not {seed}")
    from rlscape.core.lifecycle import Run, checkpoint_or_run
    from rlscape.core.runs import over_training, select_checkpoints

    over = over_training(source, checkpoints)
    todo: list[tuple[int | None, Path]] = list(select_checkpoints(source, checkpoints)) if over else [(None, Path(source))]
    final_step, final_path = todo[-1]
    final_agent = load_checkpoint(final_path, env_id, algo=algo)
    final_net = agent_network(final_agent, network)
    user = load_segments(segments, final_net.input_dim) if segments is not None else None
    spec = {"kind": "regions", "source": str(Path(source).resolve()), "final_checkpoint": str(Path(final_path).resolve()),
            "trajectories": trajectories, "random_lines": random_lines_n, "segments": str(Path(segments).resolve()) if segments else None,
            "network": network, "seed": seed, "env_id": env_id, "algo": algo, "actions": "deterministic"}
    fixed = collect_states(final_agent, trajectories, seed)
    lines = random_lines(fixed.states, random_lines_n, seed) if random_lines_n > 0 else None
    attrs = {**kind_attrs("regions"), "network": network, "n_neurons": final_net.n_neurons,
             "hidden_sizes": json.dumps(final_net.hidden_sizes), "env_id": final_agent.env.env_id, "algo": final_agent.algo,
             "source": str(Path(source).resolve()), "seed": seed, "actions": "deterministic", "over_training": int(over),
             "fixed_from_step": int(final_step or 0) if over else -1}

    def compute(step: int | None, path: Path, run: Run) -> xr.Dataset:
        agent = final_agent if Path(path) == Path(final_path) else load_checkpoint(path, env_id, algo=algo)
        net = agent_network(agent, network)
        current = fixed if agent is final_agent else collect_states(agent, trajectories, seed)
        res = regions_at(agent, net, current=current, fixed=fixed if over else None, lines=lines, user=user)
        ds = to_dataset(res, network)
        ds["train_return"] = ((), np.asarray(_train_return(path)))
        ds.attrs.update(attrs)
        log.debug("%s: %.3g transitions per unit length along its own trajectories (%s neurons)",
                  f"step {step}" if over else Path(path).name, float(ds["current_density_pooled"]), net.n_neurons)
        return ds

    def combine(done: list[tuple[int, xr.Dataset]]) -> xr.Dataset:
        ds = _pad_concat([d for _, d in done]).assign_coords(step=np.asarray([s for s, _ in done], np.int64))
        ds.attrs.update(attrs)
        return ds

    return checkpoint_or_run(source, out, spec, compute, checkpoints=checkpoints, overwrite=overwrite, progress=False,
                             combine=combine)


# -- 2-D: the plane through three visited states ---------------------------------------------------

def plane_dataset(part: PlanePartition, *, traj_uv: np.ndarray, anchors_uv: np.ndarray, off_plane: np.ndarray) -> Any:
    """A partition as an ``xarray.Dataset``: per region ``area``, ``vertex_start``, ``n_vertices``,
    ``pattern`` (region, neuron); flat ``vertex_u``, ``vertex_v`` (dim vertex); the projected
    trajectory ``traj_u``, ``traj_v``, ``traj_off_plane`` (dim time; distance of each state from
    the plane); ``anchor_u``, ``anchor_v`` (the three states)."""
    import xarray as xr

    sizes = np.array([len(p) for p in part.polygons], np.int64)
    verts = np.concatenate(part.polygons) if part.polygons else np.zeros((0, 2))
    ds = xr.Dataset({
        "area": ("region", part.area), "n_vertices": ("region", sizes),
        "vertex_start": ("region", np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)),
        "pattern": (("region", "neuron"), part.patterns.astype(np.uint8)),
        "vertex_u": ("vertex", verts[:, 0]), "vertex_v": ("vertex", verts[:, 1]),
        "traj_u": ("time", traj_uv[:, 0]), "traj_v": ("time", traj_uv[:, 1]), "traj_off_plane": ("time", off_plane),
        "anchor_u": ("anchor", anchors_uv[:, 0]), "anchor_v": ("anchor", anchors_uv[:, 1]),
    })
    total = (part.box[1] - part.box[0]) * (part.box[3] - part.box[2])
    ds.attrs.update(**kind_attrs("regions-plane"), n_regions=part.n_regions, box=list(part.box),
                    box_area=total, area_sum=float(part.area.sum()))
    return ds


def plane_through_states(agent: Agent, net: PiecewiseLinear, *, state_space: bool = False, seed: int = 0,
                         margin: float = 0.25, box: tuple[float, float, float, float] | None = None) -> Any:
    """Exact partition of the plane through three visited states (or of a 2-D input space).

    One deterministic episode (reset seed ``reset_seed(seed, 0)``) gives the states; three distinct
    ones are drawn with ``seed``. The plane is spanned by orthonormal e1, e2 (Gram–Schmidt) with the
    first state at (0, 0); coordinates are Euclidean in the network's input space. The box covers
    the projected trajectory and the three states, widened by ``margin`` of its size on each side.
    """
    visited = collect_states(agent, 1, seed)
    x = to_input(agent, visited.states[0])
    if state_space:
        if net.input_dim != 2:
            raise RlscapeError(f"--state-space needs a 2-D input space; this network takes {net.input_dim} inputs: use --states 3")
        origin, e1, e2 = np.zeros(2), np.array([1.0, 0.0]), np.array([0.0, 1.0])
        anchors = np.zeros((0, 2))
    else:
        distinct = np.unique(x, axis=0)
        if len(distinct) < 3:
            raise RlscapeError("the episode visited fewer than 3 distinct states; use another --seed")
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), LINE_SEED_TAG, 3]))
        for _ in range(100):
            pick = distinct[rng.choice(len(distinct), 3, replace=False)]
            try:
                e1, e2 = plane_basis(*pick)
                break
            except RlscapeError:
                continue
        else:
            raise RlscapeError("no three visited states span a plane; use another --seed")
        origin = pick[0]
        anchors = np.stack([(pick - origin) @ e1, (pick - origin) @ e2], axis=1)
    rel = x - origin
    uv = np.stack([rel @ e1, rel @ e2], axis=1)
    off = np.linalg.norm(rel - uv[:, :1] * e1 - uv[:, 1:] * e2, axis=1)
    if box is None:
        pts = np.concatenate([uv, anchors])
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        span = np.maximum(hi - lo, 1e-6)
        lo, hi = lo - margin * span, hi + margin * span
        box = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    part = partition_plane(net, origin, e1, e2, box)
    ds = plane_dataset(part, traj_uv=uv, anchors_uv=anchors, off_plane=off)
    ds.attrs.update(mode="state_space" if state_space else "three_states", episode_return=float(visited.returns[0]))
    return ds


def run_regions_plane(checkpoint: str | Path, out: str | Path, *, state_space: bool = False, seed: int = 0,
                      network: str = "policy", margin: float = 0.25, env_id: str | None = None, algo: str | None = None,
                      overwrite: bool = False) -> Any:
    """``rlscape regions-plane``: the exact 2-D partition of one checkpoint, stored in ``out``."""
    from rlscape.core.policy import load_checkpoint

    if margin < 0:
        raise RlscapeError(f"--margin must be ≥ 0, not {margin}")
    agent = load_checkpoint(checkpoint, env_id, algo=algo)
    net = agent_network(agent, network)
    spec = {"kind": "regions-plane", "checkpoint": str(Path(checkpoint).resolve()), "state_space": state_space,
            "seed": seed, "network": network, "margin": margin, "env_id": env_id, "algo": algo}
    from rlscape.core.lifecycle import open_run

    with open_run(out, spec, overwrite=overwrite) as run:
        ds = plane_through_states(agent, net, state_space=state_space, seed=seed, margin=margin)
        ds.attrs.update(network=network, n_neurons=net.n_neurons, env_id=agent.env.env_id, algo=agent.algo,
                        source=str(Path(checkpoint).resolve()), step=int(agent.info.get("num_timesteps", 0)), seed=seed)
        run.finish(ds)
    return ds
