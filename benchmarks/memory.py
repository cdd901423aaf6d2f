"""Memory: a 31×31 CartPole plane with 200 episodes per point must stay under 2 GB at peak.

Runs ``rlscape plane`` and samples the proportional set size (PSS: shared pages counted once) of
the command and all its worker processes every 0.2 s; reports the peak of the sum.

    .venv/bin/python benchmarks/memory.py [--grid 31] [--episodes 200]

Last line: the peak.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import agent, result  # noqa: E402


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=31)
    parser.add_argument("--episodes", type=int, default=200)
    args = parser.parse_args()
    ckpt = agent("CartPole-v1")
    peak = 0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "rlscape.cli", "plane", str(ckpt), "--out", f"{tmp}/plane", "--grid",
                                 str(args.grid), "--episodes", str(args.episodes), "--no-plot"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            peak = max(peak, sum(_pss_kb(p) for p in _tree(proc.pid)))
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"rlscape plane failed with exit code {proc.returncode}")
    print(f"{args.grid}×{args.grid} CartPole plane × {args.episodes} episodes: {wall:.0f} s, "
          f"peak memory (PSS, command + workers) {peak / 1024**2:.2f} GB")
    result(f"peak memory, {args.grid}×{args.grid}×{args.episodes} CartPole plane", f"{peak / 1024**2:.2f} GB", "< 2 GB")


if __name__ == "__main__":
    main()
