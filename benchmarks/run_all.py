"""Run every benchmark with its small defaults and write ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/run_all.py        (or: make bench)
    .venv/bin/python benchmarks/run_all.py --update Pong Scaling   (rerun those; replace their rows and sections)

Each benchmark runs in its own process, one after the other (they must not share the cores); its
full output goes into RESULTS.md under the table of headline figures (each benchmark's last line).
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    ("1. CartPole plane vs reference design", ["classic_vs_reference.py", "--env", "CartPole-v1"]),
    ("2a. Pendulum plane vs reference design", ["classic_vs_reference.py", "--env", "Pendulum-v1"]),
    ("2b. Acrobot plane vs reference design", ["classic_vs_reference.py", "--env", "Acrobot-v1"]),
    ("3. Hopper plane vs raw stepping", ["mujoco_vs_raw.py", "--env", "Hopper-v5"]),
    ("4. Pong plane vs raw ALE stepping", ["atari_pong.py"]),
    ("5. Common random numbers", ["crn.py"]),
    ("6. Scaling", ["scaling.py"]),
    ("Memory bound", ["memory.py"]),
    ("7. CartPole plane, whole command vs raw native stepping", ["forward_limit.py"]),
    ("8a. Adaptive vs fixed episode budgets, CartPole", ["adaptive_budgets.py", "--env", "CartPole-v1"]),
    ("8b. Adaptive vs fixed episode budgets, Pendulum", ["adaptive_budgets.py", "--env", "Pendulum-v1"]),
    ("9. HalfCheetah plane vs raw stepping (+ GIF workload projection)", ["mujoco_vs_raw.py", "--env", "HalfCheetah-v5", "--project"]),
    ("Dask executor vs local processes", ["dask_overhead.py"]),
    ("Native classic-control envs vs Gymnasium", ["native_envs.py"]),
    ("Policy-Hessian-vector products vs a per-episode loop", ["hvp_throughput.py", "benchmarks/.cache/CartPole-v1-early", "--episodes", "50"]),
    ("Closed-form gradient/Hessian accuracy", ["closed_form_accuracy.py"]),
    ("Linear regions: exact counting vs dense sampling", ["regions.py"]),
    ("PURD: TD3 Hopper updates + evaluation vs raw stepping", ["purd_hopper.py"]),
    ("Gradient quality: collecting state-action pairs vs raw stepping", ["grad_quality.py"]),  # the 10⁶ pairs
]


def main() -> None:
    update = "--update" in sys.argv
    only = [a for a in sys.argv[1:] if a != "--update"]
    rows, logs = [], []
    for title, cmd in BENCHMARKS:
        if only and not any(o in title for o in only):
            continue
        if not (HERE / cmd[0]).is_file():
            rows.append((title, "not present", ""))
            continue
        print(f"== {title}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        out = proc.stdout.strip()
        print(out, flush=True)
        last = out.splitlines()[-1] if out else ""
        figure = last.split(": ", 1)[1] if last.startswith("RESULT ") else last
        if proc.returncode:
            figure = f"failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}"
        rows.append((title, figure, f"{wall:.0f} s"))
        logs.append(f"### {title}\n\n`python benchmarks/{' '.join(cmd)}` ({wall:.0f} s)\n\n```\n{out}\n```\n")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (benchmarks/run_all.py) on {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{platform.processor() or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, Python {platform.python_version()}.",
        "Each benchmark runs its baseline and rlscape on the same work in the same session.",
        "",
        "| benchmark | result (target) | wall |",
        "|---|---|---|",
        *[f"| {t} | {f} | {w} |" for t, f, w in rows],
        "",
        *logs,
    ]
    if update and (HERE / "RESULTS.md").is_file():
        _update(HERE / "RESULTS.md", rows, logs)
        return
    if only:  # a partial run does not replace the full table
        print("\n".join(lines[:8 + len(rows)]))
        return
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    print(f"wrote {HERE / 'RESULTS.md'}")


def _update(path: Path, rows: list[tuple[str, str, str]], logs: list[str]) -> None:
    """Replace the rows and sections of the benchmarks rerun, keep the others."""
    text = path.read_text()
    for (title, figure, wall), log_text in zip(rows, logs, strict=False):
        lines = text.split("\n")
        lines = [f"| {title} | {figure} | {wall} (rerun {time.strftime('%H:%M')}) |" if ln.startswith(f"| {title} |") else ln
                 for ln in lines]
        text = "\n".join(lines)
        start = text.find(f"### {title}\n")
        if start >= 0:
            end = text.find("\n### ", start + 1)
            text = text[:start] + log_text + ("" if end < 0 else text[end:])
    path.write_text(text)
    print(f"updated {path}")


if __name__ == "__main__":
    main()
