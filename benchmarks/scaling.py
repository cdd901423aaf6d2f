"""Benchmark 6: scaling — wall time of a plane as points × episodes grow.

Each size is a complete ``rlscape.plane(...)`` into a run directory (worker start-up, directions,
evaluation, chunk files, results.zarr) on the trained CartPole agent, in one Python session whose
imports are already paid. A least-squares line ``wall = overhead + steps / rate`` is fitted; cost
must grow linearly (the table shows the fit) with a fixed overhead under 2 s. The one-time cost of
a fresh ``rlscape plane`` process (interpreter, torch and SB3 imports, loading the model) is
reported separately: it is paid once per command, whatever the size.

    .venv/bin/python benchmarks/scaling.py [--sizes 1x1,3x4,7x8,11x16,21x20,31x40]

Last line: the fitted fixed overhead.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import agent, result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1x1,3x4,7x8,11x16,21x20,31x40", help="GRIDxEPISODES,…")
    args = parser.parse_args()
    ckpt = agent("CartPole-v1")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rlscape.cli", "plane", str(ckpt), "--out", f"{tmp}/cli", "--grid", "1",
                        "--episodes", "1", "--no-plot"], check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        t_cli = time.perf_counter() - t0
    import rlscape

    ag = rlscape.load_checkpoint(ckpt)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rlscape.plane(ag, grid=1, episodes=1, out=Path(tmp) / "warm-up", progress=False)  # one-time lazy imports
        t_first = time.perf_counter() - t0
        for i, size in enumerate(args.sizes.split(",")):
            g, e = (int(x) for x in size.split("x"))
            out = Path(tmp) / f"p{i}"
            t0 = time.perf_counter()
            rlscape.plane(ag, grid=g, episodes=e, out=out, progress=False)
            wall = time.perf_counter() - t0
            steps = json.loads((out / "run.json").read_text())["env_steps_this_session"]
            rows.append((g, e, g * g * e, steps, wall))
    steps = np.array([r[3] for r in rows], float)
    wall = np.array([r[4] for r in rows])
    slope, overhead = np.polyfit(steps, wall, 1)
    print("| grid | episodes | points × episodes | env steps | wall s | fit s | env-steps/s |")
    print("|---|---|---|---|---|---|---|")
    for (g, e, pe, st, w) in rows:
        print(f"| {g}×{g} | {e} | {pe:,} | {st:,} | {w:.2f} | {overhead + slope * st:.2f} | {st / w:,.0f} |")
    print(f"fit: wall = {overhead:.2f} s + steps / {1 / slope:,.0f} steps/s")
    print(f"one-time costs, not in the fit: a fresh `rlscape plane` process for a 1×1 plane (interpreter, imports, "
          f"model load, run dir) {t_cli:.2f} s; the first plane of a session (lazy imports of xarray/zarr) {t_first:.2f} s")
    result("fixed overhead of a plane (fitted)", f"{overhead:.2f} s", "< 2 s, linear growth")


if __name__ == "__main__":
    main()
