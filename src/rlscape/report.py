"""One self-contained HTML report over many runs: ``rlscape report DIR [DIR …] --out report.html``.

The page inlines plotly.js once and every number it shows, so it opens offline (from a USB stick,
without any request to the network). Each run found beneath the given folders gets one section,
chosen through the registry of kinds (:data:`rlscape.core.kinds.KINDS`):

* planes — an interactive 3-D surface and a heatmap; planes over training add a **step slider**
  that swaps both to another checkpoint;
* lines — mean ± SEM; lines over training a step slider and a step × offset heatmap;
* training curves — mean ± SEM against the training step;
* every other kind (gradient, curvature, step size, cliffs, regions, populations and any kind added
  later) — a generic section: the static PNG figures of its renderer
  (:data:`rlscape.plots.render.RENDERERS`) embedded as base64.

Every section carries the run's headline (:func:`rlscape.core.kinds.headline`), spec, seed,
budget, package versions, wall time and the command that wrote it. A run whose ``run.json`` status
is not ``complete`` is shown as unfinished (no figures of partial results). The sub-runs of an
over-training run (``DIR/steps/<step>/``) are part of their parent and are not listed.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import KINDS, Kind, kind_of
from rlscape.core.lifecycle import STEPS
from rlscape.core.results import load
from rlscape.core.store import RESULTS, RUN_FILE, SPEC_FILE, RunDir

log = logging.getLogger(__name__)

__all__ = ["find_runs", "build_report", "write_report", "ReportRun"]

#: folders inside a run directory that never hold another run
_NOT_RUNS = {RESULTS, "chunks", "directions", "plots", "checkpoints", "__pycache__"}
_INTERACTIVE = {"plane", "plane-over-training", "line", "line-over-training", "curve"}


# -- finding runs ----------------------------------------------------------------------------------

def _is_run(d: Path) -> bool:
    return (d / RESULTS).exists() or ((d / RUN_FILE).is_file() and (d / SPEC_FILE).is_file())


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Every run directory at or beneath ``paths``, in the order given (sorted within a folder).

    A run directory holds ``results.zarr`` (or ``run.json`` + ``spec.json`` before its first
    result). The per-checkpoint sub-runs of an over-training run (``RUN/steps/<step>/``) belong to
    it and are skipped; runs written inside another run (``LINE_RUN/cliffs``) are found.

    Raises
    ------
    RlscapeError
        A path that does not exist, or no run beneath any of them.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise RlscapeError(f"{p} does not exist; give run directories or a folder holding them")
        for dirpath, dirnames, _ in os.walk(p):
            d = Path(dirpath)
            run = _is_run(d)
            dirnames[:] = sorted(n for n in dirnames
                                 if n not in _NOT_RUNS and not n.startswith(".") and not n.endswith(".zarr")
                                 and not (run and n == STEPS))
            if run and d.resolve() not in seen:
                seen.add(d.resolve())
                found.append(d)
    if not found:
        raise RlscapeError(f"no rlscape runs (folders holding {RESULTS}) in {', '.join(map(str, paths))}; "
                           "give the --out folder of an analysis or a folder above it")
    return found


# -- one run ---------------------------------------------------------------------------------------

@dataclass
class ReportRun:
    """What the report shows of one run directory (``ds`` is None for an unfinished run)."""

    path: Path
    name: str
    status: str
    spec: dict[str, Any]
    info: dict[str, Any]
    kind: Kind | None
    ds: xr.Dataset | None
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.status == "complete" and self.ds is not None


def _read_run(path: Path, name: str) -> ReportRun:
    rd = RunDir(path)
    try:
        spec, info = rd.read_spec() or {}, rd.read_run()
    except (RlscapeError, json.JSONDecodeError) as exc:
        raise RlscapeError(f"{path}: {exc}") from None
    status = str(info.get("status", "unknown" if info else "no run.json"))
    if (path / RESULTS).exists() and status == "no run.json":
        status = "complete"  # results written outside the lifecycle (rlscape.save): complete by construction
    kind: Kind | None = None
    ds: xr.Dataset | None = None
    try:
        if status == "complete":
            ds = load(path)
            kind = kind_of(ds)
        elif (path / RESULTS).exists():  # unfinished: check the kind, never draw partial results
            kind = kind_of(xr.open_zarr(path / RESULTS, consolidated=True))
    except RlscapeError as exc:
        raise RlscapeError(f"{path}: {exc}") from None
    if kind is None:
        name_ = str(info.get("kind") or spec.get("kind") or "")
        kind = KINDS.get(name_)
    return ReportRun(path, name, status, spec, info, kind, ds)


def _fmt(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.4g}" if np.isfinite(f) else "NaN"


def _source_env(r: ReportRun) -> dict[str, Any]:
    """``env.json`` of the checkpoint or training run the run read (env id, algorithm), if it is still there."""
    for key in ("checkpoint", "run", "source"):
        if r.spec.get(key):
            src = Path(str(r.spec[key]))
            f = (src if src.is_dir() else src.parent) / "env.json"
            try:
                return dict(json.loads(f.read_text())) if f.is_file() else {}
            except (OSError, ValueError):
                return {}
    return {}


def _env(r: ReportRun) -> str:
    env = r.info.get("env")
    if isinstance(env, dict) and env.get("env_id"):
        return str(env["env_id"])
    for src in ((r.ds.attrs if r.ds is not None else {}), r.spec, r.info, _source_env(r)):
        for key in ("env_id", "env"):
            if src.get(key) and not isinstance(src.get(key), dict):
                return str(src[key])
    return "—"


def _algo(r: ReportRun) -> str:
    for src in (r.info, (r.ds.attrs if r.ds is not None else {}), r.spec, _source_env(r)):
        if src.get("algo"):
            return str(src["algo"]).upper()
    return "—"


def _checkpoints(r: ReportRun) -> str:
    src = next((str(r.spec[k]) for k in ("checkpoint", "run", "source", "line_run") if r.spec.get(k)), None)
    if src is None and r.ds is not None:
        src = r.ds.attrs.get("checkpoint") or r.ds.attrs.get("run")
    text = Path(str(src)).name if src else "—"
    steps = r.info.get("steps")
    if r.ds is not None and "step" in r.ds.dims:
        steps = [int(s) for s in r.ds["step"].values]
    if steps:
        shown = ", ".join(map(str, steps[:6])) + (f" … ({len(steps)})" if len(steps) > 6 else "")
        text += f" · steps {shown}"
    return text


def _evaluation(r: ReportRun) -> dict[str, Any]:
    ev = r.spec.get("evaluation")
    return ev if isinstance(ev, dict) else {}


def _seed(r: ReportRun) -> str:
    ev = _evaluation(r)
    for src in (r.spec, ev, (r.ds.attrs if r.ds is not None else {})):
        if src.get("seed") is not None:
            return str(src["seed"])
    return "—"


def _budget(r: ReportRun) -> str:
    ev = _evaluation(r)
    parts: list[tuple[str, Any]] = []
    for src in (ev, r.spec):
        for key in ("episodes", "steps", "batches", "trials", "trajectories", "gradient_episodes"):
            if isinstance(src.get(key), int | float) and not isinstance(src.get(key), bool) and key not in {p[0] for p in parts}:
                parts.append((key, src[key]))
    for key in ("grid", "points"):
        if r.spec.get(key):
            parts.append((key, "×".join(map(str, r.spec[key])) if isinstance(r.spec[key], list) else r.spec[key]))
    if r.info.get("env_steps_this_session"):
        parts.append(("env steps (last session)", r.info["env_steps_this_session"]))
    return ", ".join(f"{k} {v}" for k, v in parts) or "—"


def _headline(r: ReportRun) -> str:
    if not r.complete or r.kind is None or r.ds is None:
        return f"unfinished ({r.status})"
    try:
        return r.kind.headline(r.ds)
    except (KeyError, ValueError, TypeError, IndexError) as exc:  # a headline must not sink the whole report
        log.warning("no headline for %s: %s", r.path, exc)
        return f"(no headline: {exc})"


# -- figures ---------------------------------------------------------------------------------------

def _round(a: np.ndarray) -> list:
    """Nested lists, 6 significant digits, NaN → None (JSON null: plotly draws a gap)."""
    arr = np.asarray(a, dtype=float)
    out = np.asarray([float(f"{v:.6g}") if np.isfinite(v) else None for v in arr.ravel()], dtype=object)
    return out.reshape(arr.shape).tolist()


def _script_json(obj: Any) -> str:
    """JSON safe inside a ``<script>`` element."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


class _Page:
    """Collects plot divs (each a plotly figure as JSON) and the step sliders."""

    def __init__(self) -> None:
        self.n = 0

    def figure(self, fig: Any, caption: str = "") -> tuple[str, str]:
        self.n += 1
        fid = f"fig-{self.n}"
        spec = json.loads(fig.to_json())
        spec.pop("frames", None)
        payload = {"data": spec.get("data", []), "layout": spec.get("layout", {})}
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        return fid, (f'<figure><div class="plot" id="{fid}"></div>{cap}'
                     f'<script type="application/json" id="{fid}-json">{_script_json(payload)}</script></figure>')

    def slider(self, targets: list[str], key: str, frames: list[list], steps: Sequence[int]) -> str:
        """A range input over ``steps``: moving it restyles trace 0's ``key`` of each target to ``frames[i]``."""
        self.n += 1
        sid = f"slider-{self.n}"
        data = {"targets": targets, "key": key, "frames": frames, "steps": [int(s) for s in steps]}
        last = len(steps) - 1
        return (f'<div class="slider"><label for="{sid}">training step <output id="{sid}-label">{int(steps[last])}</output>'
                f' ({last + 1} of {len(steps)})</label> <input type="range" class="step-slider" id="{sid}" min="0" '
                f'max="{last}" step="1" value="{last}">'
                f'<script type="application/json" id="{sid}-json">{_script_json(data)}</script></div>')


def _surface_pair(alpha: np.ndarray, beta: np.ndarray, z: np.ndarray, title: str, zlabel: str) -> tuple[Any, Any]:
    import plotly.graph_objects as go

    surf = go.Figure(go.Surface(x=alpha.tolist(), y=beta.tolist(), z=_round(z), colorscale="Viridis",
                                colorbar={"title": {"text": zlabel}},
                                hovertemplate="α = %{x:.4g}<br>β = %{y:.4g}<br>" + zlabel + " = %{z:.4g}<extra></extra>"))
    surf.update_layout(title={"text": title}, height=620, margin={"l": 0, "r": 0, "t": 60, "b": 0},
                       scene={"xaxis": {"title": {"text": "α (dir 1)"}}, "yaxis": {"title": {"text": "β (dir 2)"}},
                              "zaxis": {"title": {"text": zlabel}}})
    heat = go.Figure(go.Heatmap(x=alpha.tolist(), y=beta.tolist(), z=_round(z), colorscale="Viridis",
                                colorbar={"title": {"text": zlabel}},
                                hovertemplate="α = %{x:.4g}<br>β = %{y:.4g}<br>" + zlabel + " = %{z:.4g}<extra></extra>"))
    heat.add_trace(go.Scatter(x=[0.0], y=[0.0], mode="markers", marker={"color": "red", "symbol": "x", "size": 10},
                              name="θ0", hoverinfo="name"))
    heat.update_layout(title={"text": f"heatmap · {title}"}, height=520, xaxis={"title": {"text": "α (dir 1)"}},
                       yaxis={"title": {"text": "β (dir 2)", }, "scaleanchor": None}, showlegend=False)
    return surf, heat


def _plane_section(page: _Page, ds: xr.Dataset) -> str:
    from rlscape.plots.interactive import plane_html_figure
    from rlscape.plots.static import plane_values

    alpha, beta, z = plane_values(ds, "return_mean")
    surf = plane_html_figure(ds)
    surf.update_layout(width=None, height=650)
    _, heat = _surface_pair(alpha, beta, z, "mean return", "mean return")
    return page.figure(surf)[1] + page.figure(heat)[1]


def _plane_over_training_section(page: _Page, ds: xr.Dataset) -> str:
    steps = [int(s) for s in ds["step"].values]
    alpha, beta = np.asarray(ds["alpha"].values, float), np.asarray(ds["beta"].values, float)
    z = np.asarray(ds["return_mean"].transpose("step", "beta", "alpha").values, float)  # (step, g2, g1)
    surf, heat = _surface_pair(alpha, beta, z[-1], "mean return", "mean return")
    finite = z[np.isfinite(z)]
    if finite.size:  # one colour scale for every step, so moving the slider compares like with like
        lo, hi = float(finite.min()), float(finite.max())
        surf.update_traces(cmin=lo, cmax=hi, selector={"type": "surface"})
        heat.update_traces(zmin=lo, zmax=hi, selector={"type": "heatmap"})
        surf.update_layout(scene={"zaxis": {"range": [lo, hi]}})
    s_id, s_html = page.figure(surf, "3-D surface at the step chosen by the slider")
    h_id, h_html = page.figure(heat, "heatmap at the same step (one colour scale for all steps)")
    slider = page.slider([s_id, h_id], "z", [_round(zk) for zk in z], steps)
    return slider + s_html + h_html + _centre_curve(page, ds)


def _centre_curve(page: _Page, ds: xr.Dataset) -> str:
    import plotly.graph_objects as go

    da = ds["return_mean"]
    for dim in ("alpha", "beta"):
        if dim in da.dims:
            da = da.sel({dim: 0.0}, method="nearest")
    fig = go.Figure(go.Scatter(x=[int(s) for s in ds["step"].values], y=_round(da.values), mode="lines+markers",
                               name="J at the centre"))
    fig.update_layout(title={"text": "mean return at the centre (θ of each checkpoint)"}, height=380,
                      xaxis={"title": {"text": "training step"}}, yaxis={"title": {"text": "mean return"}},
                      template="plotly_white")
    return page.figure(fig)[1]


def _line_section(page: _Page, ds: xr.Dataset) -> str:
    from rlscape.plots.interactive import line_html_figure

    fig = line_html_figure(ds)
    fig.update_layout(width=None, height=520)
    return page.figure(fig)[1]


def _line_over_training_section(page: _Page, ds: xr.Dataset) -> str:
    import plotly.graph_objects as go

    steps = [int(s) for s in ds["step"].values]
    alpha = np.asarray(ds["alpha"].values, float)
    y = np.asarray(ds["return_mean"].transpose("step", "alpha").values, float)
    finite = y[np.isfinite(y)]
    line = go.Figure(go.Scatter(x=alpha.tolist(), y=_round(y[-1]), mode="lines+markers", name="mean return"))
    line.update_layout(title={"text": "mean return along the line at the step chosen by the slider"}, height=460,
                       xaxis={"title": {"text": "α"}}, yaxis={"title": {"text": "mean return"},
                                                             **({"range": [float(finite.min()), float(finite.max())]} if finite.size else {})},
                       template="plotly_white")
    l_id, l_html = page.figure(line)
    heat = go.Figure(go.Heatmap(x=alpha.tolist(), y=[str(s) for s in steps], z=_round(y), colorscale="Viridis",
                                colorbar={"title": {"text": "mean return"}},
                                hovertemplate="α = %{x:.4g}<br>step %{y}<br>mean return = %{z:.4g}<extra></extra>"))
    heat.update_layout(title={"text": "step × offset"}, height=460, xaxis={"title": {"text": "α"}},
                       yaxis={"title": {"text": "training step"}, "type": "category"})
    slider = page.slider([l_id], "y", [_round(yk) for yk in y], steps)
    return slider + l_html + page.figure(heat)[1]


def _curve_section(page: _Page, ds: xr.Dataset) -> str:
    import plotly.graph_objects as go

    steps = [int(s) for s in ds["step"].values]
    mean = np.asarray(ds["return_mean"].values, float)
    fig = go.Figure()
    if "return_sem" in ds:
        sem = np.asarray(ds["return_sem"].values, float)
        fig.add_trace(go.Scatter(x=steps, y=_round(mean + sem), mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=steps, y=_round(mean - sem), mode="lines", line={"width": 0}, fill="tonexty",
                                 fillcolor="rgba(31,119,180,0.25)", name="± SEM", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=steps, y=_round(mean), mode="lines+markers", name="mean return",
                             line={"color": "rgb(31,119,180)"}))
    fig.update_layout(title={"text": "training curve (mean ± SEM)"}, height=460, template="plotly_white",
                      xaxis={"title": {"text": "training step"}}, yaxis={"title": {"text": "mean return"}})
    return page.figure(fig)[1]


_SECTIONS = {
    "plane": _plane_section,
    "plane-over-training": _plane_over_training_section,
    "line": _line_section,
    "line-over-training": _line_over_training_section,
    "curve": _curve_section,
}


def _static_figures(r: ReportRun) -> str:
    """The renderer's PNG figures of ``r`` embedded as base64 (the generic section of any kind)."""
    from rlscape.plots.render import render_run

    assert r.ds is not None
    with tempfile.TemporaryDirectory(prefix="rlscape-report-") as tmp:
        try:
            paths = render_run(r.ds, tmp, formats=("png",), html=False, gif=False, run_dir=r.path)
        except RlscapeError as exc:
            log.warning("%s: its figures cannot be drawn: %s", r.path, exc)
            return f'<p class="warn">Its figures cannot be drawn: {html.escape(str(exc))}</p>'
        out = []
        for p in sorted(p for p in paths if p.suffix == ".png"):
            b64 = base64.b64encode(p.read_bytes()).decode("ascii")
            out.append(f'<figure><img class="static" alt="{html.escape(p.name)}" src="data:image/png;base64,{b64}">'
                       f"<figcaption>{html.escape(p.name)}</figcaption></figure>")
    return "".join(out) or "<p>(its renderer draws no PNG figure)</p>"


def _provenance(r: ReportRun) -> str:
    info = r.info
    versions = info.get("versions") or {}
    wall = info.get("wall_time_total_s", info.get("wall_time_s"))
    rows = [
        ("status", r.status),
        ("seed", _seed(r)),
        ("budget", _budget(r)),
        ("wall time", f"{_fmt(wall)} s" + (f" over {info['sessions']} session(s)" if info.get("sessions") else "") if wall is not None else "—"),
        ("started / finished", f"{info.get('started', '—')} / {info.get('finished', info.get('stopped', '—'))}"),
        ("cores / workers", f"{info.get('cores', '—')} / {info.get('workers', '—')}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or "—"),
        ("folder", str(r.path)),
    ]
    if info.get("error"):
        rows.insert(1, ("error", str(info["error"])))
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    cmd = info.get("command")
    cmd_html = (f'<p>Reproduce: <code class="command">{html.escape(_command(cmd))}</code></p>' if cmd else
                "<p>No command recorded (results written from Python).</p>")
    spec = html.escape(json.dumps(r.spec, indent=2, sort_keys=True, default=str))
    return (f'<table class="prov">{table}</table>{cmd_html}'
            f"<details><summary>spec.json</summary><pre>{spec}</pre></details>")


def _command(cmd: str) -> str:
    """``run.json``'s command line without the interpreter / script path in front of the subcommand."""
    words = str(cmd).split()
    if words and (words[0].endswith("rlscape") or words[0].endswith("rlscape/cli.py")):
        return "rlscape " + " ".join(words[1:])
    return " ".join(words)  # written by another program (a script, a test): as recorded


def _section(page: _Page, r: ReportRun, anchor: str) -> str:
    title = r.kind.title if r.kind else "unknown kind"
    head = (f'<section class="run" id="{anchor}" data-kind="{html.escape(r.kind.name if r.kind else "")}" '
            f'data-status="{html.escape(r.status)}"><h2>{html.escape(r.name)} <small>· {html.escape(title)}</small></h2>')
    if not r.complete:
        body = (f'<p class="unfinished">UNFINISHED — run.json status is <b>{html.escape(r.status)}</b>. Its partial results '
                "are not drawn; rerun the command below to resume it, then rebuild the report.</p>")
    else:
        assert r.kind is not None and r.ds is not None
        body = f'<p class="headline">{html.escape(_headline(r))}</p>'
        builder = _SECTIONS.get(r.kind.name)
        if builder is not None:
            try:
                body += builder(page, r.ds)
            except (RlscapeError, KeyError, ValueError) as exc:  # an odd variant of a known kind: fall back to its PNGs
                log.warning("%s: interactive figures failed (%s); embedding its static figures", r.path, exc)
                body += _static_figures(r)
        else:
            body += _static_figures(r)
    return head + body + _provenance(r) + "</section>"


# -- the page --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1150px;padding:1em 2em;color:#222}
h1{margin-bottom:.2em} h2 small{font-weight:normal;color:#666} nav ol{columns:2}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
table.summary td:last-child{max-width:28em} .prov th{background:#f4f4f4;white-space:nowrap}
section.run{border-top:2px solid #444;margin-top:2.2em;padding-top:.4em}
.headline{font-size:1.05em;background:#eef5ff;padding:.4em .7em;border-left:4px solid #3a78c2}
.unfinished{background:#fff0e0;border-left:4px solid #d87a00;padding:.5em .8em}
.warn{background:#fff6d6;padding:.4em .7em} figure{margin:.8em 0} img.static{max-width:100%;border:1px solid #eee}
figcaption{color:#666;font-size:.85em} code.command{background:#f4f4f4;padding:2px 4px;word-break:break-all}
.slider{background:#f6f6f6;padding:.5em .8em;border-radius:4px} .slider input{width:60%;vertical-align:middle}
pre{background:#f8f8f8;padding:.6em;overflow:auto;max-height:24em}
"""

_JS = """
(function(){
  // Plots are drawn when they come near the viewport and 3-D ones are purged when far from it:
  // the page opens fast with many runs, and stays under the browser's limit of live WebGL contexts.
  var figs=Array.from(document.querySelectorAll('div.plot')), overrides={};
  function draw(div){
    if(div.dataset.drawn==='1'||div.dataset.drawing==='1') return;
    div.dataset.drawing='1';
    try{
      var f=JSON.parse(document.getElementById(div.id+'-json').textContent), o=overrides[div.id];
      if(o){f.data[0][o.key]=o.value;}
      Plotly.newPlot(div,f.data,f.layout,{responsive:true,displaylogo:false}).then(function(){
        div.dataset.drawing='0'; div.dataset.drawn='1';
        document.body.setAttribute('data-drawn',String(document.querySelectorAll('div.plot[data-drawn="1"]').length));
      },function(e){div.dataset.drawing='0'; console.error(div.id+': '+e);});
    }catch(e){div.dataset.drawing='0'; console.error(div.id+': '+e);}
  }
  function purge(div){
    if(div.dataset.drawn!=='1'||!div.data||!div.data.some(function(t){return t.type==='surface';})) return;
    Plotly.purge(div); div.dataset.drawn='0';
  }
  if('IntersectionObserver' in window){
    var near=new IntersectionObserver(function(es){es.forEach(function(e){if(e.isIntersecting) draw(e.target);});},{rootMargin:'400px 0px'});
    var far=new IntersectionObserver(function(es){es.forEach(function(e){if(!e.isIntersecting) purge(e.target);});},{rootMargin:'2500px 0px'});
    figs.forEach(function(d){near.observe(d); far.observe(d);});
  } else { figs.forEach(draw); }
  document.querySelectorAll('input.step-slider').forEach(function(inp){
    var s=JSON.parse(document.getElementById(inp.id+'-json').textContent);
    inp.addEventListener('input',function(){
      var i=parseInt(inp.value,10), upd={}; upd[s.key]=[s.frames[i]];
      document.getElementById(inp.id+'-label').textContent=s.steps[i];
      s.targets.forEach(function(t){
        overrides[t]={key:s.key,value:s.frames[i]};
        var div=document.getElementById(t); if(div.dataset.drawn==='1') Plotly.restyle(div,upd,[0]);
      });
    });
  });
  document.body.setAttribute('data-plots',String(figs.length));
  document.body.setAttribute('data-ready','1');
})();
"""


def build_report(paths: Sequence[str | Path], title: str = "rlscape report") -> str:
    """The HTML text of a report over every run at or beneath ``paths`` (see the module docstring).

    Raises
    ------
    RlscapeError
        No run found, a run of an unknown kind or of a newer schema version.
    """
    from plotly.offline import get_plotlyjs

    t0 = time.perf_counter()
    dirs = find_runs(paths)
    roots = [Path(p).resolve() for p in paths]

    def name(d: Path) -> str:
        rd = d.resolve()
        for root in roots:
            if rd == root or root in rd.parents:
                rel = rd.relative_to(root.parent if rd == root else root)
                return str(rel)
        return str(d)

    runs = [_read_run(d, name(d)) for d in dirs]
    page = _Page()
    sections, toc, rows = [], [], []
    for i, r in enumerate(runs, 1):
        anchor = f"run-{i}"
        log.debug("report: %s (%s, %s)", r.path, r.kind.name if r.kind else "?", r.status)
        sections.append(_section(page, r, anchor))
        kind = r.kind.title if r.kind else "?"
        flag = "" if r.complete else ' class="unfinished-row"'
        toc.append(f'<li><a href="#{anchor}">{html.escape(r.name)}</a> — {html.escape(kind)}'
                   f'{"" if r.complete else " (UNFINISHED)"}</li>')
        rows.append(f"<tr{flag}><td><a href=\"#{anchor}\">{html.escape(r.name)}</a></td><td>{html.escape(kind)}</td>"
                    f"<td>{html.escape(_env(r))}</td><td>{html.escape(_algo(r))}</td><td>{html.escape(_checkpoints(r))}</td>"
                    f"<td>{html.escape(r.status)}</td><td>{html.escape(_headline(r))}</td></tr>")
    from rlscape import __version__

    made = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_CSS}</style>
<script>{get_plotlyjs()}</script></head>
<body data-ready="0" data-drawn="0"><h1>{html.escape(title)}</h1>
<p>{len(runs)} run(s) from {html.escape(', '.join(map(str, paths)))} · rlscape {html.escape(__version__)} · made {made}.
Self-contained: opens offline; every figure is interactive except the embedded PNGs.</p>
<h2 id="contents">Contents</h2><nav><ol>{''.join(toc)}</ol></nav>
<h2 id="summary">Summary</h2>
<table class="summary"><tr><th>run</th><th>kind</th><th>env</th><th>algorithm</th><th>checkpoint(s)</th><th>status</th><th>headline</th></tr>
{''.join(rows)}</table>
{''.join(sections)}
<script>{_JS}</script></body></html>
"""
    log.info("report of %d run(s) built in %.1f s", len(runs), time.perf_counter() - t0)
    return doc


def write_report(paths: Sequence[str | Path], out: str | Path, title: str = "rlscape report") -> Path:
    """Write :func:`build_report` to ``out`` (atomically); returns ``out``.

    Raises
    ------
    RlscapeError
        As :func:`build_report`, or ``out`` cannot be written.
    """
    text = build_report(paths, title)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        raise RlscapeError(f"cannot write {out} ({exc.strerror or exc}); choose a writable --out") from None
    return out
