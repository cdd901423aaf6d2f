"""Tests for the plotting layer (rlscape.plots) on small synthetic results."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from matplotlib import colors as mcolors
from matplotlib.collections import PolyCollection, QuadMesh

from rlscape.plots import (
    plot_line,
    plot_line_html,
    plot_plane,
    render_run,
)
from rlscape.plots.interactive import line_html_figure, plane_html_figure
from rlscape.plots.static import (
    HAS_3D_SCALES,
    contour_figure,
    heatmap_figure,
    line_figure,
    plane_axis_labels,
    run_title,
    surface_figure,
)

PEAK = (0.5, -0.5)  # (alpha, beta) of the paraboloid's maximum, on the grid
EPISODES = 4


def paraboloid(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Known return surface: max 200 at PEAK, strongly negative at the corners."""
    return 200.0 - 100.0 * ((a - PEAK[0]) ** 2 + (b - PEAK[1]) ** 2)


def _episode_vars(mean: np.ndarray) -> dict[str, np.ndarray]:
    """Per-episode returns (..., episode) with exactly ``mean`` as their mean."""
    offsets = np.array([-3.0, -1.0, 1.0, 3.0])  # zero mean
    returns = mean[..., None] + offsets
    return {
        "returns": returns,
        "lengths": np.where(np.isfinite(returns), 100.0, np.nan),
        "discounted_returns": 0.9 * returns,
        "return_mean": mean,
        "return_std": np.where(np.isfinite(mean), offsets.std(ddof=1), np.nan),
        "return_sem": np.where(np.isfinite(mean), offsets.std(ddof=1) / 2.0, np.nan),
        "length_mean": np.where(np.isfinite(mean), 100.0, np.nan),
        "discounted_return_mean": 0.9 * mean,
        "n_episodes": np.where(np.isfinite(mean), float(EPISODES), np.nan),
    }


def make_plane(nan_points: bool = True) -> xr.Dataset:
    """5×7 plane (alpha × beta) with a paraboloid return and some NaN points."""
    alpha = np.linspace(-1.0, 1.0, 5)
    beta = np.linspace(-1.5, 1.5, 7)
    a, b = np.meshgrid(alpha, beta, indexing="ij")  # (5, 7) = (alpha, beta)
    mean = paraboloid(a, b)
    if nan_points:
        mean[3:, 6] = np.nan  # not yet computed tail
        mean[0, 2] = np.nan  # isolated hole
    v = _episode_vars(mean)
    data_vars = {
        k: (("alpha", "beta", "episode") if arr.ndim == 3 else ("alpha", "beta"), arr)
        for k, arr in v.items()
    }
    return xr.Dataset(
        data_vars,
        coords={"alpha": alpha, "beta": beta, "episode": np.arange(EPISODES)},
        attrs={
            "kind": "plane",
            "env_id": "CartPole-v1",
            "algo": "ppo",
            "checkpoint": "/runs/ppo/cartpole/model.zip",
            "dir1_label": "dir1: random Gaussian, filter-normalised (seed 0)",
            "dir2_label": "dir2: random Gaussian, filter-normalised (seed 1)",
            "dir1_norm": 12.3456,
            "dir2_norm": 11.9,
            "normalization": "filter",
            "episodes": EPISODES,
            "deterministic": 1,
            "seed": 0,
        },
    )


def make_line(kind: str = "random") -> xr.Dataset:
    """Line run; 'interpolation' runs span alpha ∈ [-0.5, 1.5] (θ1 at 0, θ2 at 1)."""
    if kind == "interpolation":
        alpha = np.linspace(-0.5, 1.5, 21)
        mean = 150.0 - 400.0 * (alpha * (1.0 - alpha)) ** 2 * 4 - 50 * alpha
        label = "interpolation θ1→θ2"
    else:
        alpha = np.linspace(-1.0, 1.0, 21)
        mean = 200.0 - 300.0 * alpha**2
        label = "random Gaussian, filter-normalised (seed 0)"
    mean[15] = np.nan  # a gap
    v = _episode_vars(mean)
    data_vars = {k: (("alpha", "episode") if arr.ndim == 2 else ("alpha",), arr) for k, arr in v.items()}
    return xr.Dataset(
        data_vars,
        coords={"alpha": alpha, "episode": np.arange(EPISODES)},
        attrs={
            "kind": "line",
            "env_id": "CartPole-v1",
            "algo": "ppo",
            "checkpoint": "model.zip",
            "direction_label": label,
            "direction_kind": kind,
            "direction_norm": 3.21,
            "episodes": EPISODES,
            "deterministic": 0,
            "seed": 0,
        },
    )


def _theta_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if t.get_text().startswith(r"$\theta")]


def _assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) > 10_000, (path, len(data))


def _assert_pdf(path) -> None:
    data = path.read_bytes()
    assert data[:5] == b"%PDF-", path
    assert len(data) > 5_000, (path, len(data))


def _assert_offline_html(path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "<html" in text
    assert len(text) > 1_000_000  # plotly.js is embedded
    assert 'src="https://cdn.plot.ly' not in text


# --------------------------------------------------------------------------- files


def test_render_plane_writes_png_pdf_html(tmp_path):
    paths = render_run(make_plane(), tmp_path / "plots")  # defaults: png + pdf + html
    expected = [f"{stem}.{ext}" for stem in ("surface_3d", "heatmap", "contour") for ext in ("png", "pdf")]
    assert sorted(p.name for p in paths) == sorted(expected + ["surface.html"])
    for p in paths:
        assert p.parent == tmp_path / "plots"
        {".png": _assert_png, ".pdf": _assert_pdf, ".html": _assert_offline_html}[p.suffix](p)


@pytest.mark.filterwarnings("ignore::UserWarning")  # zarr v3 consolidated-metadata notice
def test_render_line_from_zarr_run_dir(tmp_path):
    make_line().to_zarr(tmp_path / "run" / "results.zarr")
    paths = render_run(tmp_path / "run", tmp_path / "out", formats=("png",))
    assert [p.name for p in paths] == ["line.png", "line.html"]
    _assert_png(paths[0])
    _assert_offline_html(paths[1])


def test_plot_line_and_html_direct(tmp_path):
    assert plot_line(make_line("interpolation"), tmp_path, formats=("pdf",)) == [tmp_path / "line.pdf"]
    _assert_pdf(tmp_path / "line.pdf")
    assert plot_line_html(make_line(), tmp_path / "h") == tmp_path / "h" / "line.html"
    with pytest.raises(ValueError, match="format"):
        plot_line(make_line(), tmp_path, formats=("jpeg2000",))


# --------------------------------------------------------------------------- content


def test_heatmap_orientation_and_peak():
    ds = make_plane()
    fig = heatmap_figure(ds)
    ax = fig.axes[0]
    meshes = [c for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(meshes) == 1
    arr = meshes[0].get_array()
    expected = ds["return_mean"].values.T  # (beta, alpha): rows follow y = beta
    assert arr.shape == expected.shape == (7, 5)
    np.testing.assert_array_equal(np.ma.getmaskarray(arr), np.isnan(expected))
    np.testing.assert_allclose(arr.filled(np.nan), expected)
    # the brightest cell's centre in data coordinates is the paraboloid's peak
    corners = meshes[0].get_coordinates()  # (7+1, 5+1, 2) cell edges
    centres = 0.25 * (corners[:-1, :-1] + corners[1:, :-1] + corners[:-1, 1:] + corners[1:, 1:])
    j, i = np.unravel_index(np.ma.argmax(arr), arr.shape)
    np.testing.assert_allclose(centres[j, i], PEAK)
    # θ0 marker sits at the origin
    assert any(
        line.get_marker() == "*" and list(line.get_xdata()) == [0.0] and list(line.get_ydata()) == [0.0]
        for line in ax.lines
    )
    assert ax.get_xlabel().startswith("α · dir1: random Gaussian")
    assert "‖d1‖ = 12.3" in ax.get_xlabel()
    ylabel = ax.get_ylabel().replace("\n", " ")  # long labels are wrapped
    assert ylabel.startswith("β · dir2") and "‖d2‖ = 11.9" in ylabel
    assert ax.get_title() == "CartPole-v1 · ppo · mean return over 4 episodes"
    assert len(fig.axes) == 2  # the colour bar


def test_contour_axes_follow_alpha_and_beta():
    fig = contour_figure(make_plane())
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_xlim(), (-1.0, 1.0))
    np.testing.assert_allclose(ax.get_ylim(), (-1.5, 1.5))
    assert len(fig.axes) == 2  # colour bar
    assert any(t.get_text() for t in ax.texts)  # contour labels / θ0


def test_surface_marks_centre_and_transposes():
    ds = make_plane()
    fig = surface_figure(ds)
    ax = fig.axes[0]
    assert ax.name == "3d"
    assert ax.get_zscale() == "linear"
    (marker,) = [c for c in ax.collections if c.__class__.__name__ == "Path3DCollection"]
    xs, ys, zs = marker._offsets3d
    assert (float(xs[0]), float(ys[0]), float(zs[0])) == (0.0, 0.0, float(paraboloid(0.0, 0.0)))
    log_ax = surface_figure(ds, log_scale=True).axes[0]
    assert log_ax.get_zscale() == ("symlog" if HAS_3D_SCALES else "linear")
    assert isinstance(log_ax.collections[0].norm, mcolors.SymLogNorm)


def test_scales_linear_by_default_and_symlog_on_request():
    plane, line = make_plane(), make_line()
    assert line_figure(line).axes[0].get_yscale() == "linear"
    assert line_figure(line, log_scale=True).axes[0].get_yscale() == "symlog"
    assert heatmap_figure(plane).axes[1].get_yscale() == "linear"  # colour bar
    assert heatmap_figure(plane, log_scale=True).axes[1].get_yscale() == "symlog"
    for build in (heatmap_figure, contour_figure):
        mappable = build(plane).axes[0].collections[0]
        assert type(mappable.norm) is mcolors.Normalize
        mappable = build(plane, log_scale=True).axes[0].collections[0]
        assert isinstance(mappable.norm, mcolors.SymLogNorm)


def test_line_content_gaps_band_and_markers():
    ds = make_line()
    ax = line_figure(ds).axes[0]
    mean_line = next(line for line in ax.lines if line.get_label() == "mean return")
    np.testing.assert_allclose(mean_line.get_xdata(), ds["alpha"].values)
    np.testing.assert_allclose(mean_line.get_ydata(), ds["return_mean"].values)  # NaN kept → gap
    assert any(isinstance(c, PolyCollection) for c in ax.collections)  # SEM band
    assert _theta_labels(ax) == [r"$\theta_0$"]
    assert ax.get_xlabel() == "α · random Gaussian, filter-normalised (seed 0) (‖d‖ = 3.21)"

    interp = line_figure(make_line("interpolation")).axes[0]
    assert _theta_labels(interp) == [r"$\theta_1$", r"$\theta_2$"]
    assert [line.get_xdata()[0] for line in interp.lines if line.get_marker() == "*"] == [0.0]
    assert "interpolation θ1→θ2" in interp.get_xlabel()


def test_plotly_surface_data_and_hover():
    ds = make_plane()
    fig = plane_html_figure(ds)
    surf = fig.data[0]
    assert surf.type == "surface"
    z = np.array(surf.z, dtype=float)  # None → nan
    np.testing.assert_allclose(z, ds["return_mean"].values.T)
    j, i = np.unravel_index(np.nanargmax(z), z.shape)
    assert (surf.x[i], surf.y[j]) == PEAK
    assert "± 1.29 (SEM)" in surf.text[j][i] and "α = 0.5" in surf.text[j][i]
    assert "not computed" in surf.text[6][4]
    assert fig.layout.scene.xaxis.title.text.startswith("α · dir1")
    assert fig.data[1].type == "scatter3d"  # θ0 marker

    line_fig = line_html_figure(make_line())
    assert [t.name for t in line_fig.data[:3]] == ["mean + SEM", "± SEM", "mean return"]
    assert line_fig.data[1].fill == "tonexty"


# --------------------------------------------------------------------------- errors & edges


def test_unknown_kind_raises():
    ds = make_plane()
    ds.attrs["kind"] = "cube"
    with pytest.raises(ValueError, match="kind"):
        render_run(ds, "/nonexistent/never-written")


def test_all_nan_raises(tmp_path):
    ds = make_line()
    ds["return_mean"][:] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        render_run(ds, tmp_path)
    with pytest.raises(ValueError, match="all NaN"):
        plot_line(ds, tmp_path)
    assert not list(tmp_path.iterdir())


def test_wrong_kind_for_function_raises(tmp_path):
    with pytest.raises(ValueError, match="plane"):
        plot_plane(make_line(), tmp_path)


def test_sparse_plane_and_missing_attrs_render(tmp_path):
    ds = make_plane()
    ds["return_mean"][:, :] = np.nan
    ds["return_mean"][2, 3] = 5.0  # only θ0 computed so far
    ds["return_mean"][2, 4] = -3.0
    ds.attrs = {"kind": "plane"}
    paths = render_run(ds, tmp_path, formats=("png",), html=False)
    assert len(paths) == 3 and all(p.stat().st_size > 5_000 for p in paths)
    assert run_title(ds) == "mean return over 4 episodes"
    assert plane_axis_labels(ds) == ("α · dir1", "β · dir2")
