"""`rlscape report`: one self-contained HTML page over many runs.

A handful of tiny runs (grid 3, 2 episodes) is written once per module through the CLI; the HTML is
checked as text (sections, the data it embeds, no external loads), and a headless Chromium (Debian's
package, driven by Selenium + chromedriver) loads it offline: no console error, no network request,
every plot drawn, the step slider changes the surface, and a screenshot is kept.

Without a browser the browser test FAILS, unless ``RLSCAPE_NO_BROWSER=1`` says no browser is wanted
(then it is skipped, visibly).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from rlscape.core.kinds import kind_attrs
from rlscape.core.store import RunDir
from rlscape.report import build_report, find_runs
from tests import training_runs
from tests.cli.test_cli import run_cli

EV = ["--episodes", "2", "--workers", "1", "--no-plot"]


def _ok(args: list[str]) -> None:
    """Run the CLI as the console script would (run.json records sys.argv as the command)."""
    import sys

    from rlscape.cli import main

    argv, sys.argv = sys.argv, ["/venv/bin/rlscape", *map(str, args)]
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert not exc.code, f"{args}: exit {exc.code}"
    finally:
        sys.argv = argv


@pytest.fixture(scope="module")
def root(cartpole_ppo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/: a plane, a line, planes over training (3 checkpoints), a gradient (generic section), an unfinished plane."""
    run = training_runs.tiny_ppo_run(tmp_path_factory)
    root = tmp_path_factory.mktemp("report") / "runs"
    _ok(["plane", cartpole_ppo, "--out", root / "plane", "--grid", "3", *EV])
    _ok(["line", cartpole_ppo, "--out", root / "line", "--points", "3", *EV])
    _ok(["plane", run, "--out", root / "over" / "planes", "--grid", "3", *EV])
    _ok(["gradient", cartpole_ppo, "--out", root / "gradient", "--episodes", "4", "--batches", "2", "--no-plot"])
    _ok(["line", run, "--out", root / "over" / "lines", "--points", "3", *EV])
    _ok(["curve", run, "--out", root / "over" / "curve", *EV])
    shutil.copytree(root / "plane", root / "unfinished")
    RunDir(root / "unfinished").update_run(status="interrupted")
    return root


@pytest.fixture(scope="module")
def page(root: Path) -> str:
    return build_report([root])


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(text: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Tags()
    p.feed(text)
    return p.tags


def _json_of(text: str, element_id: str) -> dict:
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', text, re.S)
    assert m, element_id
    return json.loads(m.group(1))


def test_finds_runs_but_not_the_sub_runs_of_a_run_over_training(root):
    names = sorted(str(p.relative_to(root)) for p in find_runs([root]))
    assert names == ["gradient", "line", "over/curve", "over/lines", "over/planes", "plane", "unfinished"]
    assert (root / "over" / "planes" / "steps").is_dir()  # the sub-runs exist, and are not listed


def test_one_section_per_run_with_provenance_and_a_summary_row(root, page):
    sections = [(a.get("data-kind"), a.get("data-status")) for t, a in _tags(page) if t == "section"]
    assert sorted(sections) == sorted([("plane", "complete"), ("line", "complete"), ("plane-over-training", "complete"),
                                       ("line-over-training", "complete"), ("curve", "complete"),
                                       ("gradient", "complete"), ("plane", "interrupted")])
    summary = page.split('<table class="summary">')[1].split("</table>")[0]
    assert summary.count("<tr") == 1 + 7 and "CartPole-v1" in summary and "PPO" in summary
    assert "J(θ0) = " in summary and "3 checkpoints" in summary and "‖g‖ = " in summary  # headline(ds) of each
    assert "steps 0, 1024, 2048" in summary
    for what in ("spec.json", "torch", "wall time", "Reproduce: <code", "budget", "seed"):
        assert page.count(what) >= 7, what
    assert "rlscape plane " in page and "--grid 3" in page  # the command that reproduces the plane
    unfinished = page.split('data-status="interrupted"')[1].split("</section>")[0]
    assert "UNFINISHED" in unfinished and 'class="plot"' not in unfinished and "data:image" not in unfinished
    assert "unfinished (interrupted)" in summary
    assert page.count("<li><a href=\"#run-") == 7  # table of contents


def test_the_plane_data_is_embedded_exactly(root, page):
    ds = xr.open_zarr(root / "plane" / "results.zarr")
    section = page.split('data-kind="plane" data-status="complete"')[1].split("</section>")[0]
    fid = re.search(r'class="plot" id="(fig-\d+)"', section).group(1)
    fig = _json_of(page, f"{fid}-json")
    z = np.asarray(fig["data"][0]["z"], float)  # rows follow β
    np.testing.assert_allclose(z, ds.return_mean.transpose("beta", "alpha").values, rtol=1e-12)
    assert fig["data"][0]["type"] == "surface"


def test_planes_over_training_have_a_step_slider_with_every_checkpoint(root, page):
    ds = xr.open_zarr(root / "over" / "planes" / "results.zarr")
    sliders = [_json_of(page, f"{sid}-json") for sid in re.findall(r'class="step-slider" id="(slider-\d+)"', page)]
    s = next(s for s in sliders if s["key"] == "z")
    assert s["steps"] == [0, 1024, 2048] and s["key"] == "z" and len(s["targets"]) == 2
    want = ds.return_mean.transpose("step", "beta", "alpha").values
    np.testing.assert_allclose(np.asarray(s["frames"], float), np.round(want, 6 - 1 - int(np.floor(np.log10(np.abs(want).max())))),
                               rtol=1e-5)
    assert not np.allclose(s["frames"][0], s["frames"][-1])  # the slider has something to show


def test_lines_over_training_have_a_slider_too(root, page):
    ds = xr.open_zarr(root / "over" / "lines" / "results.zarr")
    sliders = [_json_of(page, f"{sid}-json") for sid in re.findall(r'class="step-slider" id="(slider-\d+)"', page)]
    line = next(s for s in sliders if s["key"] == "y")
    assert line["steps"] == [0, 1024, 2048] and len(line["targets"]) == 1
    np.testing.assert_allclose(np.asarray(line["frames"], float), ds.return_mean.transpose("step", "alpha").values, rtol=1e-5)


def test_a_kind_added_later_gets_the_generic_section(root, tmp_path, monkeypatch):
    """A kind registered in KINDS and RENDERERS only (no report code) is reported with its PNG and headline."""
    from rlscape.core.kinds import KINDS, Kind
    from rlscape.plots.render import RENDERERS

    monkeypatch.setitem(KINDS, "toy", Kind("toy", "toy", False, "A toy kind", 1, lambda ds: f"toy headline {int(ds.x.sum())}"))

    def draw(ds, out, opts):  # type: ignore[no-untyped-def]
        import matplotlib.pyplot as plt

        out.mkdir(parents=True, exist_ok=True)
        fig = plt.figure(figsize=(2, 2))
        fig.savefig(out / "toy.png")
        plt.close(fig)
        return [out / "toy.png"]

    monkeypatch.setitem(RENDERERS, "toy", draw)
    rd = RunDir(tmp_path / "toy")
    rd.path.mkdir()
    rd.write_dataset(xr.Dataset({"x": ("i", [1.0, 2.0])}, attrs={"kind": "toy", "schema_version": 1}))
    rd.update_run(status="complete")
    text = build_report([tmp_path])
    section = text.split('data-kind="toy"')[1].split("</section>")[0]
    assert "toy headline 3" in section and "A toy kind" in section and 'src="data:image/png;base64,' in section


def test_generic_section_embeds_the_renderer_png(page):
    section = page.split('data-kind="gradient"')[1].split("</section>")[0]
    assert section.count('src="data:image/png;base64,') >= 1 and "gradient.png" in section


def test_no_external_loads_and_plotly_once(page):
    for tag, attrs in _tags(page):
        for key in ("src", "href", "action", "data", "poster"):
            v = (attrs.get(key) or "").strip().lower()
            assert not v.startswith(("http:", "https:", "//", "ftp:")), (tag, key, v[:80])
        assert tag not in ("link", "iframe", "object", "embed"), tag
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page.split("<script>")[0])  # CSS
    assert len(re.findall(r"plotly\.js v\d", page)) == 1  # the library inlined once


def test_ten_planes_of_31x31_stay_under_20_mb(tmp_path):
    g = np.linspace(-1, 1, 31)
    rng = np.random.default_rng(0)
    for i in range(10):
        j = rng.normal(100, 30, (31, 31))
        ds = xr.Dataset({"return_mean": (("alpha", "beta"), j), "return_sem": (("alpha", "beta"), np.full((31, 31), 1.5))},
                        coords={"alpha": g, "beta": g}, attrs=kind_attrs("plane") | {"env_id": "CartPole-v1", "algo": "ppo"})
        rd = RunDir(tmp_path / f"p{i}")
        rd.path.mkdir()
        rd.write_dataset(ds)
        rd.update_run(status="complete", command="rlscape plane agent --grid 31", versions={"numpy": np.__version__})
    text = build_report([tmp_path])
    size = len(text.encode())
    assert text.count('data-kind="plane"') == 10
    assert size < 20e6, size
    assert size < 5.2e6 + 10 * 0.3e6, size  # plotly.js (~4.8 MB) once, then ≲ 0.3 MB per 31×31 plane


def test_bad_input_is_one_line_and_exit_2(root, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["report", empty, "--out", tmp_path / "r.html"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no rlscape runs" in err
    code, _, err = run_cli(["report", tmp_path / "missing", "--out", tmp_path / "r.html"], capsys)
    assert code == 2 and "does not exist" in err
    for name, attrs in (("unknown", {"kind": "mystery", "schema_version": 1}), ("newer", {"kind": "plane", "schema_version": 99})):
        d = tmp_path / "bad" / name
        d.mkdir(parents=True)
        RunDir(d).write_dataset(xr.Dataset({"x": ("a", [1.0])}, attrs=attrs))
        RunDir(d).update_run(status="complete")
        code, _, err = run_cli(["report", d, "--out", tmp_path / "r.html"], capsys)
        assert code == 2 and err.count("\n") == 1 and str(d) in err, err
        assert ("unknown result kind 'mystery'" in err) if name == "unknown" else ("schema_version 99" in err)
    assert not (tmp_path / "r.html").exists()


def test_cli_writes_the_file(root, tmp_path, capsys):
    code, out, err = run_cli(["report", root / "plane", root / "line", "--out", tmp_path / "sub" / "r.html"], capsys)
    assert code == 0, err
    text = (tmp_path / "sub" / "r.html").read_text()
    assert text.count("<section") == 2 and "report:" in out


# -- the browser ------------------------------------------------------------------------------------

def _chromium() -> tuple[str, str]:
    """Paths of Debian's chromium and chromedriver; fail (or skip when RLSCAPE_NO_BROWSER=1) without them."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        if os.environ.get("RLSCAPE_NO_BROWSER") == "1":
            pytest.skip("RLSCAPE_NO_BROWSER=1: the browser test is not wanted here")
        pytest.fail("the report's browser test needs Debian's chromium and chromium-driver: "
                    "apt-get install -y chromium chromium-driver (or set RLSCAPE_NO_BROWSER=1 to skip it on purpose)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("the browser test needs selenium: pip install -e '.[test]'")
    return browser, driver


def _driver(browser: str, driver: str):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--use-gl=swiftshader",
              "--enable-unsafe-swiftshader", "--window-size=1300,1000", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-default-apps", "--disable-sync"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(driver))


def test_the_report_opens_offline_in_headless_chromium(root, page, tmp_path):
    import time

    browser, driver = _chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    html_file = tmp_path / "report.html"
    html_file.write_text(page, encoding="utf-8")
    d = _driver(browser, driver)
    try:
        t0 = time.perf_counter()
        d.get(html_file.as_uri())
        body = d.find_element(By.TAG_NAME, "body")
        WebDriverWait(d, 60).until(lambda x: body.get_attribute("data-ready") == "1")
        load_s = time.perf_counter() - t0  # until the page is loaded and its scripts ran (plots are drawn on view)
        plots = d.find_elements(By.CSS_SELECTOR, "div.plot")
        assert int(body.get_attribute("data-plots")) == len(plots) >= 8
        for div in plots:  # plots are drawn as they come into view: visit each one
            d.execute_script("arguments[0].scrollIntoView()", div)
            WebDriverWait(d, 30).until(lambda x, div=div: div.get_attribute("data-drawn") == "1"
                                       and x.execute_script("return !!arguments[0].querySelector('.main-svg')", div))
        n_plots = len(plots)
        assert d.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")

        sliders = d.find_elements(By.CSS_SELECTOR, "input.step-slider")
        assert len(sliders) == 2  # planes over training (surface + heatmap), lines over training
        for slider in sliders:
            sid = slider.get_attribute("id")
            spec = json.loads(d.find_element(By.ID, sid + "-json").get_attribute("textContent"))
            get = f"return document.getElementById('{spec['targets'][0]}').data[0]['{spec['key']}']"
            before = d.execute_script(get)
            d.execute_script("arguments[0].scrollIntoView()", slider)
            slider.send_keys(Keys.HOME)  # a real key press on the range input: its `input` event restyles the plots
            WebDriverWait(d, 10).until(lambda x, sid=sid: x.find_element(By.ID, sid + "-label").text == "0")
            after = d.execute_script(get)
            assert before is not None and after is not None and after != before, spec["key"]
            if spec["key"] == "z":  # the surface now shows step 0's numbers
                np.testing.assert_allclose(np.asarray(after, float), np.asarray(spec["frames"][0], float))
                d.execute_script("arguments[0].scrollIntoView()", slider)
                shot_at = d.get_screenshot_as_png()
        (tmp_path / "report.png").write_bytes(shot_at)  # the surface at step 0, after the slider moved
        shot_dir = os.environ.get("RLSCAPE_SCREENSHOT_DIR")
        if shot_dir:  # kept for the record (the test's tmp_path is removed eventually)
            shutil.copy(tmp_path / "report.png", Path(shot_dir) / "report.png")

        errors = [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
        requests = []
        for entry in d.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg["method"] == "Network.requestWillBeSent":
                requests.append(msg["params"]["request"]["url"])
        external = [u for u in requests if not u.startswith(("file:", "data:", "blob:", "about:"))]
        assert not external, external
        print(f"report {len(page.encode()) / 1e6:.2f} MB, {n_plots} plots drawn in {load_s:.2f} s")
    finally:
        d.quit()
