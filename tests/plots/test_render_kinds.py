"""The registry of result kinds: `rlscape plot DIR` redraws every kind from its stored results.

One tiny run of each kind is written with --no-plot (so every figure below comes from `rlscape
plot`), then redrawn; unknown kinds and newer schema versions are refused in one line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from rlscape.cli import main
from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import KINDS, headline, kind_attrs, kind_of
from rlscape.core.results import load
from rlscape.plots import RENDERERS, render_run
from tests import training_runs
from tests.cli.test_cli import run_cli

EV = ["--episodes", "2", "--workers", "1", "--no-plot"]
HESSIAN = ["--episodes", "4", "--k", "1", "--trace-vectors", "2", "--slq-vectors", "1", "--slq-steps", "8", "--no-plot"]
STEP = ["--episodes", "2", "--workers", "1", "--precision", "0.5", "--ladder", "4", "--lo", "0.01", "--hi", "10", "--no-plot"]

#: kind → (the command that writes it: {c} a checkpoint, {r} a training run, {o} the output), the figures.
RUNS: dict[str, tuple[list[str], list[str]]] = {
    "plane": (["plane", "{c}", "--out", "{o}", "--grid", "3", *EV], ["surface_3d.png", "heatmap.png", "contour.png", "surface.html"]),
    "line": (["line", "{c}", "--out", "{o}", "--points", "3", *EV], ["line.png", "line.html"]),
    "curve": (["curve", "{r}", "--out", "{o}", *EV], ["curve.png"]),
    "plane-over-training": (["plane", "{r}", "--out", "{o}", "--checkpoints", "0,2048", "--grid", "3", *EV], ["planes.png"]),
    "line-over-training": (["line", "{r}", "--out", "{o}", "--all-checkpoints", "--points", "5", *EV],
                           ["line_heatmap.png", "lines_3d.png"]),
    "gradient": (["gradient", "{c}", "--out", "{o}", "--episodes", "4", "--batches", "2", "--no-plot"], ["gradient.png"]),
    "gradient-over-training": (["gradient", "{r}", "--out", "{o}", "--checkpoints", "0,2048", "--episodes", "4", "--batches", "2",
                                "--no-plot"], ["gradient_over_training.png"]),
    "hessian": (["hessian", "{c}", "--out", "{o}", *HESSIAN], ["eigenvalues.png", "slq_density.png"]),
    "hessian-over-training": (["hessian", "{r}", "--out", "{o}", "--checkpoints", "0,2048", *HESSIAN],
                              ["curvature_over_training.png", "slq_density.png"]),
    "stepsize": (["stepsize", "{c}", "--out", "{o}", *STEP], ["stepsize.png"]),
    "stepsize-over-training": (["stepsize", "{r}", "--out", "{o}", "--checkpoints", "0,2048", *STEP], ["stepsize_training.png"]),
    "cliffs": (["cliffs", "{line}", "--out", "{o}", "--min-fall", "0", "--min-range-fraction", "0", "--no-plot"], ["cliffs.png"]),
    "regions": (["regions", "{relu}/checkpoints/0000001024", "--out", "{o}", "--trajectories", "2", "--random-lines", "3", "--no-plot"],
                ["regions_density.png"]),
    "regions-over-training": (["regions", "{relu}", "--out", "{o}", "--trajectories", "2", "--random-lines", "3", "--no-plot"],
                              ["regions_density.png"]),
    "regions-plane": (["regions-plane", "{relu}/checkpoints/0000001024", "--out", "{o}", "--states", "3", "--no-plot"],
                      ["regions_plane.png"]),
    "subspace": (["subspace", "{c}", "--out", "{o}", "--k", "1,2", "--episodes", "4", "--no-plot"], ["subspace.png"]),
    "subspace-over-training": (["subspace", "{r}", "--out", "{o}", "--checkpoints", "1024,2048", "--k", "1,2", "--episodes", "4",
                                "--no-plot"], ["subspace.png"]),
    "population": (["population", "{c}", "--thetas", "{thetas}", "--out", "{o}", *EV], ["population.png"]),
    "grad-quality": (["grad-quality", "{c}", "--out", "{o}", "--samples", "50,100", "--repeats", "2", "--true-samples", "200",
                      "--no-plot"], ["grad_quality.png"]),
    "grad-quality-over-training": (["grad-quality", "{r}", "--out", "{o}", "--checkpoints", "0,2048", "--samples", "50,100",
                                    "--repeats", "2", "--true-samples", "200", "--no-plot"], ["grad_quality.png"]),
    "value-error": (["value-error", "{c}", "--out", "{o}", "--episodes", "2", "--no-plot"], ["value_error.png"]),
    "value-error-over-training": (["value-error", "{r}", "--out", "{o}", "--episodes", "2", "--no-plot"], ["value_error.png"]),
    "surrogate": (["surrogate", "{c}", "--out", "{o}", "--samples", "100,200", "--grid", "2", "--no-plot"], ["surrogate.png"]),
    "cliff-dive": (["cliff-dive", "{r}", "--out", "{o}", "--cliff", "0,1024", "--non-cliff", "2048", "--trials", "2",
                    "--episodes", "3", "--workers", "1", "--no-plot"], ["cliff_dive.png"]),
    "purd": (["purd", "{c}", "--out", "{o}", "--updates", "3", "--workers", "1", "--no-plot"], ["purd.png"]),
    "purd-over-training": (["purd", "{r}", "--out", "{o}", "--checkpoints", "0,2048", "--updates", "3", "--workers", "1", "--no-plot"],
                           ["purd_over_training.png", "purd_step0000002048.png"]),
    "interpolation": (["interpolate", "{r}/checkpoints/0000000000", "{r}/checkpoints/0000002048", "--out", "{o}", "--points", "3",
                       "--samples", "2", "--workers", "1", "--no-plot"], ["interpolation.png"]),
    "cvar-train": (["cvar-train", "{c}", "--out", "{o}", "--proposals", "1", "--updates", "3", "--workers", "1", "--no-plot"],
                   ["cvar_train.png"]),
}


def _cli(args: list[str]) -> None:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert not exc.code, f"{args}: exit {exc.code}"


@pytest.fixture(scope="module")
def runs(cartpole_ppo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One run directory per kind, all written without figures."""
    run = training_runs.tiny_ppo_run(tmp_path_factory)
    relu = training_runs.relu_run(tmp_path_factory)
    root = tmp_path_factory.mktemp("kinds")
    from rlscape.core.policy import load_checkpoint

    theta = load_checkpoint(cartpole_ppo).parameters("actor")
    name = next(n for n in theta if theta[n].ndim == 2)  # three members: θ0 and two scalings of one weight
    np.savez(root / "thetas.npz", **{name: np.stack([theta[name] * s for s in (1.0, 0.5, 0.0)])})
    out = {}
    for kind, (args, _) in RUNS.items():  # line-over-training comes before the cliffs that read it
        out[kind] = root / kind
        _cli([a.format(c=cartpole_ppo, r=run, o=out[kind], line=out.get("line-over-training"), thetas=root / "thetas.npz",
                       relu=relu)
              for a in args])
        assert not (out[kind] / "plots").exists(), kind
    return out


def test_every_kind_has_a_renderer_and_a_run_here() -> None:
    assert set(RENDERERS) == set(KINDS) == set(RUNS)


@pytest.mark.parametrize("kind", list(RUNS))
def test_rlscape_plot_redraws_every_kind(runs: dict[str, Path], kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    ds = load(runs[kind])
    assert kind_of(ds).name == kind
    assert ds.attrs["schema_version"] == 1
    assert headline(ds).strip()
    code, stdout, err = run_cli(["plot", runs[kind], "--formats", "png"], capsys)
    assert code == 0, err
    for name in RUNS[kind][1]:
        assert (runs[kind] / "plots" / name).stat().st_size > 5_000, name
    assert "figures:" in stdout and f"{KINDS[kind].title}: {headline(ds)}" in stdout


def test_headlines_say_the_numbers(runs: dict[str, Path]) -> None:
    h = load(runs["hessian"])
    assert headline(h) == (f"λ_max = {float(h.lambda_max):.4g}, λ_min = {float(h.lambda_min):.4g}, "
                           f"−λ_max/λ_min = {float(h.curvature_ratio):.4g}")
    s = load(runs["stepsize"])
    assert headline(s).startswith(f"α* = {s.attrs['alpha_star']:.4g} ({s.attrs['status']})")
    p = load(runs["plane"])
    centre = p.return_mean.sel(alpha=0.0, beta=0.0)
    assert headline(p).startswith(f"J(θ0) = {float(centre):.4g} ± {float(p.return_sem.sel(alpha=0.0, beta=0.0)):.4g}")


def _rewrite(src: Path, dst: Path, **attrs: object) -> Path:
    """A copy of a run with its results' attributes changed (None deletes one)."""
    import zarr

    shutil.copytree(src, dst)
    group = zarr.open_group(dst / "results.zarr", mode="r+")
    for k, v in attrs.items():
        if v is None:
            group.attrs.pop(k, None)
        else:
            group.attrs[k] = v
    zarr.consolidate_metadata(dst / "results.zarr")
    shutil.rmtree(dst / "plots", ignore_errors=True)
    return dst


def test_unknown_kind_and_newer_schema_are_refused(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unknown = _rewrite(runs["line"], tmp_path / "unknown", kind="cube")
    code, _, err = run_cli(["plot", unknown], capsys)
    assert code == 2 and "unknown result kind 'cube'" in err and len(err.strip().splitlines()) == 1
    newer = _rewrite(runs["line"], tmp_path / "newer", schema_version=2)
    code, _, err = run_cli(["plot", newer], capsys)
    assert code == 2 and "schema_version 2" in err and "upgrade rlscape" in err and len(err.strip().splitlines()) == 1
    assert not (unknown / "plots").exists() and not (newer / "plots").exists()
    with pytest.raises(RlscapeError, match="upgrade rlscape"):
        load(newer)  # every reader of stored results, not only `plot`


def test_a_run_written_before_schema_versions_reads_as_version_1(runs: dict[str, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    old = _rewrite(runs["line"], tmp_path / "old", schema_version=None)
    assert "schema_version" not in load(old).attrs
    code, _, err = run_cli(["plot", old, "--formats", "png"], capsys)
    assert code == 0, err
    assert (old / "plots" / "line.png").is_file()


def test_kind_attrs_and_render_run_refusals(tmp_path: Path) -> None:
    assert kind_attrs("stepsize-over-training") == {"kind": "stepsize-over-training", "schema_version": 1}
    with pytest.raises(KeyError):
        kind_attrs("cube")
    with pytest.raises(RlscapeError, match="no 'kind'"):
        render_run(xr.Dataset(), tmp_path)


def test_kind_of_tells_one_checkpoint_from_a_training_run() -> None:
    one = xr.Dataset({"return_mean": (("alpha",), [1.0, 2.0])}, coords={"alpha": [0.0, 1.0]}, attrs={"kind": "line"})
    many = one.expand_dims(step=[0, 10])
    assert kind_of(one).name == "line" and kind_of(many).name == "line-over-training"
    many.attrs["kind"] = "line-over-training"  # a registry name as the stored kind
    assert kind_of(many).name == "line-over-training"
    many.attrs["schema_version"] = "x"
    with pytest.raises(RlscapeError, match="not a number"):
        kind_of(many)
