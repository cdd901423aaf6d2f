"""Figures over training, from synthetic Datasets: one GIF frame per step, one colour scale for all."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from PIL import Image

from rlscape.plots import render_run
from rlscape.plots.overtrain import curve_figure, line_heatmap_figure, lines_3d_figure, plane_frames, write_gif

STEPS = [0, 1000, 5000, 20000]


def planes(steps=STEPS) -> xr.Dataset:
    a = np.linspace(-1, 1, 5)
    b = np.linspace(-1, 1, 3)
    z = np.stack([(k + 1) * 10.0 - (a[:, None] ** 2 + b[None, :] ** 2) * (k + 1) for k in range(len(steps))])
    z[1, 0, 0] = np.nan  # a point not computed yet
    return xr.Dataset({"return_mean": (("step", "alpha", "beta"), z)}, coords={"step": steps, "alpha": a, "beta": b},
                      attrs={"kind": "plane", "env_id": "Toy-v0", "algo": "ppo", "over_training": 1,
                             "dir1_label": "dir1: random", "dir2_label": "dir2: random"})


def test_gif_has_one_frame_per_checkpoint(tmp_path):
    paths = write_gif(planes(), tmp_path, mp4=False)
    assert paths == [tmp_path / "surface.gif"]
    with Image.open(paths[0]) as im:
        assert im.n_frames == len(STEPS)
        sizes = set()
        for i in range(im.n_frames):
            im.seek(i)
            sizes.add(im.size)
        assert len(sizes) == 1


def test_every_frame_uses_the_colour_scale_of_all_steps():
    ds = planes()
    z = ds.return_mean.values
    lo, hi = np.nanmin(z), np.nanmax(z)
    seen = []
    for step, fig in plane_frames(ds):
        ax = fig.axes[0]
        surf = ax.collections[0]
        assert surf.get_clim() == pytest.approx((lo, hi))
        assert ax.get_zlim() == pytest.approx((lo, hi))
        assert any(f"step {step:,}" in t.get_text() for t in fig.texts)
        seen.append(step)
        plt.close(fig)
    assert seen == STEPS


def test_line_heatmap_and_3d_lines():
    alpha = np.linspace(-1, 1, 7)
    z = np.stack([np.cos(alpha) * s for s in (1.0, 2.0, 3.0)])
    ds = xr.Dataset({"return_mean": (("step", "alpha"), z)}, coords={"step": [0, 10, 30], "alpha": alpha},
                    attrs={"kind": "line", "direction_label": "random"})
    fig = line_heatmap_figure(ds)
    mesh = fig.axes[0].collections[0]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(3, 7), z)  # rows = steps, columns = α
    assert mesh.get_clim() == pytest.approx((z.min(), z.max()))
    plt.close(fig)
    fig = lines_3d_figure(ds)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3
    for k, line in enumerate(lines):
        xs, ys, zs = line.get_data_3d()
        np.testing.assert_allclose(zs, z[k])
        assert set(ys) == {[0, 10, 30][k]}
    plt.close(fig)


def test_curve_band_is_mean_plus_minus_sem(tmp_path):
    mean, sem = np.array([10.0, 50.0, 120.0]), np.array([2.0, 5.0, 1.0])
    ds = xr.Dataset({"return_mean": ("step", mean), "return_sem": ("step", sem),
                     "returns": (("step", "episode"), np.stack([mean - 1, mean + 1], 1))},
                    coords={"step": [0, 100, 200]}, attrs={"kind": "curve", "env_id": "Toy-v0"})
    fig = curve_figure(ds)
    band = [c for c in fig.axes[0].collections if c.get_label() == "± SEM"][0]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx((mean - sem).min()) and ys.max() == pytest.approx((mean + sem).max())
    plt.close(fig)
    files = render_run(ds, tmp_path, formats=("png",))
    assert [f.name for f in files] == ["curve.png"]


def test_render_run_dispatches_over_training(tmp_path):
    names = sorted(f.name for f in render_run(planes(), tmp_path / "p", formats=("png",), gif=False))
    assert names == ["planes.png"]
