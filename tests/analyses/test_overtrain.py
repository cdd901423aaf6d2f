"""Landscapes over training: planes/lines per checkpoint, resumption, per-step directions, the curve."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import rlscape
from rlscape.analyses import overtrain
from rlscape.analyses.overtrain import CurveSpec, run_curve, run_surface_over_training
from rlscape.analyses.surface import run_surface
from rlscape.core.directions import load_direction, random_direction
from rlscape.core.errors import RlscapeError
from rlscape.core.runs import list_checkpoints, select_checkpoints
from rlscape.core.spec import EvalSpec, SurfaceSpec


def plane_spec(run, grid=3, episodes=2, seed=0, dirs=("random", "random")) -> SurfaceSpec:
    return SurfaceSpec(kind="plane", checkpoint=str(run), grid=(grid, grid), ranges=((-1, 1), (-1, 1)), directions=dirs,
                       evaluation=EvalSpec(episodes=episodes, seed=seed))


def line_spec(run, direction="random", points=5, episodes=2, seed=0) -> SurfaceSpec:
    return SurfaceSpec(kind="line", checkpoint=str(run), grid=(points,), ranges=((-0.5, 0.5),), directions=(direction,),
                       evaluation=EvalSpec(episodes=episodes, seed=seed))


def test_checkpoint_selection(ppo_run, tmp_path):
    steps = [s for s, _ in list_checkpoints(ppo_run)]
    assert steps == [0, 512, 1024, 1536]
    assert [s for s, _ in select_checkpoints(ppo_run, "1536, 0")] == [0, 1536]
    assert select_checkpoints(ppo_run, "all") == select_checkpoints(ppo_run, None)
    with pytest.raises(RlscapeError, match="no checkpoint at step 7; available steps: 0, 512, 1024, 1536"):
        select_checkpoints(ppo_run, "0,7")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(RlscapeError, match="holds no checkpoints"):
        select_checkpoints(tmp_path / "empty", None)


def test_plane_over_three_checkpoints(ppo_run, tmp_path):
    out = tmp_path / "planes"
    ds = run_surface_over_training(plane_spec(ppo_run, seed=3), out, checkpoints="0,512,1536", workers=1, progress=False)
    assert dict(ds.sizes) == {"step": 3, "alpha": 3, "beta": 3, "episode": 2}
    assert ds.return_mean.dims == ("step", "alpha", "beta") and ds.returns.dims == ("step", "alpha", "beta", "episode")
    np.testing.assert_array_equal(ds.step, [0, 512, 1536])
    np.testing.assert_array_equal(ds.alpha, [-1, 0, 1])
    assert np.isfinite(ds.return_mean).all() and ds.attrs["kind"] == "plane" and ds.attrs["over_training"] == 1
    stored = rlscape.load(out)
    np.testing.assert_array_equal(stored.returns.values, ds.returns.values)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["steps"] == [0, 512, 1536] and "torch" in run["versions"]
    assert json.loads((out / "spec.json").read_text())["checkpoints"] == "0,512,1536"

    dirs = {}
    for step in (0, 512, 1536):
        sub = out / "steps" / f"{step:010d}"
        np.testing.assert_array_equal(rlscape.load(sub).return_mean.values, ds.return_mean.sel(step=step).values)
        theta = rlscape.load_checkpoint(ppo_run / "checkpoints" / f"{step:010d}").parameters("actor")
        saved = load_direction(sub / "directions" / "dir1.npz", theta)
        again = random_direction(theta, seed=3, index=0)  # the same seed, normalised to this checkpoint's weights
        for n in theta:
            np.testing.assert_array_equal(saved.values[n], again.values[n])
        dirs[step] = saved.values
        assert ds.dir1_norm.sel(step=step) == pytest.approx(saved.norm)
    w = "mlp_extractor.policy_net.0.weight"
    assert not np.array_equal(dirs[0][w], dirs[1536][w])  # per-checkpoint directions differ


def test_rerun_after_an_interruption_skips_finished_steps(ppo_run, tmp_path, monkeypatch):
    out = tmp_path / "lines"
    spec = line_spec(ppo_run, points=3)
    calls: list[str] = []

    evaluate_surface = overtrain.evaluate_surface

    def crash_on_second(run, *args, **kw):
        calls.append(run.path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate_surface(run, *args, **kw)

    monkeypatch.setattr(overtrain, "evaluate_surface", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_surface_over_training(spec, out, checkpoints="0,512,1024", workers=1, progress=False)
    partial = rlscape.load(out)  # what finished is already readable
    assert list(partial.step.values) == [0]

    calls.clear()
    monkeypatch.setattr(overtrain, "evaluate_surface", lambda run, *a, **kw: calls.append(run.path.name) or evaluate_surface(run, *a, **kw))
    ds = run_surface_over_training(spec, out, checkpoints="0,512,1024", workers=1, progress=False)
    assert calls == ["0000000512", "0000001024"]  # step 0 was not recomputed
    np.testing.assert_array_equal(ds.returns.sel(step=0).values, partial.returns.sel(step=0).values)
    assert dict(ds.sizes) == {"step": 3, "alpha": 3, "episode": 2} and np.isfinite(ds.return_mean).all()
    with pytest.raises(RlscapeError, match="already holds this finished run"):
        run_surface_over_training(spec, out, checkpoints="0,512,1024", workers=1, progress=False)
    with pytest.raises(RlscapeError, match="differs in: checkpoints"):
        run_surface_over_training(spec, out, checkpoints="0,512", workers=1, progress=False)


def test_line_over_training_off_policy_continuous(sac_run, tmp_path):
    ds = run_surface_over_training(line_spec(sac_run, points=3, episodes=1), tmp_path / "sac", workers=1, progress=False)
    assert dict(ds.sizes) == {"step": 3, "alpha": 3, "episode": 1}
    assert ds.return_mean.dims == ("step", "alpha") and ds.returns.dims == ("step", "alpha", "episode")
    np.testing.assert_array_equal(ds.step, [0, 100, 200])
    assert np.isfinite(ds.return_mean).all() and (ds.return_mean < 0).all()  # Pendulum returns are negative
    assert ds.attrs["algo"] == "sac" and "value_mean" not in ds


def test_direction_files_per_checkpoint(ppo_run, tmp_path):
    folder = tmp_path / "dirs"
    made = {}
    for step, ckpt in select_checkpoints(ppo_run, "0,1024"):
        theta = rlscape.load_checkpoint(ckpt).parameters("actor")
        d = random_direction(theta, seed=100 + step, index=0, normalization="none")
        d.save(folder / f"{step:010d}.npz")
        made[step] = d
    ds = run_surface_over_training(line_spec(ppo_run, direction=str(folder), points=3), tmp_path / "a",
                                   checkpoints="0,1024", workers=1, progress=False)
    np.testing.assert_allclose(ds.direction_norm.values, [made[0].norm, made[1024].norm], rtol=1e-6)
    template = str(folder / "{step:010d}.npz")
    again = run_surface_over_training(line_spec(ppo_run, direction=template, points=3), tmp_path / "b",
                                      checkpoints="0,1024", workers=1, progress=False)
    np.testing.assert_array_equal(again.returns.values, ds.returns.values)
    with pytest.raises(RlscapeError, match=r"no direction for step 512 in .*expected 0000000512.npz"):
        run_surface_over_training(line_spec(ppo_run, direction=str(folder)), tmp_path / "c", checkpoints="0,512", progress=False)
    with pytest.raises(RlscapeError, match="no direction for step 512"):
        run_surface_over_training(line_spec(ppo_run, direction=template), tmp_path / "d", checkpoints="512", progress=False)
    assert not (tmp_path / "c").exists()  # bad input touches nothing


def test_curve_equals_the_centre_of_a_plane_at_the_same_seed(ppo_run, tmp_path, monkeypatch):
    spec = CurveSpec(run=str(ppo_run), checkpoints="0,1024", evaluation=EvalSpec(episodes=4, seed=5))
    curve = run_curve(spec, tmp_path / "curve", workers=2, progress=False)  # checkpoints in parallel processes
    assert dict(curve.sizes) == {"step": 2, "episode": 4} and curve.attrs["kind"] == "curve"
    assert curve.return_mean.dims == ("step",) and curve.returns.dims == ("step", "episode")
    np.testing.assert_allclose(curve.return_sem, curve.return_std / 2)
    for step in (0, 1024):
        ckpt = ppo_run / "checkpoints" / f"{step:010d}"
        single = run_surface(plane_spec(ckpt, grid=3, episodes=4, seed=5), workers=1, progress=False)
        for v in ("returns", "lengths", "discounted_returns"):
            np.testing.assert_array_equal(curve[v].sel(step=step).values, single[v].sel(alpha=0, beta=0).values)
        np.testing.assert_allclose(curve.value_mean.sel(step=step), single.value_mean.sel(alpha=0, beta=0))
    # resumable: after a crash, stored checkpoints are not evaluated again
    info = json.loads((tmp_path / "curve" / "run.json").read_text())
    (tmp_path / "curve" / "run.json").write_text(json.dumps({**info, "status": "running"}))
    shutil.rmtree(tmp_path / "curve" / "steps" / "0000001024")
    evaluated = []
    real = overtrain.evaluate_checkpoint
    monkeypatch.setattr(overtrain, "evaluate_checkpoint", lambda s, m, step, folder, run=None: evaluated.append(folder.name) or real(s, m, step, folder, run))
    again = run_curve(spec, tmp_path / "curve", workers=1, progress=False)
    assert evaluated == ["0000001024"]
    np.testing.assert_array_equal(again.returns.values, curve.returns.values)


def test_bad_input_is_one_line(ppo_run, tmp_path):
    with pytest.raises(RlscapeError, match="available steps: 0, 512, 1024, 1536"):
        run_surface_over_training(plane_spec(ppo_run), tmp_path / "x", checkpoints="5")
    vn = plane_spec(ppo_run).model_copy(update={"vecnormalize": "/some/vecnormalize.pkl"})
    with pytest.raises(RlscapeError, match="drop it"):
        run_surface_over_training(vn, tmp_path / "x")
    with pytest.raises(RlscapeError, match="not a training run"):
        run_curve(CurveSpec(run=str(tmp_path)), tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_rerun_after_more_training_computes_only_the_new_checkpoints(ppo_run, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(ppo_run / "env.json", run / "env.json")
    for step in ("0000000000", "0000000512"):
        shutil.copytree(ppo_run / "checkpoints" / step, run / "checkpoints" / step)
    spec = line_spec(run, points=3, episodes=1)
    run_surface_over_training(spec, tmp_path / "out", workers=1, progress=False)
    shutil.copytree(ppo_run / "checkpoints" / "0000001024", run / "checkpoints" / "0000001024")  # training went on
    calls: list[str] = []
    evaluate_surface = overtrain.evaluate_surface
    monkeypatch.setattr(overtrain, "evaluate_surface", lambda run, *a, **kw: calls.append(run.path.name) or evaluate_surface(run, *a, **kw))
    ds = run_surface_over_training(spec, tmp_path / "out", workers=1, progress=False)
    assert calls == ["0000001024"] and list(ds.step.values) == [0, 512, 1024]
