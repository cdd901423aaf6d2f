"""Step-size search (methods.md §6, seed 000 "Sharp edges"): how far can θ move along d?

α* is the largest step α ≥ 0 with J(θ + α·d) ≥ J(θ) − tol·|J(θ)|. The threshold uses |J(θ)|, so it
is right for negative returns too (the reference's (1 − tol)·J(θ) was not: defect 9). Where J is
not monotone along d, the search finds the *first* crossing: α* is the last evaluated step that
keeps the return before the first evaluated step that loses it.

Read top to bottom: the pure search :func:`find_step_size` (any batched ``evaluate(alphas) → J``)
→ the agent wrapper :func:`stepsize` (θ + α·d with the batched evaluator, common random numbers at
every α, a resumable run directory) → :func:`stepsize_over_training` (one search per checkpoint of
a training run, combined over ``step``).

The search evaluates a *ladder* of geometrically spaced steps per round, so a batched evaluator
does one call per round: round 1 is ``ladder`` steps from ``lo`` to ``hi`` (plus α = 0 when J(θ)
is not given); each later round puts ``ladder`` steps strictly inside the bracket [a, b] (a kept,
b lost), shrinking log(b/a) by a factor ``ladder + 1``, until b/a ≤ 1 + ``rel_precision``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from pydantic import model_validator

from rlscape.analyses.surface import direction_episode_seeds, make_directions
from rlscape.core.dask_executor import check_workers, describe_workers
from rlscape.core.directions import DIRECTION_STREAM, Direction
from rlscape.core.errors import RlscapeError
from rlscape.core.evaluate import BlockResult, Budget, episode_seeds
from rlscape.core.execute import evaluate_points
from rlscape.core.kinds import kind_attrs
from rlscape.core.lifecycle import Run, open_run, over_checkpoints
from rlscape.core.params import check_finite
from rlscape.core.policy import Agent, load_checkpoint
from rlscape.core.runs import checkpoints_label, select_checkpoints
from rlscape.core.spec import CheckpointSpec, EvalSpec, SurfaceSpec

log = logging.getLogger(__name__)

FOUND, NEVER_FALLS, FALLS_IMMEDIATELY = "found", "never_falls", "falls_immediately"


# -- the search ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepSizeResult:
    """The outcome of one search, with its own diagnostics.

    ``alpha`` is α*: the largest evaluated step that keeps J ≥ ``threshold`` before the first
    evaluated step that loses it (``hi`` when none does: ``status == "never_falls"``; 0 when
    already ``lo`` loses it: ``status == "falls_immediately"``). The first crossing lies in
    ``[bracket_lo, bracket_hi]``; with ``status == "found"``, bracket_hi / bracket_lo ≤ 1 +
    rel_precision. ``alphas``/``values`` are every evaluation, in the order made (α = 0 first
    when J(θ) was evaluated by the search); ``rounds[i]`` is the call that made evaluation i.
    """

    alpha: float
    status: str
    j0: float
    threshold: float
    bracket_lo: float
    bracket_hi: float
    alphas: np.ndarray
    values: np.ndarray
    rounds: np.ndarray
    tol: float
    lo: float
    hi: float
    rel_precision: float

    @property
    def n_evaluations(self) -> int:
        """Points evaluated (including α = 0 when the search evaluated J(θ))."""
        return int(self.alphas.size)

    @property
    def n_rounds(self) -> int:
        """Calls made to the batched evaluator."""
        return int(self.rounds.max()) + 1 if self.rounds.size else 0


def threshold_for(j0: float, tol: float) -> float:
    """J(θ) − tol·|J(θ)|: the least return that still counts as "kept" (right for J(θ) < 0)."""
    return float(j0) - float(tol) * abs(float(j0))


def geometric_ladder(a: float, b: float, n: int, *, inclusive: bool) -> np.ndarray:
    """``n`` geometrically spaced steps from a to b (both included), or strictly inside (a, b)."""
    if inclusive:
        return np.geomspace(a, b, n)
    return np.geomspace(a, b, n + 2)[1:-1]


def find_step_size(
    evaluate: Callable[[np.ndarray], np.ndarray],
    j0: float | None = None,
    *,
    tol: float = 0.05,
    lo: float = 1e-7,
    hi: float = 1e3,
    rel_precision: float = 0.02,
    ladder: int = 12,
    max_rounds: int = 50,
) -> StepSizeResult:
    """The largest α ∈ [lo, hi] with ``evaluate([α]) ≥ j0 − tol·|j0|`` (first crossing), searched in log space.

    ``evaluate`` maps steps ``(k,)`` to returns ``(k,)``; it is called once per round with up to
    ``ladder`` steps (plus α = 0 in the first round when ``j0`` is None, so J(θ) comes from the
    same evaluator). Steps never leave [lo, hi] (apart from that α = 0).
    """
    if not (0 < lo < hi and math.isfinite(hi)):
        raise RlscapeError(f"step bounds need 0 < lo < hi < ∞, not lo={lo}, hi={hi}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise RlscapeError(f"--tolerance must be a finite number ≥ 0, not {tol}")
    if not rel_precision > 0:
        raise RlscapeError(f"the relative precision must be positive, not {rel_precision}")
    if ladder < 2:
        raise RlscapeError(f"the ladder needs at least 2 steps per round, not {ladder}")
    alphas: list[float] = []
    values: list[float] = []
    rounds: list[int] = []

    def run(steps: np.ndarray) -> np.ndarray:
        out = np.asarray(evaluate(np.asarray(steps, np.float64)), np.float64).reshape(-1)
        if out.shape != (len(steps),):
            raise RlscapeError(f"the evaluator returned {out.shape[0]} values for {len(steps)} steps")
        r = max(rounds, default=-1) + 1
        alphas.extend(map(float, steps))
        values.extend(map(float, out))
        rounds.extend([r] * len(steps))
        return out

    first = geometric_ladder(lo, hi, ladder, inclusive=True)
    if j0 is None:
        got = run(np.concatenate([[0.0], first]))
        j0, j_first = float(got[0]), got[1:]
    else:
        j_first = run(first)
    if not math.isfinite(j0):
        raise RlscapeError(f"J(θ) is {j0}; the step-size search needs a finite return at θ")
    thr = threshold_for(j0, tol)

    def first_loss(steps: np.ndarray, vals: np.ndarray) -> int | None:
        lost = ~(vals >= thr)  # NaN counts as lost
        return int(np.argmax(lost)) if lost.any() else None

    i = first_loss(first, j_first)
    if i is None:
        status, a, b = NEVER_FALLS, hi, hi
    elif i == 0:
        status, a, b = FALLS_IMMEDIATELY, 0.0, lo
    else:
        status, a, b = FOUND, float(first[i - 1]), float(first[i])
        n_round = 1
        while b / a > 1 + rel_precision:
            if n_round >= max_rounds:
                log.warning("step-size search stopped after %d rounds with bracket [%g, %g]", max_rounds, a, b)
                break
            inner = geometric_ladder(a, b, ladder, inclusive=False)
            # never more points than the precision needs: log(b/a)/(k+1) ≤ log(1+rel) → k
            need = math.ceil(math.log(b / a) / math.log1p(rel_precision)) - 1
            if need < ladder:
                inner = geometric_ladder(a, b, max(1, need), inclusive=False)
            vals = run(inner)
            j = first_loss(inner, vals)
            if j is None:
                a = float(inner[-1])
            else:
                b = float(inner[j])
                if j > 0:
                    a = float(inner[j - 1])
            n_round += 1
    return StepSizeResult(
        alpha=float(a) if status != FALLS_IMMEDIATELY else 0.0, status=status, j0=float(j0), threshold=thr,
        bracket_lo=float(a), bracket_hi=float(b), alphas=np.asarray(alphas), values=np.asarray(values),
        rounds=np.asarray(rounds, np.int64), tol=float(tol), lo=float(lo), hi=float(hi), rel_precision=float(rel_precision),
    )


# -- the agent wrapper -----------------------------------------------------------------------------

class StepSizeSpec(CheckpointSpec):
    """What one step-size search asks for (the identity of its run directory)."""

    kind: Literal["stepsize"] = "stepsize"
    direction: str = "random"
    normalization: Literal["filter", "layer", "none"] = "filter"
    bias: Literal["ignore", "normalize"] = "ignore"
    params: Literal["actor", "critic", "all"] = "actor"
    tolerance: float = 0.05
    lo: float = 1e-7
    hi: float = 1e3
    rel_precision: float = 0.02
    ladder: int = 12
    scale: Literal["unit", "match", "raw"] | None = None
    gradient_episodes: int = 100
    evaluation: EvalSpec = EvalSpec()

    @model_validator(mode="after")
    def _bounds(self) -> StepSizeSpec:
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"--tolerance must be a finite number ≥ 0, not {self.tolerance}; e.g. --tolerance 0.05")
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and 0 < self.lo < self.hi):
            raise ValueError(f"--lo and --hi need 0 < lo < hi, not {self.lo}, {self.hi}")
        if not (math.isfinite(self.rel_precision) and self.rel_precision > 0):
            raise ValueError(f"--precision must be a positive number, not {self.rel_precision}")
        if self.ladder < 2:
            raise ValueError(f"--ladder must be at least 2, not {self.ladder}")
        return self

    def line_spec(self) -> SurfaceSpec:
        """The same direction request as a line, so directions resolve exactly as for lines and planes."""
        return SurfaceSpec(kind="line", checkpoint=self.checkpoint, env_id=self.env_id, vecnormalize=self.vecnormalize,
                           algo=self.algo, grid=(2,), ranges=((0.0, 1.0),), directions=(self.direction,),
                           normalization=self.normalization, bias=self.bias, params=self.params, evaluation=self.evaluation,
                           scale=self.scale, gradient_episodes=self.gradient_episodes)


_EVALS = "evaluations.npz"


class _Cache:
    """Per-episode results by step α, stored in ``evaluations.npz`` after every round (resume)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.rows: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        if path is not None and path.is_file():
            with np.load(path) as z:
                for a, r, n in zip(z["alpha"], z["returns"], z["lengths"], strict=True):
                    self.rows[float(a)] = (r[n > 0], n[n > 0])
            log.info("resuming: %d step(s) already evaluated", len(self.rows))

    def padded(self, alphas: list[float]) -> tuple[np.ndarray, np.ndarray]:
        E = max([len(self.rows[a][0]) for a in alphas], default=0)
        ret = np.full((len(alphas), E), np.nan)
        lens = np.zeros((len(alphas), E), np.int64)
        for i, a in enumerate(alphas):
            r, n = self.rows[a]
            ret[i, : len(r)], lens[i, : len(n)] = r, n
        return ret, lens

    def save(self) -> None:
        if self.path is None:
            return
        alphas = list(self.rows)
        ret, lens = self.padded(alphas)
        tmp = self.path.with_name("evaluations.tmp.npz")
        np.savez(tmp, alpha=np.asarray(alphas), returns=ret, lengths=lens)
        tmp.replace(self.path)


def stepsize(
    spec: StepSizeSpec,
    out: str | Path | None = None,
    *,
    agent: Agent | None = None,
    overwrite: bool = False,
    workers: int | Any | None = None,
    max_envs: int | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """Search α* along the spec's direction from its checkpoint; with ``out``, store a resumable run.

    Every step is evaluated with the same episodes (reset seeds and action noise: common random
    numbers), J(θ) included. Returns a Dataset with dims ``alpha`` (every evaluated step, sorted,
    0 first) and ``episode``; α* and the search's diagnostics are attributes.
    """
    check_workers(workers)
    if agent is None:
        agent = load_checkpoint(spec.checkpoint, spec.env_id, vecnormalize=spec.vecnormalize, algo=spec.algo)
    plan = _checked(spec, agent)
    if out is None:
        return search_step_size(None, spec, *plan, workers=workers, max_envs=max_envs, progress=progress)
    with open_run(out, spec.model_dump(mode="json"), overwrite=overwrite, owned=(_EVALS,)) as run:
        ds = search_step_size(run, spec, *plan, workers=workers, max_envs=max_envs, progress=progress)
        run.finish(ds)
    return ds


def _checked(spec: StepSizeSpec, agent: Agent) -> tuple[Agent, dict[str, np.ndarray], Direction, bool]:
    """Check the inputs of one search: (agent, θ0, the direction, whether it is a checkpoint difference)."""
    agent.check_sampling(spec.evaluation.deterministic)
    theta0 = agent.parameters(spec.params)
    check_finite(theta0, "the policy")
    dirs, interpolate = make_directions(spec.line_spec(), agent, theta0)
    if dirs[0].norm == 0:
        raise RlscapeError("the direction is zero; the step size along it is undefined — choose another --direction")
    return agent, theta0, dirs[0], interpolate


def search_step_size(run: Run | None, spec: StepSizeSpec, agent: Agent, theta0: dict[str, np.ndarray], d: Direction,
                     interpolate: bool, *, workers: int | Any | None = None, max_envs: int | None = None,
                     progress: bool = True) -> xr.Dataset:
    """The search inside an open run (``None``: in memory); evaluations are cached there for a resume."""
    max_envs = max_envs or agent.env.default_max_envs()
    if run is not None:
        run.dir.save_direction("dir1", d, theta0)
        run.record(env=agent.env.describe(), algo=agent.algo, parameter_names=list(theta0),
                   seeds={"directions": f"SeedSequence([{spec.evaluation.seed}, {DIRECTION_STREAM:#x}, 0])",
                          **episode_seeds(spec.evaluation.seed), **direction_episode_seeds([d])})
    cache = _Cache(run.path / _EVALS if run is not None else None)
    ev = spec.evaluation
    budget = Budget(episodes=ev.episodes, steps=ev.steps)
    bar = _progress_bar(progress)
    steps_taken = [0]
    t0 = time.perf_counter()

    def evaluate(alphas: np.ndarray) -> np.ndarray:
        todo = [float(a) for a in alphas if float(a) not in cache.rows]
        if todo:
            coords = np.asarray(todo, np.float64)[:, None]

            def on_chunk(points: np.ndarray, res: BlockResult) -> None:
                for p, r, n in zip(points, res.returns, res.lengths, strict=True):
                    cache.rows[todo[int(p)]] = (r[n > 0], n[n > 0])
                steps_taken[0] += res.env_steps
                if bar is not None:
                    bar.update(len(points))

            evaluate_points(agent, theta0, [d.values], coords, np.arange(len(todo)), budget, seed=ev.seed,
                            deterministic=ev.deterministic, workers=workers, max_envs=max_envs, on_chunk=on_chunk)
            cache.save()
        means = np.array([float(np.mean(cache.rows[float(a)][0])) for a in alphas])
        if bar is not None:
            bar.set_postfix_str(f"J in [{np.nanmin(means):.4g}, {np.nanmax(means):.4g}]")
        return means

    try:
        result = find_step_size(evaluate, None, tol=spec.tolerance, lo=spec.lo, hi=spec.hi,
                                rel_precision=spec.rel_precision, ladder=spec.ladder)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    attrs: dict[str, Any] = {
        **kind_attrs("stepsize"), "env_id": agent.env.env_id, "algo": agent.algo, "checkpoint": agent.source,
        "params": spec.params, "normalization": spec.normalization, "bias": spec.bias, "seed": ev.seed,
        "deterministic": int(ev.deterministic), "episodes": ev.episodes or 0, "steps": ev.steps or 0, "gamma": agent.gamma,
        "direction_kind": "difference" if interpolate else str(d.meta.get("kind")), "direction_label": d.label(),
        "direction_norm": d.norm, "n_parameters": int(sum(v.size for v in theta0.values())),
    }
    ds = build_stepsize_dataset(result, cache, attrs)
    if run is not None:
        run.record(env_steps_this_session=steps_taken[0], alpha_star=result.alpha, search_status=result.status,
                   n_evaluations=result.n_evaluations, n_rounds=result.n_rounds, workers=describe_workers(workers),
                   search_wall_time_s=round(wall, 3))
    log.info("α* = %.4g (%s) after %d evaluations in %d rounds; J(θ) = %.4g, threshold %.4g",
             result.alpha, result.status, result.n_evaluations, result.n_rounds, result.j0, result.threshold)
    return ds


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(unit="pt", desc="step-size search", dynamic_ncols=True, mininterval=0.5)


def build_stepsize_dataset(result: StepSizeResult, cache: _Cache, attrs: dict[str, Any]) -> xr.Dataset:
    """Every evaluation as a Dataset over ``alpha`` (sorted) × ``episode``; the search in the attributes."""
    order = np.argsort(result.alphas, kind="stable")
    alphas = [float(a) for a in result.alphas[order]]
    returns, lengths = cache.padded(alphas)
    n = (lengths > 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(returns, axis=1) / n
        std = np.sqrt(np.nansum((returns - mean[:, None]) ** 2, axis=1) / (n - 1))
        std = np.where(n > 1, std, np.nan)
        sem = std / np.sqrt(n)
    j0_sem = float(sem[alphas.index(0.0)]) if 0.0 in alphas else float("nan")
    data = {
        "returns": (("alpha", "episode"), returns, {"long_name": "episode return (undiscounted, every reward)"}),
        "lengths": (("alpha", "episode"), lengths.astype(np.float64), {"long_name": "episode length (steps)"}),
        "return_mean": (("alpha",), mean, {"long_name": "mean return"}),
        "return_std": (("alpha",), std, {"long_name": "std of returns (ddof=1)"}),
        "return_sem": (("alpha",), sem, {"long_name": "standard error of the mean return"}),
        "n_episodes": (("alpha",), n.astype(np.int64), {"long_name": "episodes evaluated"}),
        "round": (("alpha",), result.rounds[order], {"long_name": "search round that evaluated this step"}),
    }
    ds = xr.Dataset(data, coords={"alpha": ("alpha", np.asarray(alphas)), "episode": ("episode", np.arange(returns.shape[1]))})
    ds["alpha"].attrs["long_name"] = "step along the direction"
    ds.attrs.update(attrs)
    ds.attrs.update({
        "alpha_star": result.alpha, "status": result.status, "j0": result.j0, "j0_sem": j0_sem,
        "threshold": result.threshold, "tolerance": result.tol, "bracket_lo": result.bracket_lo,
        "bracket_hi": result.bracket_hi, "lo": result.lo, "hi": result.hi, "rel_precision": result.rel_precision,
        "n_evaluations": result.n_evaluations, "n_rounds": result.n_rounds,
        "criterion": "largest α (first crossing) with J(θ+α·d) ≥ J(θ) − tol·|J(θ)|",
    })
    return ds


# -- over training ---------------------------------------------------------------------------------

def stepsize_over_training(
    run_dir: str | Path,
    template: StepSizeSpec,
    out: str | Path,
    *,
    checkpoints: str | None = None,
    overwrite: bool = False,
    workers: int | Any | None = None,
    max_envs: int | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """One search per checkpoint of a training run (``OUT/steps/<step>/``), combined over ``step``.

    ``template`` holds everything but the checkpoint. Finished sub-runs of the same spec are
    reused, so an interrupted run resumes where it stopped. Returns a Dataset with dim ``step``
    (α*, status, J(θ) and its SEM, threshold, bracket, counts) and ``evaluation`` (the evaluated
    (α, J) pairs of each checkpoint, NaN-padded).
    """
    selected = select_checkpoints(run_dir, checkpoints)
    top_spec = {"kind": "stepsize-over-training", "run": str(Path(run_dir).resolve()),
                "checkpoints": checkpoints_label(checkpoints), "search": template.model_dump(mode="json", exclude={"checkpoint"})}
    specs = {step: template.model_copy(update={"checkpoint": str(Path(folder).resolve())}) for step, folder in selected}

    def compute(step: int, folder: Path, run: Run) -> xr.Dataset:
        spec = specs[step]
        agent = load_checkpoint(spec.checkpoint, spec.env_id, vecnormalize=spec.vecnormalize, algo=spec.algo)
        return search_step_size(run, spec, *_checked(spec, agent), workers=workers, max_envs=max_envs, progress=progress)

    return over_checkpoints(out, top_spec, selected, sub_spec=lambda step, _f: specs[step].model_dump(mode="json"),
                            compute=compute, combine=lambda done: combine_over_training(done, Path(run_dir)),
                            overwrite=overwrite, progress=progress, record={"training_run": str(Path(run_dir).resolve())})


def combine_over_training(per_step: list[tuple[int, xr.Dataset]], run_dir: Path | None = None) -> xr.Dataset:
    """Stack single-checkpoint searches along ``step``."""
    steps = np.array([s for s, _ in per_step], np.int64)
    K = max(int(ds.sizes["alpha"]) for _, ds in per_step)
    ev_alpha = np.full((len(steps), K), np.nan)
    ev_mean = np.full((len(steps), K), np.nan)
    ev_sem = np.full((len(steps), K), np.nan)
    scalars: dict[str, list[Any]] = {k: [] for k in ("alpha_star", "j0", "j0_sem", "threshold", "bracket_lo", "bracket_hi",
                                                     "n_evaluations", "n_rounds", "direction_norm")}
    status = []
    for i, (_, ds) in enumerate(per_step):
        k = int(ds.sizes["alpha"])
        ev_alpha[i, :k] = ds["alpha"].values
        ev_mean[i, :k] = ds["return_mean"].values
        ev_sem[i, :k] = ds["return_sem"].values
        for key in scalars:
            scalars[key].append(ds.attrs[key])
        status.append(str(ds.attrs["status"]))
    first = per_step[0][1].attrs
    data: dict[str, Any] = {
        "alpha_star": (("step",), np.asarray(scalars["alpha_star"], np.float64),
                       {"long_name": "largest step keeping the return within tolerance (α*)"}),
        "status": (("step",), np.asarray(status, dtype="<U20"), {"long_name": "found | never_falls (α* = hi) | falls_immediately (α* = 0)"}),
        "j0": (("step",), np.asarray(scalars["j0"], np.float64), {"long_name": "mean return at the checkpoint J(θ)"}),
        "j0_sem": (("step",), np.asarray(scalars["j0_sem"], np.float64), {"long_name": "standard error of J(θ)"}),
        "threshold": (("step",), np.asarray(scalars["threshold"], np.float64), {"long_name": "J(θ) − tol·|J(θ)|"}),
        "bracket_lo": (("step",), np.asarray(scalars["bracket_lo"], np.float64), {"long_name": "last kept step"}),
        "bracket_hi": (("step",), np.asarray(scalars["bracket_hi"], np.float64), {"long_name": "first lost step"}),
        "n_evaluations": (("step",), np.asarray(scalars["n_evaluations"], np.int64), {"long_name": "points evaluated"}),
        "n_rounds": (("step",), np.asarray(scalars["n_rounds"], np.int64), {"long_name": "batched evaluation rounds"}),
        "direction_norm": (("step",), np.asarray(scalars["direction_norm"], np.float64), {"long_name": "‖d‖"}),
        "eval_alpha": (("step", "evaluation"), ev_alpha, {"long_name": "evaluated step α (sorted; NaN = padding)"}),
        "eval_return_mean": (("step", "evaluation"), ev_mean, {"long_name": "mean return at the evaluated step"}),
        "eval_return_sem": (("step", "evaluation"), ev_sem, {"long_name": "SEM of the return at the evaluated step"}),
    }
    keep = ("env_id", "algo", "params", "normalization", "bias", "seed", "deterministic", "episodes", "steps", "gamma",
            "direction_kind", "direction_label", "tolerance", "lo", "hi", "rel_precision", "criterion")
    attrs = {k: first[k] for k in keep if k in first}
    attrs.update(kind_attrs("stepsize-over-training"))
    if run_dir is not None:
        attrs["run"] = str(run_dir.resolve())
    ds = xr.Dataset(data, coords={"step": ("step", steps), "evaluation": ("evaluation", np.arange(K))}, attrs=attrs)
    ds["step"].attrs["long_name"] = "training step of the checkpoint"
    return ds
