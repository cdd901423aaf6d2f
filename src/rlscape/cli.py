"""The ``rlscape`` command line: thin — parse → spec → analysis → store → plot.

Every user error is one line on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import logging
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
Episodes = Annotated[int | None, typer.Option("--episodes", "-e", help="Complete episodes per point (default 20 unless --steps).")]
Steps = Annotated[int | None, typer.Option("--steps", help="Instead of --episodes: episodes until at least S steps per point.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of directions, env resets and action noise.")]
Det = Annotated[bool, typer.Option("--deterministic", help="Act with the mode of the policy instead of sampling.")]
Norm = Annotated[str, typer.Option("--normalization", help="filter|layer|none normalisation of random directions.")]
Bias = Annotated[str, typer.Option("--bias", help="ignore|normalize: 1-D tensors (biases, log_std) in random directions.")]
Params = Annotated[str, typer.Option("--params", help="Which parameters move: actor|all|critic.")]
Workers = Annotated[int | None, typer.Option("--workers", "-w", help="Worker processes (default: all cores).")]
MaxEnvs = Annotated[int | None, typer.Option("--max-envs", help="Envs stepped at once per worker (memory bound); default 512, MuJoCo 64, Atari 32.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace a finished or different run in --out.")]
ScaleOpt = Annotated[str | None, typer.Option("--scale", help="unit|match|raw: scale of gradient/eigenvector/file directions (default: gradient match, files as stored).")]
GradEpisodes = Annotated[int, typer.Option("--gradient-episodes", help="Episodes of the REINFORCE estimate behind a `gradient` direction.")]
PlotOpt = Annotated[bool, typer.Option("--plot/--no-plot", help="Draw the figures when done.")]


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


def _eval(episodes: int | None, steps: int | None, seed: int, deterministic: bool) -> Any:
    from rlscape.core.spec import EvalSpec

    return EvalSpec.from_budget(episodes, steps, seed, deterministic)


def _finish(ds: Any, out: Path, plot: bool) -> None:
    typer.echo(f"results: {out / 'results.zarr'}  (open with rlscape.load('{out}') or xarray.open_zarr)")
    if plot:
        _plot(out, ds)


def _plot(out: Path, ds: Any, log_scale: bool = False, formats: tuple[str, ...] = ("png", "pdf")) -> None:
    from rlscape.plots import render_run

    try:
        files = render_run(ds, out / "plots", log_scale=log_scale, formats=formats)
    except ValueError as exc:
        raise RlscapeError(str(exc)) from None
    typer.echo(f"figures: {out / 'plots'}/  ({', '.join(sorted(f.name for f in files))})")


@app.command()
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
    scale: ScaleOpt = None,
    gradient_episodes: GradEpisodes = 100,
) -> None:
    """Return on the plane θ0 + α·d1 + β·d2 around a checkpoint (dims alpha, beta, episode)."""
    from rlscape.analyses.surface import run_surface
    from rlscape.core.spec import SurfaceSpec, validated

    g = _pair(grid, "--grid", int)
    m = _pair(magnitude, "--magnitude")
    spec = validated(SurfaceSpec, kind="plane", checkpoint=str(checkpoint), env_id=env,
                     vecnormalize=str(vecnormalize) if vecnormalize else None, algo=algo, grid=g,
                     ranges=((-m[0], m[0]), (-m[1], m[1])), directions=(dir1, dir2), normalization=normalization,
                     bias=bias, params=params, evaluation=_eval(episodes, steps, seed, deterministic),
                     scale=scale, gradient_episodes=gradient_episodes)
    ds = run_surface(spec, out, overwrite=overwrite, workers=workers, max_envs=max_envs)  # type: ignore[arg-type]
    _finish(ds, out, plot)


@app.command()
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
    scale: ScaleOpt = None,
    gradient_episodes: GradEpisodes = 100,
) -> None:
    """Return along θ0 + α·d, or along (1−α)·θ1 + α·θ2 toward a second checkpoint (dims alpha, episode)."""
    from rlscape.analyses.surface import _is_checkpoint, run_surface
    from rlscape.core.spec import SurfaceSpec, validated

    if range_ is None:
        rng = (0.0, 1.0) if _is_checkpoint(direction) else (-1.0, 1.0)
    else:
        rng = _pair(range_, "--range")
    spec = validated(SurfaceSpec, kind="line", checkpoint=str(checkpoint), env_id=env,
                     vecnormalize=str(vecnormalize) if vecnormalize else None, algo=algo, grid=(points,),
                     ranges=(rng,), directions=(direction,), normalization=normalization, bias=bias, params=params,
                     evaluation=_eval(episodes, steps, seed, deterministic),
                     scale=scale, gradient_episodes=gradient_episodes)
    ds = run_surface(spec, out, overwrite=overwrite, workers=workers, max_envs=max_envs)  # type: ignore[arg-type]
    _finish(ds, out, plot)


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by rlscape.")],
    log_scale: Annotated[bool, typer.Option("--log-scale", help="Symmetric-log colour/y scale (off unless asked).")] = False,
    formats: Annotated[str, typer.Option("--formats", help="Static formats, comma-separated.")] = "png,pdf",
) -> None:
    """Draw what RUN_DIR holds: planes as 3-D surface, heatmap, contour (+ HTML); lines with ±SEM bands."""
    from rlscape.core.results import load

    ds = load(run_dir)
    _plot(run_dir, ds, log_scale=log_scale, formats=tuple(f for f in formats.split(",") if f))


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

    from rlscape.analyses.quickstart import train_quickstart_agent
    from rlscape.analyses.surface import run_surface
    from rlscape.core.spec import SurfaceSpec, validated

    t0 = time.perf_counter()
    agent_dir = train_quickstart_agent(out / "agent", steps=train_steps, seed=seed, overwrite=overwrite)
    spec = validated(SurfaceSpec, kind="plane", checkpoint=str(agent_dir), grid=(grid, grid),
                     ranges=((-magnitude, magnitude),) * 2, directions=("random", "random"),
                     evaluation=_eval(episodes, None, seed, False))
    from rlscape.core.store import RunDir

    plane_dir = out / "plane"
    run = RunDir(plane_dir)
    if not overwrite and run.status() == "complete" and run.read_spec() == spec.model_dump(mode="json"):  # type: ignore[union-attr]
        from rlscape.core.results import load

        log.info("the plane in %s is already complete; redrawing it", plane_dir)
        ds = load(plane_dir)
    else:
        ds = run_surface(spec, plane_dir, overwrite=overwrite, workers=workers)  # type: ignore[arg-type]
    _finish(ds, plane_dir, True)
    typer.echo(f"quickstart done in {time.perf_counter() - t0:.0f} s: agent {agent_dir}, plane {plane_dir}")


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
    checkpoints: Annotated[str | None, typer.Option("--checkpoints", help="For a training run: 'all' or steps a,b,c.")] = None,
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
    where = out / "directions" / "gradient.npz" if "step" not in ds.dims else out / "steps" / "<step>" / "gradient.npz"
    if "step" not in ds.dims:
        typer.echo(f"‖g‖ = {float(ds.grad_norm):.6g} ± {float(ds.grad_stderr):.3g} (standard error)")
    typer.echo(f"direction: {where}  (use it with --dir1/--direction; results: {out / 'results.zarr'})")
    if plot and "step" in ds.dims:
        from rlscape.plots.curvature import plot_over_training

        files = plot_over_training(ds, out / "plots")
        typer.echo(f"figures: {out / 'plots'}/  ({', '.join(sorted(f.name for f in files))})")


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
    checkpoints: Annotated[str | None, typer.Option("--checkpoints", help="For a training run: 'all' or steps a,b,c.")] = None,
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
        from rlscape.plots.curvature import plot_curvature

        files = plot_curvature(ds, out / "plots")
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
    except Exception as exc:  # click's own usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            _interrupted()
        raise
    if code == 130:  # typer returns (rather than raises) an abort when not in standalone mode
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)


def _interrupted() -> None:
    typer.echo("interrupted: finished chunks are saved; rerun the same command to resume", err=True)
    sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
