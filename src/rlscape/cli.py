"""The ``rlscape`` command line: thin — parse → spec → analysis → store → plot.

Every user error is one line on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rlscape.core.errors import RlscapeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Map and measure the reward landscape of RL policies. `rlscape quickstart` shows it all in a few minutes.",
)
log = logging.getLogger("rlscape")


# -- shared option types -------------------------------------------------------------------------
Out = Annotated[Path, typer.Option("--out", "-o", help="Run directory to write (resumed if it holds an unfinished run of the same spec).")]
EnvOpt = Annotated[str | None, typer.Option("--env", help="Env id, needed only when the checkpoint does not name it; module:Env-v0 for custom envs.")]
VecNorm = Annotated[Path | None, typer.Option("--vecnormalize", help="VecNormalize statistics for a bare .zip model.")]
AlgoOpt = Annotated[str | None, typer.Option("--algo", help="ppo|a2c|trpo|sac|td3|ddpg|dqn; detected from the model when omitted.")]
Episodes = Annotated[str | None, typer.Option("--episodes", "-e", help="Complete episodes per point (default 20 unless --steps); 'auto' with --target-sem: adaptive.")]
TargetSem = Annotated[float | None, typer.Option("--target-sem", help="With --episodes auto: add episodes in rounds where the SEM of the mean return is above this.", rich_help_panel="Adaptive budget")]
MinEpisodes = Annotated[int | None, typer.Option("--min-episodes", help="With --episodes auto: episodes every point gets first (default 10).", rich_help_panel="Adaptive budget")]
MaxEpisodes = Annotated[int | None, typer.Option("--max-episodes", help="With --episodes auto: most episodes a point gets (default 400).", rich_help_panel="Adaptive budget")]
Steps = Annotated[int | None, typer.Option("--steps", help="Instead of --episodes: episodes until at least S steps per point.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of directions, env resets and action noise.")]
Det = Annotated[bool, typer.Option("--deterministic", help="Act with the mode of the policy instead of sampling.")]
Norm = Annotated[str, typer.Option("--normalization", help="filter|layer|none normalisation of random directions.")]
Bias = Annotated[str, typer.Option("--bias", help="ignore|normalize: 1-D tensors (biases, log_std) in random directions.")]
Params = Annotated[str, typer.Option("--params", help="Which parameters move: actor|all|critic.")]
Workers = Annotated[int | None, typer.Option("--workers", "-w", help="Worker processes (default: all cores).")]
MaxEnvs = Annotated[int | None, typer.Option("--max-envs", help="Envs stepped at once per worker (memory bound); default 512, MuJoCo 64, Atari 32.")]
GenericEnvs = Annotated[bool, typer.Option("--generic-envs", help="Step Gymnasium's own envs even where a native batched env exists (same results, slower).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a finished or different run in --out.")]
ScaleOpt = Annotated[str | None, typer.Option("--scale", help="unit|match|raw: scale of gradient/eigenvector/file directions (default: gradient match, files as stored).")]
GradEpisodes = Annotated[int, typer.Option("--gradient-episodes", help="Episodes of the REINFORCE estimate behind a `gradient` direction.")]
PlotOpt = Annotated[bool, typer.Option("--plot/--no-plot", help="Draw the figures when done.")]
AllCkpts = Annotated[bool, typer.Option("--all-checkpoints", hidden=True, help="The same as --checkpoints all.")]
Ckpts = Annotated[str | None, typer.Option("--checkpoints", help="For a training run: 'all' (the default) or steps a,b,c; one analysis per checkpoint (dim step).")]


# -- where the points are evaluated: ONE option set, added to every command that evaluates populations --
_EXECUTOR_OPTIONS: dict[str, tuple[Any, Any]] = {  # name → (annotation, default)
    "executor": (Annotated[str, typer.Option("--executor", help="local: processes on this machine (--workers) | dask: a Dask cluster (--scheduler or --cluster).", rich_help_panel="Scale-out")], "local"),
    "scheduler": (Annotated[str | None, typer.Option("--scheduler", help="With --executor dask: address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: env RLSCAPE_SCHEDULER).", rich_help_panel="Scale-out")], None),
    "cluster": (Annotated[str | None, typer.Option("--cluster", help="slurm|pbs: start Dask workers as batch jobs (dask-jobqueue).", rich_help_panel="Scale-out")], None),
    "jobs": (Annotated[int, typer.Option("--jobs", help="With --cluster: batch jobs (nodes) to submit.", rich_help_panel="Scale-out")], 1),
    "cores": (Annotated[int | None, typer.Option("--cores", help="With --cluster: cores per job (one single-threaded worker each).", rich_help_panel="Scale-out")], None),
    "memory": (Annotated[str | None, typer.Option("--memory", help="With --cluster: memory per job, e.g. 64GB.", rich_help_panel="Scale-out")], None),
    "queue": (Annotated[str | None, typer.Option("--queue", help="With --cluster: partition / queue.", rich_help_panel="Scale-out")], None),
    "walltime": (Annotated[str | None, typer.Option("--walltime", help="With --cluster: wall time per job, e.g. 04:00:00.", rich_help_panel="Scale-out")], None),
    "dask_timeout": (Annotated[float, typer.Option("--dask-timeout", help="Seconds to wait for the scheduler and its first worker.", rich_help_panel="Scale-out")], 60.0),
}


def scale_out(command: Any) -> Any:
    """Give ``command`` the executor options; it then receives ``workers`` as a process count (or
    None) or a connected ``dask.distributed.Client``, resolved once here and closed afterwards."""
    import functools
    import inspect

    sig = inspect.signature(command, eval_str=True)
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
             for name, (annotation, default) in _EXECUTOR_OPTIONS.items()]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        from rlscape.core.dask_executor import ExecutorSpec

        opts = {name: kwargs.pop(name) for name in _EXECUTOR_OPTIONS}
        spec = ExecutorSpec(executor=opts["executor"], workers=kwargs.pop("workers"), scheduler=opts["scheduler"],
                            cluster=opts["cluster"], jobs=opts["jobs"], cores=opts["cores"], memory=opts["memory"],
                            queue=opts["queue"], walltime=opts["walltime"], timeout=opts["dask_timeout"])
        with spec.open() as workers:
            return command(**kwargs, workers=workers)

    params = list(sig.parameters.values())
    wrapper.__signature__ = sig.replace(parameters=params + extra)  # type: ignore[attr-defined]
    return wrapper


def _pair(text: str, what: str, cast: type = float) -> tuple[Any, Any]:
    parts = [p for p in text.replace(" ", "").split(",") if p != ""]
    try:
        vals = [cast(p) for p in parts]
    except ValueError:
        raise RlscapeError(f"{what} must be a number or two numbers separated by a comma, not {text!r}") from None
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) == 2:
        return vals[0], vals[1]
    raise RlscapeError(f"{what} must be a number or two numbers separated by a comma, not {text!r}")


def _eval(episodes: str | int | None, steps: int | None, seed: int, deterministic: bool, target_sem: float | None = None,
          min_episodes: int | None = None, max_episodes: int | None = None) -> Any:
    from rlscape.core.spec import EvalSpec

    return EvalSpec.from_budget(episodes, steps, seed, deterministic, target_sem, min_episodes, max_episodes)


def _finish(ds: Any, out: Path, plot: bool) -> None:
    typer.echo(f"results: {out / 'results.zarr'}  (open with rlscape.load('{out}') or xarray.open_zarr)")
    if plot:
        _plot(out, ds)


def _plot(out: Path, ds: Any, log_scale: bool = False, formats: tuple[str, ...] = ("png", "pdf"), gif: bool = True) -> None:
    from rlscape.plots import render_run

    try:
        files = render_run(ds, out / "plots", log_scale=log_scale, formats=formats, gif=gif, run_dir=out)
    except ValueError as exc:
        raise RlscapeError(str(exc)) from None
    typer.echo(f"figures: {out / 'plots'}/  ({', '.join(sorted(f.name for f in files))})")


@app.command()
@scale_out
def plane(
    checkpoint: Annotated[Path, typer.Argument(help="Folder with model.zip (+ vecnormalize.pkl, env.json) or an SB3 .zip.")],
    out: Out,
    env: EnvOpt = None,
    vecnormalize: VecNorm = None,
    algo: AlgoOpt = None,
    grid: Annotated[str, typer.Option("--grid", "-g", help="Odd grid size G, or G1,G2.")] = "21",
    magnitude: Annotated[str, typer.Option("--magnitude", "-m", help="Offsets span [-M, M] along each direction; or M1,M2.")] = "1.0",
    dir1: Annotated[str, typer.Option("--dir1", help="random | gradient | PATH to a direction .npz keyed by parameter name.")] = "random",
    dir2: Annotated[str, typer.Option("--dir2", help="random | gradient | PATH to a direction .npz.")] = "random",
    episodes: Episodes = None,
    target_sem: TargetSem = None,
    min_episodes: MinEpisodes = None,
    max_episodes: MaxEpisodes = None,
    steps: Steps = None,
    seed: Seed = 0,
    deterministic: Det = False,
    normalization: Norm = "filter",
    bias: Bias = "ignore",
    params: Params = "actor",
    workers: Workers = None,
    max_envs: MaxEnvs = None,
    generic_envs: GenericEnvs = False,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
    all_checkpoints: AllCkpts = False,
    checkpoints: Ckpts = None,
    scale: ScaleOpt = None,
    gradient_episodes: GradEpisodes = 100,
) -> None:
    """Return on the plane θ0 + α·d1 + β·d2 around a checkpoint (dims alpha, beta, episode).

    With a training run and --all-checkpoints/--checkpoints: one plane per checkpoint (dims step,
    alpha, beta, episode); --dir1/--dir2 may then be a folder of <step>.npz or a template with {step}.
    """
    from rlscape.analyses.surface import run_surface
    from rlscape.core.spec import SurfaceSpec, validated

    g = _pair(grid, "--grid", int)
    m = _pair(magnitude, "--magnitude")
    spec = validated(SurfaceSpec, kind="plane", checkpoint=str(checkpoint), env_id=env,
                     vecnormalize=str(vecnormalize) if vecnormalize else None, algo=algo, grid=g,
                     ranges=((-m[0], m[0]), (-m[1], m[1])), directions=(dir1, dir2), normalization=normalization,
                     bias=bias, params=params, evaluation=_eval(episodes, steps, seed, deterministic, target_sem, min_episodes, max_episodes),
                     scale=scale, gradient_episodes=gradient_episodes)
    if _over_training(checkpoint, all_checkpoints, checkpoints):
        _surface_over_training(spec, out, checkpoints, overwrite, workers, max_envs, plot, generic_envs)
        return
    ds = run_surface(spec, out, overwrite=overwrite, workers=workers, max_envs=max_envs,
                     generic_envs=generic_envs)  # type: ignore[arg-type]
    _finish(ds, out, plot)


@app.command()
@scale_out
def line(
    checkpoint: Annotated[Path, typer.Argument(help="Folder with model.zip (+ vecnormalize.pkl, env.json) or an SB3 .zip.")],
    out: Out,
    direction: Annotated[str, typer.Option("--direction", "-d", help="random | gradient | PATH to a direction .npz | CHECKPOINT2 (interpolate θ1→θ2).")] = "random",
    points: Annotated[int, typer.Option("--points", "-n", help="Points on the line, both ends included.")] = 21,
    range_: Annotated[str | None, typer.Option("--range", help="A,B offsets (default -1,1; 0,1 for an interpolation). Write --range=-1,1.")] = None,
    env: EnvOpt = None,
    vecnormalize: VecNorm = None,
    algo: AlgoOpt = None,
    episodes: Episodes = None,
    target_sem: TargetSem = None,
    min_episodes: MinEpisodes = None,
    max_episodes: MaxEpisodes = None,
    steps: Steps = None,
    seed: Seed = 0,
    deterministic: Det = False,
    normalization: Norm = "filter",
    bias: Bias = "ignore",
    params: Params = "actor",
    workers: Workers = None,
    max_envs: MaxEnvs = None,
    generic_envs: GenericEnvs = False,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
    all_checkpoints: AllCkpts = False,
    checkpoints: Ckpts = None,
    scale: ScaleOpt = None,
    gradient_episodes: GradEpisodes = 100,
) -> None:
    """Return along θ0 + α·d, or along (1−α)·θ1 + α·θ2 toward a second checkpoint (dims alpha, episode).

    With a training run and --all-checkpoints/--checkpoints: one line per checkpoint (dims step,
    alpha, episode); --direction may then be a folder of <step>.npz or a template with {step}.
    """
    from rlscape.analyses.surface import run_surface
    from rlscape.core.runs import is_checkpoint
    from rlscape.core.spec import SurfaceSpec, validated

    if range_ is None:
        rng = (0.0, 1.0) if is_checkpoint(direction) else (-1.0, 1.0)
    else:
        rng = _pair(range_, "--range")
    spec = validated(SurfaceSpec, kind="line", checkpoint=str(checkpoint), env_id=env,
                     vecnormalize=str(vecnormalize) if vecnormalize else None, algo=algo, grid=(points,),
                     ranges=(rng,), directions=(direction,), normalization=normalization, bias=bias, params=params,
                     evaluation=_eval(episodes, steps, seed, deterministic, target_sem, min_episodes, max_episodes),
                     scale=scale, gradient_episodes=gradient_episodes)
    if _over_training(checkpoint, all_checkpoints, checkpoints):
        _surface_over_training(spec, out, checkpoints, overwrite, workers, max_envs, plot, generic_envs)
        return
    ds = run_surface(spec, out, overwrite=overwrite, workers=workers, max_envs=max_envs,
                     generic_envs=generic_envs)  # type: ignore[arg-type]
    _finish(ds, out, plot)


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by rlscape.")],
    log_scale: Annotated[bool, typer.Option("--log-scale", help="Symmetric-log colour/y scale (off unless asked).")] = False,
    formats: Annotated[str, typer.Option("--formats", help="Static formats, comma-separated.")] = "png,pdf",
    gif: Annotated[bool, typer.Option("--gif", help="Planes over training: also surface.gif (+ surface.mp4 when ffmpeg is installed).")] = False,
) -> None:
    """Redraw the figures of any run from its stored results (into RUN_DIR/plots), the same ones its command drew.

    Planes: 3-D surface, heatmap, contour (+ HTML); lines with ±SEM bands; over training: a curve,
    small multiples (and a GIF with --gif), a step × offset heat map; gradient, Hessian, step-size,
    cliff and cliff-dive runs: their figures.
    """
    from rlscape.core.kinds import kind_of
    from rlscape.core.results import load

    ds = load(run_dir)
    kind = kind_of(ds)
    if gif and kind.name != "plane-over-training":
        raise RlscapeError(f"--gif needs planes over training (rlscape plane RUN --all-checkpoints); {run_dir} holds a {kind.name} run")
    _plot(run_dir, ds, log_scale=log_scale, formats=tuple(f for f in formats.split(",") if f), gif=gif)
    typer.echo(f"{kind.title}: {kind.headline(ds)}")


def _over_training(checkpoint: Path, all_checkpoints: bool, checkpoints: str | None) -> bool:
    """Whether CHECKPOINT is a training run analysed checkpoint by checkpoint (``--checkpoints``: all by default)."""
    from rlscape.core.runs import over_training

    if all_checkpoints and checkpoints is not None and checkpoints.strip().lower() != "all":
        raise RlscapeError("--all-checkpoints is --checkpoints all; give one of them")
    return over_training(checkpoint, "all" if all_checkpoints else checkpoints)


def _surface_over_training(spec: Any, out: Path, checkpoints: str | None, overwrite: bool, workers: int | None,
                           max_envs: int | None, plot: bool, generic_envs: bool = False) -> None:
    from rlscape.analyses.overtrain import run_surface_over_training

    ds = run_surface_over_training(spec, out, checkpoints=checkpoints, overwrite=overwrite, workers=workers, max_envs=max_envs,
                                   generic_envs=generic_envs)
    _finish(ds, out, plot)


@app.command()
@scale_out
def population(
    checkpoint: Annotated[Path, typer.Argument(help="Folder with model.zip (+ vecnormalize.pkl, env.json) or an SB3 .zip.")],
    thetas: Annotated[Path, typer.Option("--thetas", help=".npz of parameter name → array (K, *shape): K explicit parameter vectors.")],
    out: Out,
    env: EnvOpt = None,
    algo: AlgoOpt = None,
    episodes: Episodes = None,
    target_sem: TargetSem = None,
    min_episodes: MinEpisodes = None,
    max_episodes: MaxEpisodes = None,
    steps: Steps = None,
    seed: Seed = 0,
    deterministic: Det = False,
    workers: Workers = None,
    max_envs: MaxEnvs = None,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Evaluate K explicit parameter vectors (names not given stay at θ0) on common episodes (dims member, episode)."""
    import numpy as np

    from rlscape.core.policy import load_checkpoint
    from rlscape.core.population import evaluate_population

    if not thetas.is_file():
        raise RlscapeError(f"--thetas {thetas} does not exist; give an .npz of parameter name → array (K, *shape)")
    try:
        with np.load(thetas, allow_pickle=False) as z:
            members = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise RlscapeError(f"cannot read --thetas {thetas} ({exc}); give an .npz written by numpy.savez") from None
    agent = load_checkpoint(checkpoint, env, algo=algo)
    ds = evaluate_population(agent, members, episodes=episodes, steps=steps, seed=seed, deterministic=deterministic,
                             workers=workers, out=out, overwrite=overwrite, max_envs=max_envs, target_sem=target_sem,
                             min_episodes=min_episodes, max_episodes=max_episodes)
    _finish(ds, out, plot)


@app.command()
@scale_out
def curve(
    run: Annotated[Path, typer.Argument(help="A training run: DIR/checkpoints/<step>/model.zip (as `rlscape train` writes).")],
    out: Out,
    checkpoints: Ckpts = None,
    env: EnvOpt = None,
    algo: AlgoOpt = None,
    episodes: Episodes = None,
    target_sem: TargetSem = None,
    min_episodes: MinEpisodes = None,
    max_episodes: MaxEpisodes = None,
    steps: Steps = None,
    seed: Seed = 0,
    deterministic: Det = False,
    workers: Annotated[int | None, typer.Option("--workers", "-w", help="Checkpoints evaluated at once, one per process (default: all cores).")] = None,
    max_envs: MaxEnvs = None,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Training curve: the return of each checkpoint, same episodes for all (dims step, episode), plotted ±SEM."""
    from rlscape.analyses.overtrain import CurveSpec, run_curve
    from rlscape.core.spec import validated

    spec = validated(CurveSpec, run=str(run), checkpoints=checkpoints.strip() if checkpoints else "all", env_id=env, algo=algo,
                     evaluation=_eval(episodes, steps, seed, deterministic, target_sem, min_episodes, max_episodes))
    ds = run_curve(spec, out, overwrite=overwrite, workers=workers, max_envs=max_envs)  # type: ignore[arg-type]
    _finish(ds, out, plot)


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the agent, the plane and the figures go.")] = Path("runs/quickstart"),
    train_steps: Annotated[int, typer.Option("--train-steps", help="PPO training steps on CartPole-v1.")] = 30_000,
    grid: Annotated[int, typer.Option("--grid", "-g", help="Odd grid size.")] = 21,
    magnitude: Annotated[float, typer.Option("--magnitude", "-m")] = 1.0,
    episodes: Annotated[int, typer.Option("--episodes", "-e")] = 20,
    seed: Seed = 0,
    workers: Workers = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Retrain and recompute everything.")] = False,
) -> None:
    """Train a small PPO agent on CartPole-v1, map a 21×21 reward surface around it, draw it."""
    import time

    from rlscape.analyses.surface import run_surface
    from rlscape.core.spec import SurfaceSpec, validated
    from rlscape.training.quickstart import train_quickstart_agent

    t0 = time.perf_counter()
    agent_dir = train_quickstart_agent(out / "agent", steps=train_steps, seed=seed, overwrite=overwrite)
    spec = validated(SurfaceSpec, kind="plane", checkpoint=str(agent_dir), grid=(grid, grid),
                     ranges=((-magnitude, magnitude),) * 2, directions=("random", "random"),
                     evaluation=_eval(episodes, None, seed, False))
    from rlscape.core.lifecycle import finished_result

    plane_dir = out / "plane"
    ds = None if overwrite else finished_result(plane_dir, spec.model_dump(mode="json"))
    if ds is not None:
        log.info("the plane in %s is already complete; redrawing it", plane_dir)
    else:
        ds = run_surface(spec, plane_dir, overwrite=overwrite, workers=workers)  # type: ignore[arg-type]
    _finish(ds, plane_dir, True)
    typer.echo(f"quickstart done in {time.perf_counter() - t0:.0f} s: agent {agent_dir}, plane {plane_dir}")


@app.command()
def train(
    env_id: Annotated[str, typer.Argument(help="Gymnasium env id (module:Env-v0 for custom envs; Atari ids get SB3's Atari preprocessing).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Training run directory (checkpoints/, env.json, train.json).")],
    steps: Annotated[int, typer.Option("--steps", help="Total env steps (on-policy runs end at the next full rollout).")],
    algo: Annotated[str, typer.Option("--algo", help="ppo|a2c|trpo|sac|td3|ddpg|dqn.")] = "ppo",
    save_every: Annotated[int | None, typer.Option("--save-every", help="Checkpoint every K steps (default steps/10); step 0 and the last step are always saved.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the model, the envs and the exploration.")] = 0,
    n_envs: Annotated[int | None, typer.Option("--n-envs", help="Parallel training envs (default: the tuned value).")] = None,
    hyperparams: Annotated[str | None, typer.Option("--hyperparams", help="Overrides of the tuned defaults: a YAML/JSON file or inline '{\"learning_rate\": 3e-4}'.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto (GPU for CNN policies when there is one) | cpu | cuda.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    replay_buffer: Annotated[bool, typer.Option("--replay-buffer/--no-replay-buffer", help="Save the replay buffer with each checkpoint (off-policy).")] = True,
) -> None:
    """Train an SB3 agent, saving whole checkpoints (model + optimizer, VecNormalize, replay buffer) as it goes."""
    from rlscape.core.runs import list_checkpoints
    from rlscape.training.train import train as run_training

    try:
        run_training(env_id, algo, steps=steps, out=out, save_every=save_every, seed=seed, n_envs=n_envs,
                     hyperparams=hyperparams, device=device, resume=resume, replay_buffer=replay_buffer)
    except KeyboardInterrupt:
        done = list_checkpoints(out)
        last = f"step {done[-1][0]}" if done else "nothing"
        typer.echo(f"interrupted: checkpoints up to {last} are saved in {out}; rerun with --resume to continue", err=True)
        sys.exit(130)
    done = list_checkpoints(out)
    typer.echo(f"checkpoints: {out / 'checkpoints'}/  ({len(done)}, steps {done[0][0]} … {done[-1][0]})")


# -- step size and cliffs (methods.md §6) ---------------------------------------------------------

@app.command()
@scale_out
def stepsize(
    target: Annotated[Path, typer.Argument(help="A checkpoint (folder with model.zip, or an SB3 .zip) or a training run (DIR/checkpoints/<step>/).")],
    out: Out,
    direction: Annotated[str, typer.Option("--direction", "-d", help="random | gradient | PATH to a direction .npz | CHECKPOINT2 (d = θ2 − θ1).")] = "random",
    tolerance: Annotated[float, typer.Option("--tolerance", help="Keep J(θ+α·d) ≥ J(θ) − tol·|J(θ)|.")] = 0.05,
    lo: Annotated[float, typer.Option("--lo", help="Smallest step searched.")] = 1e-7,
    hi: Annotated[float, typer.Option("--hi", help="Largest step searched (α* = hi when J never falls).")] = 1e3,
    precision: Annotated[float, typer.Option("--precision", help="Stop when the bracket's ratio is ≤ 1 + this.")] = 0.02,
    ladder: Annotated[int, typer.Option("--ladder", help="Steps evaluated together per round (one batched call).")] = 12,
    scale: ScaleOpt = None,
    gradient_episodes: GradEpisodes = 100,
    all_checkpoints: AllCkpts = False,
    checkpoints: Ckpts = None,
    env: EnvOpt = None,
    vecnormalize: VecNorm = None,
    algo: AlgoOpt = None,
    episodes: Episodes = None,
    steps: Steps = None,
    seed: Seed = 0,
    deterministic: Det = False,
    normalization: Norm = "filter",
    bias: Bias = "ignore",
    params: Params = "actor",
    workers: Workers = None,
    max_envs: MaxEnvs = None,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Largest step α along a direction that keeps the return within --tolerance (per checkpoint with --all-checkpoints)."""
    from rlscape.analyses.stepsize import StepSizeSpec, stepsize_over_training
    from rlscape.analyses.stepsize import stepsize as run_stepsize
    from rlscape.core.spec import validated

    if episodes is not None and episodes.strip().lower() == "auto":
        raise RlscapeError("--episodes auto is not supported by rlscape stepsize (its bisection compares fixed budgets); give --episodes N or --steps S")
    over_run = _over_training(target, all_checkpoints, checkpoints)
    spec = validated(StepSizeSpec, checkpoint=str(target), env_id=env, vecnormalize=str(vecnormalize) if vecnormalize else None,
                     algo=algo, direction=direction, normalization=normalization, bias=bias, params=params,
                     tolerance=tolerance, lo=lo, hi=hi, rel_precision=precision, ladder=ladder, scale=scale,
                     gradient_episodes=gradient_episodes, evaluation=_eval(episodes, steps, seed, deterministic))
    if over_run:
        ds = stepsize_over_training(target, spec, out, checkpoints=checkpoints, overwrite=overwrite,  # type: ignore[arg-type]
                                    workers=workers, max_envs=max_envs)
        for s, a, st, j in zip(ds.step.values, ds.alpha_star.values, ds.status.values, ds.j0.values, strict=True):
            typer.echo(f"step {int(s):>10d}  J(θ) = {j:10.4g}  α* = {a:10.4g}  ({st})")
    else:
        ds = run_stepsize(spec, out, overwrite=overwrite, workers=workers, max_envs=max_envs)  # type: ignore[arg-type]
        a = ds.attrs
        typer.echo(f"α* = {a['alpha_star']:.4g} ({a['status']}; bracket [{a['bracket_lo']:.4g}, {a['bracket_hi']:.4g}]), "
                   f"J(θ) = {a['j0']:.4g}, threshold {a['threshold']:.4g}, {a['n_evaluations']} evaluations in {a['n_rounds']} rounds")
    typer.echo(f"results: {out / 'results.zarr'}")
    if plot:
        _plot(out, ds)



@app.command()
def cliffs(
    line_run: Annotated[Path, typer.Argument(help="A line over training: results with dims (step, alpha[, episode]).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where the labels go (default LINE_RUN/cliffs).")] = None,
    min_fall: Annotated[float, typer.Option("--min-fall", help="Cliff if J falls by at least this fraction of |J(θ)| within the first step.")] = 0.5,
    min_range_fraction: Annotated[float, typer.Option("--min-range-fraction", help="… and the fall exceeds this fraction of the global range.")] = 0.25,
    first_step: Annotated[float | None, typer.Option("--first-step", help="Offsets in (0, this] count as the first step (default: the first grid offset).")] = None,
    side: Annotated[str, typer.Option("--side", help="positive|negative|both: which side of the line to walk.")] = "positive",
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Label each checkpoint of a line over training cliff / non-cliff (methods.md §6) and colour the plot."""
    from rlscape.analyses.cliffs import run_cliffs

    labels, _, where = run_cliffs(line_run, out, min_relative_fall=min_fall, min_range_fraction=min_range_fraction,
                                        first_step=first_step, side=side, overwrite=overwrite)  # type: ignore[arg-type]
    for s, c, j0, rel in zip(labels.step.values, labels.cliff.values, labels.j0.values, labels.relative_fall.values, strict=True):
        typer.echo(f"step {int(s):>10d}  J(θ) = {j0:10.4g}  fall {100 * rel:7.1f} %  {'CLIFF' if c else 'non-cliff'}")
    typer.echo(f"{int(labels.cliff.sum())} of {labels.sizes['step']} checkpoints are cliffs; labels: {where / 'results.zarr'}")
    if plot:
        _plot(where, labels)


def _steps(text: str | None, what: str) -> list[int]:
    if text is None:
        return []
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise RlscapeError(f"{what} must be training steps separated by commas, not {text!r}") from None


@app.command("cliff-dive")
@scale_out
def cliff_dive(
    run: Annotated[Path, typer.Argument(help="A training run (DIR/checkpoints/<step>/) of a PPO/A2C agent.")],
    out: Out,
    labels: Annotated[Path | None, typer.Option("--labels", help="Cliff labels: the output of `rlscape cliffs` (or a line run holding cliffs/).")] = None,
    cliff_steps: Annotated[str | None, typer.Option("--cliff", help="Instead of --labels: steps labelled cliff, a,b,c.")] = None,
    non_cliff_steps: Annotated[str | None, typer.Option("--non-cliff", help="Instead of --labels: steps labelled non-cliff.")] = None,
    checkpoints: Annotated[str | None, typer.Option("--checkpoints", help="Only these labelled steps (a,b,c; default all).")] = None,
    trials: Annotated[int, typer.Option("--trials", help="Independent updates per checkpoint and algorithm.")] = 5,
    episodes: Annotated[int, typer.Option("--episodes", "-e", help="Evaluation episodes before and after each update.")] = 100,
    seed: Seed = 0,
    deterministic: Det = False,
    workers: Workers = None,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """One A2C and one PPO update (configured alike) at cliff and non-cliff checkpoints; Welch t-test of the changes."""
    from rlscape.analyses.cliffs import cliff_dive as run_dive
    from rlscape.analyses.cliffs import dive_table, read_labels

    if labels is not None and (cliff_steps or non_cliff_steps):
        raise RlscapeError("give --labels or --cliff/--non-cliff steps, not both")
    if labels is not None:
        lab = read_labels(labels)
        label = {int(s): bool(c) for s, c in zip(lab.step.values, lab.cliff.values, strict=True)}
    elif cliff_steps or non_cliff_steps:
        label = {s: True for s in _steps(cliff_steps, "--cliff")}
        both = set(label) & set(_steps(non_cliff_steps, "--non-cliff"))
        if both:
            raise RlscapeError(f"step(s) {', '.join(map(str, sorted(both)))} are labelled both cliff and non-cliff; label each once")
        label.update({s: False for s in _steps(non_cliff_steps, "--non-cliff")})
    else:
        raise RlscapeError("say which checkpoints are cliffs: --labels CLIFFS_DIR (from `rlscape cliffs`) or --cliff a,b --non-cliff c,d")
    if checkpoints is not None:
        keep = _steps(checkpoints, "--checkpoints")
        unknown = [s for s in keep if s not in label]
        if unknown:
            raise RlscapeError(f"--checkpoints {', '.join(map(str, unknown))} carry no label; labelled: {', '.join(map(str, sorted(label)))}")
        label = {s: label[s] for s in keep}
    steps = sorted(label)
    ds = run_dive(run, steps, [label[s] for s in steps], out, trials=trials, episodes=episodes, seed=seed,
                  deterministic=deterministic, workers=workers, overwrite=overwrite)
    typer.echo(dive_table(ds))
    typer.echo(f"results: {out / 'results.zarr'}")
    if plot:
        _plot(out, ds)


@app.command()
def gradient(
    source: Annotated[Path, typer.Argument(help="A checkpoint (folder with model.zip or an SB3 .zip) or a training run directory.")],
    out: Out,
    episodes: Annotated[int | None, typer.Option("--episodes", "-e", help="Episodes of the estimate (default 100 unless --steps).")] = None,
    steps: Steps = None,
    kind: Annotated[str, typer.Option("--kind", help="reinforce (score-function gradient) | update (the algorithm's own step from its saved state).")] = "reinforce",
    baseline: Annotated[str, typer.Option("--baseline", help="mean|critic|none baseline of REINFORCE.")] = "mean",
    gamma: Annotated[float, typer.Option("--gamma", help="Discount of the reward-to-go (1 = the undiscounted J).")] = 1.0,
    batches: Annotated[int, typer.Option("--batches", help="Independent batches for the standard error.")] = 10,
    checkpoints: Ckpts = None,
    env: EnvOpt = None,
    algo: AlgoOpt = None,
    seed: Seed = 0,
    params: Params = "actor",
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Policy-gradient estimate (or update step) saved as a direction file, with its norm and standard error."""
    from rlscape.analyses.gradient import run_gradient

    if episodes is None and steps is None:
        episodes = 100
    ds = run_gradient(source, out, episodes=episodes, steps=steps, kind=kind, baseline=baseline, gamma=gamma, which=params,
                      seed=seed, n_batches=batches, checkpoints=checkpoints, env_id=env, algo=algo, overwrite=overwrite)
    where = out / "directions" / "gradient.npz" if "step" not in ds.dims else out / "steps" / "<step>" / "directions" / "gradient.npz"
    if "step" not in ds.dims:
        typer.echo(f"‖g‖ = {float(ds.grad_norm):.6g} ± {float(ds.grad_stderr):.3g} (standard error)")
    typer.echo(f"direction: {where}  (use it with --dir1/--direction; results: {out / 'results.zarr'})")
    if plot:
        _plot(out, ds)


@app.command()
def hessian(
    source: Annotated[Path, typer.Argument(help="A checkpoint (folder with model.zip or an SB3 .zip) or a training run directory.")],
    out: Out,
    episodes: Annotated[int, typer.Option("--episodes", "-e", help="Episodes in the fixed batch the Hessian is estimated on.")] = 100,
    k: Annotated[int, typer.Option("--k", help="Eigenpairs at each end of the spectrum.")] = 1,
    tol: Annotated[float, typer.Option("--tol", help="eigsh tolerance.")] = 1e-6,
    trace_vectors: Annotated[int, typer.Option("--trace-vectors", help="Hutchinson probe vectors (0: skip the trace).")] = 10,
    slq_vectors: Annotated[int, typer.Option("--slq-vectors", help="SLQ start vectors (0: skip the density).")] = 4,
    slq_steps: Annotated[int, typer.Option("--slq-steps", help="Lanczos steps per SLQ vector.")] = 30,
    checkpoints: Ckpts = None,
    env: EnvOpt = None,
    algo: AlgoOpt = None,
    seed: Seed = 0,
    params: Params = "actor",
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Policy-Hessian eigenpairs (Lanczos LA/SA), trace and spectral density on a fixed batch of episodes."""
    from rlscape.analyses.hessian import run_hessian

    if trace_vectors == 1:
        raise RlscapeError("--trace-vectors must be 0 (skip) or at least 2")
    ds = run_hessian(source, out, episodes=episodes, k=k, seed=seed, which=params, tol=tol, trace_vectors=trace_vectors,
                     slq_vectors=slq_vectors, slq_steps=slq_steps, checkpoints=checkpoints, env_id=env, algo=algo,
                     overwrite=overwrite)
    if "step" not in ds.dims:
        typer.echo(f"λ_max = {float(ds.lambda_max):.6g}, λ_min = {float(ds.lambda_min):.6g}, −λ_max/λ_min = {float(ds.curvature_ratio):.4g}"
                   f" ({int(ds.n_hvp)} Hessian-vector products, {float(ds.hvp_per_s):.1f}/s)")
        if (out / "directions" / "eig_max_1.npz").is_file():
            typer.echo(f"eigenvectors: {out / 'directions'}/eig_max_1.npz, eig_min_1.npz …  (use with --dir1/--dir2)")
    else:
        typer.echo(f"eigenvectors: {out / 'steps'}/<step>/directions/")
    typer.echo(f"results: {out / 'results.zarr'}")
    if plot:
        _plot(out, ds)


# -- post-update return distribution (seed 002) ----------------------------------------------------

EvalMode = Annotated[str, typer.Option("--eval", help="deterministic (the default) | stochastic evaluation episodes.")]
Init = Annotated[str, typer.Option("--init", help="fixed: every update starts from the same initial state(s) | random: its own.")]


def _deterministic(mode: str) -> bool:
    if mode not in ("deterministic", "stochastic"):
        raise RlscapeError(f"--eval must be deterministic or stochastic, not {mode!r}")
    return mode == "deterministic"


def _summary_line(ds: Any) -> str:
    def f(name: str) -> str:
        return f"{name} {float(ds[name]):.4g} [{float(ds[name + '_ci_low']):.4g}, {float(ds[name + '_ci_high']):.4g}]"

    return "  ".join(f(n) for n in ("mean", "std", "mode", "ltp", "cvar"))


@app.command()
def purd(
    target: Annotated[Path, typer.Argument(help="A checkpoint with its optimizer state (+ replay buffer off-policy), or a training run.")],
    out: Out,
    updates: Annotated[int, typer.Option("--updates", "-n", help="Independent updates N (samples of the distribution).")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the updates' minibatches/rollouts and of the evaluation episodes.")] = 0,
    eval_mode: EvalMode = "deterministic",
    init: Init = "fixed",
    episodes_per_update: Annotated[int, typer.Option("--episodes-per-update", help="Evaluation episodes of each updated policy.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Off-policy actor step: minibatch rows drawn with replacement.")] = 256,
    ppo_update: Annotated[str, typer.Option("--ppo-update", help="On-policy: minibatch (one minibatch step) | iteration (the whole train()).")] = "minibatch",
    alpha: Annotated[float, typer.Option("--alpha", help="CVaR level α.")] = 0.1,
    ltp_reference: Annotated[str, typer.Option("--ltp-reference", help="mode: LTP = P(R < m/2), m the mode | pre: m = the pre-update return.")] = "mode",
    checkpoints: Ckpts = None,
    env: EnvOpt = None,
    vecnormalize: VecNorm = None,
    algo: AlgoOpt = None,
    workers: Workers = None,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Post-update return distribution: returns of N independent updates with the algorithm's own rule."""
    from rlscape.analyses.purd import PurdSpec, purd_over_training
    from rlscape.analyses.purd import purd as run_purd
    from rlscape.core.runs import over_training
    from rlscape.core.spec import validated

    spec = validated(PurdSpec, checkpoint=str(target), env_id=env, vecnormalize=str(vecnormalize) if vecnormalize else None,
                     algo=algo, updates=updates, seed=seed, deterministic=_deterministic(eval_mode), init=init,
                     episodes_per_update=episodes_per_update, batch_size=batch_size, ppo_update=ppo_update, alpha=alpha,
                     ltp_reference=ltp_reference)
    if over_training(target, checkpoints):
        ds = purd_over_training(target, spec, out, checkpoints=checkpoints, overwrite=overwrite, workers=workers)
        for i, s in enumerate(ds.step.values):
            typer.echo(f"step {int(s):>10d}  pre {float(ds.pre_return[i]):9.4g}  " + _summary_line(ds.isel(step=i)))
    else:
        ds = run_purd(spec, out, overwrite=overwrite, workers=workers)
        typer.echo(f"pre-update return {float(ds.pre_return):.4g}  " + _summary_line(ds))
    typer.echo(f"results: {out / 'results.zarr'}")
    if plot:
        _plot(out, ds)


@app.command()
def interpolate(
    checkpoint_a: Annotated[Path, typer.Argument(help="Checkpoint A (α = 0).")],
    checkpoint_b: Annotated[Path, typer.Argument(help="Checkpoint B (α = 1), the same architecture.")],
    out: Out,
    points: Annotated[int, typer.Option("--points", help="α values in [0, 1], both ends included.")] = 100,
    samples: Annotated[int, typer.Option("--samples", help="Gaussian parameter perturbations at each α (the same draws at every α).")] = 100,
    sigma: Annotated[float, typer.Option("--sigma", help="Std of the perturbations (0: the bare path).")] = 3e-4,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the perturbations and the evaluation episodes.")] = 0,
    eval_mode: EvalMode = "deterministic",
    episodes: Annotated[int, typer.Option("--episodes", "-e", help="Evaluation episodes per perturbed policy.")] = 1,
    alpha: Annotated[float, typer.Option("--alpha", help="CVaR level.")] = 0.1,
    env: EnvOpt = None,
    vecnormalize: VecNorm = None,
    algo: AlgoOpt = None,
    workers: Workers = None,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Return distributions along θ(α) = (1 − α)·θ_A + α·θ_B under small Gaussian perturbations."""
    from rlscape.analyses.interpolate import InterpolationSpec
    from rlscape.analyses.interpolate import interpolate as run_interpolate
    from rlscape.core.spec import validated

    spec = validated(InterpolationSpec, checkpoint_a=str(checkpoint_a), checkpoint_b=str(checkpoint_b), env_id=env,
                     vecnormalize=str(vecnormalize) if vecnormalize else None, algo=algo, points=points, samples=samples,
                     sigma=sigma, seed=seed, deterministic=_deterministic(eval_mode), episodes=episodes, alpha=alpha)
    ds = run_interpolate(spec, out, overwrite=overwrite, workers=workers)
    m = ds["mean"].values
    typer.echo(f"mean return {m[0]:.4g} (A) → {m[-1]:.4g} (B); lowest {m.min():.4g} at α = {float(ds.alpha[m.argmin()]):.3g}; "
               f"CVaR {float(ds['cvar'][0]):.4g} → {float(ds['cvar'][-1]):.4g}")
    typer.echo(f"results: {out / 'results.zarr'}")
    if plot:
        _plot(out, ds)


@app.command("cvar-train")
def cvar_train(
    checkpoint: Annotated[Path, typer.Argument(help="Root checkpoint with its full training state (optimizers, replay buffer).")],
    out: Out,
    proposals: Annotated[int, typer.Option("--proposals", help="Proposed updates K (accepted or not).")] = 40,
    alpha: Annotated[float, typer.Option("--alpha", help="CVaR level of the acceptance test.")] = 0.1,
    reject: Annotated[bool, typer.Option("--reject/--no-reject", help="--no-reject accepts every update (the baseline).")] = True,
    updates: Annotated[int, typer.Option("--updates", "-n", help="PURD samples per proposal.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the proposals, the PURD updates and the evaluation.")] = 0,
    eval_mode: EvalMode = "deterministic",
    batch_size: Annotated[int, typer.Option("--batch-size", help="PURD actor-step minibatch.")] = 256,
    baseline: Annotated[Path | None, typer.Option("--baseline", help="A --no-reject run directory to draw against.")] = None,
    env: EnvOpt = None,
    vecnormalize: VecNorm = None,
    algo: AlgoOpt = None,
    workers: Workers = None,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Algorithm 1 (post-update CVaR rejection): train on, refusing updates that lower the PURD's CVaR_α."""
    from rlscape.analyses.cvar_train import CvarTrainSpec
    from rlscape.analyses.cvar_train import cvar_train as run_cvar_train
    from rlscape.core.spec import validated

    spec = validated(CvarTrainSpec, checkpoint=str(checkpoint), env_id=env, vecnormalize=str(vecnormalize) if vecnormalize else None,
                     algo=algo, proposals=proposals, alpha=alpha, reject=reject, updates=updates, seed=seed,
                     deterministic=_deterministic(eval_mode), batch_size=batch_size)
    if baseline is not None and not (baseline / "results.zarr").exists():
        raise RlscapeError(f"--baseline {baseline} holds no results.zarr; run `rlscape cvar-train ... --no-reject --out {baseline}` first")
    ds = run_cvar_train(spec, out, overwrite=overwrite, workers=workers)
    typer.echo(f"accepted {int(ds.attrs['n_accepted'])} of {proposals}; PURD CVaR {float(ds.purd_cvar[0]):.4g} → "
               f"{float(ds.purd_cvar.where(ds.accepted).dropna('proposal')[-1]):.4g}, "
               f"mean {float(ds.purd_mean[0]):.4g} → {float(ds.purd_mean.where(ds.accepted).dropna('proposal')[-1]):.4g}")
    typer.echo(f"results: {out / 'results.zarr'}")
    if plot and baseline is None:
        _plot(out, ds)
    elif plot and baseline is not None:
        from rlscape.core.results import load
        from rlscape.plots.purd import plot_cvar_train

        files = plot_cvar_train([ds, load(baseline)], out / "plots")  # with the baseline's curves
        typer.echo(f"figures: {out / 'plots'}/  ({', '.join(sorted(f.name for f in files))})")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one-line errors, exit code 2, no traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s" if "-v" in sys.argv else "%(message)s")
    for noisy in ("matplotlib", "PIL", "numcodecs", "zarr", "asyncio", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code = app(args=argv, standalone_mode=False)
    except RlscapeError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as exc:  # noqa: BLE001 - every error ends as one line (set RLSCAPE_TRACEBACK=1 to see where)
        if isinstance(exc, typer.Abort) or type(exc).__name__ == "Abort":
            _interrupted()
        if _is_click_exception(exc):  # click's own usage errors (typer ≥ 0.20 ships its own copy of click)
            ctx = getattr(exc, "ctx", None)
            hint = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
            typer.echo(f"error: {exc.format_message().rstrip('.')}{hint}", err=True)  # type: ignore[attr-defined]
            sys.exit(int(exc.exit_code))  # type: ignore[attr-defined]
        if os.environ.get("RLSCAPE_TRACEBACK"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        typer.echo(f"error: {type(exc).__name__}: {first} (unexpected; rerun with RLSCAPE_TRACEBACK=1 for the traceback)", err=True)
        sys.exit(2)
    if code == 130:  # typer returns (rather than raises) an abort when not in standalone mode
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)


def _is_click_exception(exc: BaseException) -> bool:
    """A click usage error, from typer's bundled click or a standalone click (whichever raised it)."""
    for name in ("typer._click.exceptions", "click.exceptions"):
        module = sys.modules.get(name)
        cls = getattr(module, "ClickException", None) if module is not None else None
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


def _interrupted() -> None:
    typer.echo("interrupted: finished chunks are saved; rerun the same command to resume", err=True)
    sys.exit(130)


# -- linear regions (Cohan et al. 2022; methods.md §9) ----------------------------------------------

@app.command()
def regions(
    source: Annotated[Path, typer.Argument(help="A checkpoint (folder with model.zip or an SB3 .zip) or a training run directory.")],
    out: Out,
    checkpoints: Ckpts = None,
    trajectories: Annotated[int, typer.Option("--trajectories", help="Deterministic episodes per checkpoint (and of the final policy, fixed).")] = 10,
    random_lines: Annotated[int, typer.Option("--random-lines", help="Lines from the mean of N states visited by the final policy to each (0: none).")] = 100,
    segments: Annotated[Path | None, typer.Option("--segments", help="A .npy of shape (S, 2, obs_dim): segments in the network's input space.")] = None,
    network: Annotated[str, typer.Option("--network", help="policy|value: which network's regions.")] = "policy",
    env: EnvOpt = None,
    algo: AlgoOpt = None,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Exact linear-region counts along the policy's own trajectories, random lines and given segments (dim step for a run)."""
    from rlscape.analyses.regions import run_regions

    ds = run_regions(source, out, checkpoints=checkpoints, trajectories=trajectories, random_lines_n=random_lines,
                     segments=segments, network=network, seed=seed, env_id=env, algo=algo, overwrite=overwrite)
    rows = [ds.isel(step=i) for i in range(ds.sizes["step"])] if "step" in ds.dims else [ds]
    for r in rows:
        label = f"step {int(r.step):>10d}" if "step" in r.coords else "checkpoint"
        extra = "".join(f"  {fam} {float(r[f'{fam}_density_pooled']):8.3g}" for fam in ("fixed", "line", "user") if f"{fam}_density_pooled" in r)
        typer.echo(f"{label}  transitions per unit length: current {float(r['current_density_pooled']):8.3g}{extra}"
                   f"  (regions per trajectory {float(r['current_regions'].mean()):.1f})")
    typer.echo(f"results: {out / 'results.zarr'}  ({ds.attrs['n_neurons']} neurons)")
    if plot:
        _plot(out, ds, formats=("png",))


@app.command("regions-plane")
def regions_plane(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint (folder with model.zip or an SB3 .zip).")],
    out: Out,
    states: Annotated[int | None, typer.Option("--states", help="3: the plane through three states visited by the policy.")] = None,
    state_space: Annotated[bool, typer.Option("--state-space", help="Partition the 2-D input space itself.")] = False,
    network: Annotated[str, typer.Option("--network", help="policy|value: which network's regions.")] = "policy",
    margin: Annotated[float, typer.Option("--margin", help="Widen the box around the projected trajectory by this fraction per side.")] = 0.25,
    env: EnvOpt = None,
    algo: AlgoOpt = None,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Exact 2-D partition into linear regions of the plane through three visited states (or of a 2-D state space)."""
    from rlscape.analyses.regions import run_regions_plane

    if (states is None) == (not state_space):
        raise RlscapeError("give --states 3 (plane through three visited states) or --state-space (a 2-D input space), one of them")
    if states is not None and states != 3:
        raise RlscapeError(f"--states must be 3 (three states define a plane), not {states}")
    ds = run_regions_plane(checkpoint, out, state_space=state_space, seed=seed, network=network, margin=margin,
                           env_id=env, algo=algo, overwrite=overwrite)
    typer.echo(f"{ds.attrs['n_regions']} regions; areas sum to {ds.attrs['area_sum']:.6g} of the box's {ds.attrs['box_area']:.6g}")
    typer.echo(f"results: {out / 'results.zarr'}")
    if plot:
        _plot(out, ds, formats=("png",))


# -- one HTML report over many runs -----------------------------------------------------------------

@app.command()
def report(
    dirs: Annotated[list[Path], typer.Argument(help="Run directories, or folders holding runs (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write (self-contained: opens offline).")] = Path("report.html"),
    title: Annotated[str, typer.Option("--title", help="The page's title.")] = "rlscape report",
) -> None:
    """One self-contained HTML page over every run found: interactive surfaces (step slider over training), lines,
    every other kind's figures, a summary table, and each run's spec, versions, wall time and command."""
    from rlscape.report import write_report

    path = write_report(dirs, out, title=title)
    typer.echo(f"report: {path}  ({path.stat().st_size / 1e6:.1f} MB)")


# -- gradient-estimate quality and value prediction (methods.md §7) ---------------------------------

def _counts(text: str, what: str) -> list[int]:
    try:
        out = [int(float(s)) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise RlscapeError(f"{what} must be sample counts separated by commas, e.g. 100,1000,10000, not {text!r}") from None
    if not out:
        raise RlscapeError(f"{what} must name at least one sample count, e.g. 100,1000")
    return out


@app.command("grad-quality")
def grad_quality(
    source: Annotated[Path, typer.Argument(help="A checkpoint (folder with model.zip or an SB3 .zip) or a training run directory.")],
    out: Out,
    samples: Annotated[str, typer.Option("--samples", help="State-action pairs N per estimate, a,b,c (whole episodes until ≥ N).")] = "100,1000,10000",
    repeats: Annotated[int, typer.Option("--repeats", help="Independent estimates per N.")] = 10,
    true_samples: Annotated[int, typer.Option("--true-samples", help="Pairs of the 'true' gradient (an independent episode stream).")] = 100_000,
    estimator: Annotated[str, typer.Option("--estimator", help="reinforce (discounted reward-to-go − baseline) | gae (the critic's GAE advantages) | update (the algorithm's own policy-loss gradient: GAE, normalised per batch for PPO/TRPO).")] = "reinforce",
    baseline: Annotated[str, typer.Option("--baseline", help="critic | true (fit to Monte-Carlo returns) | none.")] = "critic",
    gamma: Annotated[float | None, typer.Option("--gamma", help="Discount of the reward-to-go (default: the agent's γ).")] = None,
    checkpoints: Ckpts = None,
    env: EnvOpt = None,
    algo: AlgoOpt = None,
    seed: Seed = 0,
    params: Params = "actor",
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Cosine similarity of gradient estimates with each other and with the 'true' gradient vs the number of samples."""
    from rlscape.analyses.quality import run_grad_quality
    from rlscape.core.kinds import headline

    ds = run_grad_quality(source, out, samples=_counts(samples, "--samples"), repeats=repeats, true_samples=true_samples,
                          estimator=estimator, baseline=baseline, gamma=gamma, seed=seed, which=params, checkpoints=checkpoints,
                          env_id=env, algo=algo, overwrite=overwrite)
    typer.echo(headline(ds))
    _finish(ds, out, plot)


@app.command("value-error")
def value_error(
    source: Annotated[Path, typer.Argument(help="A checkpoint or a training run directory of an actor-critic (PPO, A2C, TRPO).")],
    out: Out,
    episodes: Annotated[int, typer.Option("--episodes", "-e", help="Held-out complete episodes per checkpoint.")] = 100,
    floor: Annotated[float, typer.Option("--floor", help="States with |G| < floor × mean|G| are left out of the MRE (counted).")] = 0.01,
    checkpoints: Ckpts = None,
    env: EnvOpt = None,
    algo: AlgoOpt = None,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """The critic's mean relative error against discounted Monte-Carlo returns on held-out states."""
    from rlscape.analyses.quality import run_value_error
    from rlscape.core.kinds import headline

    ds = run_value_error(source, out, episodes=episodes, seed=seed, floor=floor, checkpoints=checkpoints, env_id=env, algo=algo,
                         overwrite=overwrite)
    typer.echo(headline(ds))
    _finish(ds, out, plot)


@app.command()
def surrogate(
    checkpoint: Annotated[Path, typer.Argument(help="A PPO, A2C or TRPO checkpoint (with its optimizer state).")],
    out: Out,
    samples: Annotated[str, typer.Option("--samples", help="Sample sizes N, a,b: the surrogate's batch (≥ N pairs) and the true return's steps per point.")] = "2000,100000",
    grid: Annotated[int, typer.Option("--grid", help="Points per axis of the plane.")] = 7,
    extent: Annotated[float, typer.Option("--extent", help="The plane spans [0, extent] along the step (1 = one full step) and the random direction.")] = 3.0,
    env: EnvOpt = None,
    algo: AlgoOpt = None,
    seed: Seed = 0,
    workers: Workers = None,
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """The algorithm's surrogate objective and the true return on the plane of its update step and a random direction."""
    from rlscape.analyses.surrogate import run_surrogate
    from rlscape.core.kinds import headline

    ds = run_surrogate(checkpoint, out, samples=_counts(samples, "--samples"), grid=grid, extent=extent, seed=seed, env_id=env,
                       algo=algo, overwrite=overwrite, workers=workers)
    typer.echo(headline(ds))
    _finish(ds, out, plot)


@app.command()
def subspace(
    source: Annotated[Path, typer.Argument(help="A checkpoint or a training run of a stochastic policy (PPO, A2C, TRPO, SAC).")],
    out: Out,
    k: Annotated[str, typer.Option("--k", help="Subspace sizes, a,b,c (the largest is computed by Lanczos).")] = "1,10,50",
    episodes: Annotated[int, typer.Option("--episodes", "-e", help="Episodes of the fixed batch (direction stream).")] = 100,
    end: Annotated[str, typer.Option("--end", help="SA: top eigenspace of the loss −J (Schneider et al.) | LA: of J.")] = "SA",
    checkpoints: Ckpts = None,
    env: EnvOpt = None,
    algo: AlgoOpt = None,
    seed: Seed = 0,
    params: Params = "actor",
    overwrite: Overwrite = False,
    plot: PlotOpt = True,
) -> None:
    """Fraction of the policy gradient inside the top-k Hessian eigenspace (and its overlap between checkpoints)."""
    from rlscape.analyses.subspace import run_subspace
    from rlscape.core.kinds import headline

    ds = run_subspace(source, out, ks=_counts(k, "--k"), episodes=episodes, seed=seed, end=end, which=params,
                      checkpoints=checkpoints, env_id=env, algo=algo, overwrite=overwrite)
    typer.echo(headline(ds))
    _finish(ds, out, plot)


if __name__ == "__main__":  # pragma: no cover
    main()
