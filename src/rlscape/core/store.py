"""Self-describing, resumable run directories.

Layout of a run directory::

    spec.json          what was asked (the identity of the run; a rerun must match it)
    run.json           status, seeds, package versions, machine, timings, env steps
    directions/        dir1.npz, dir2.npz … keyed by parameter name, with normalisation and scale
    chunks/            one .npz per finished chunk of points (written atomically as chunks complete)
    results.zarr       the xarray Dataset (open with plain ``xarray.open_zarr``); NaN = not yet computed

A killed run (even SIGKILL) loses at most the chunks in flight: rerunning the same command reads
``chunks/``, skips finished points and gives the numbers an uninterrupted run would have given.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from rlscape.core.directions import Direction, load_direction
from rlscape.core.errors import RlscapeError
from rlscape.core.params import NamedArrays

log = logging.getLogger(__name__)

SPEC_FILE, RUN_FILE, RESULTS, CHUNKS, DIRECTIONS = "spec.json", "run.json", "results.zarr", "chunks", "directions"
_OWNED = (SPEC_FILE, RUN_FILE, RESULTS, CHUNKS, DIRECTIONS, "plots")
_CHUNK_FIELDS = ("returns", "lengths", "discounted_returns", "value_sums", "td_sq_sums")


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on, plus Python and the platform."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("rlscape", "torch", "numpy", "gymnasium", "stable-baselines3", "sb3-contrib", "ale-py", "mujoco", "xarray", "zarr"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass
class ChunkData:
    """Per-point, per-episode arrays of finished points, NaN-padded on the episode axis."""

    points: np.ndarray  # (K,) flat point indices
    returns: np.ndarray
    lengths: np.ndarray
    discounted_returns: np.ndarray
    value_sums: np.ndarray
    td_sq_sums: np.ndarray
    first_episode: int = 0  # column j holds episode first_episode + j (adaptive budgets add episodes in rounds)


class RunDir:
    """One run directory; see the module docstring for its layout."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def prepare(cls, out: str | Path, spec: dict[str, Any], overwrite: bool = False, owned: tuple[str, ...] = ()) -> RunDir:
        """Open ``out`` for ``spec``: new, resumable (same spec, unfinished) or refused.

        A finished run is refused unless ``overwrite``; a different spec is refused unless
        ``overwrite`` (or nothing of it was computed yet); ``overwrite`` removes only what rlscape
        wrote there (the standard names plus ``owned``). Use it through
        :func:`rlscape.core.lifecycle.open_run`, which also holds the lock and keeps the status.
        """
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise RlscapeError(f"--out {path} is a file; give a folder path")
        run = cls(path)
        spec = json.loads(json.dumps(spec))  # the form it has once stored (tuples → lists)
        names = _OWNED + tuple(owned)
        old = run.read_spec()
        if old is not None and not overwrite and old != spec and run.status() != "complete" and not run.has_results(names):
            log.info("%s holds an unstarted run of another spec; replacing it (nothing was computed)", path)
        elif old is not None and not overwrite:
            if old != spec:
                a, b = _flatten(old), _flatten(spec)
                changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                raise RlscapeError(
                    f"{path} holds a different run (differs in: {', '.join(changed)}); "
                    "choose another --out, or pass --overwrite to replace it"
                )
            if run.status() == "complete":
                raise RlscapeError(f"{path} already holds this finished run; pass --overwrite to recompute it or choose another --out")
            log.info("resuming the run in %s", path)
        if overwrite or (old is not None and old != spec):
            for name in names:
                p = path / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".rlscape-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise RlscapeError(f"cannot write to {path} ({exc.strerror or exc}); choose a writable --out") from None
        atomic_write_text(path / SPEC_FILE, json.dumps(spec, indent=2, sort_keys=True))
        return run

    def read_spec(self) -> dict[str, Any] | None:
        f = self.path / SPEC_FILE
        if not f.is_file():
            return None
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError:
            raise RlscapeError(f"{f} is corrupt; pass --overwrite to start this run again") from None

    def read_run(self) -> dict[str, Any]:
        f = self.path / RUN_FILE
        return json.loads(f.read_text()) if f.is_file() else {}

    def status(self) -> str:
        return str(self.read_run().get("status", "new"))

    def update_run(self, **fields: Any) -> None:
        info = self.read_run()
        info.update(fields)
        atomic_write_text(self.path / RUN_FILE, json.dumps(info, indent=2, sort_keys=True, default=str))

    # -- chunks -----------------------------------------------------------------------------------
    def save_direction(self, name: str, direction: Direction, theta0: NamedArrays, replace: bool = False) -> None:
        """Store ``directions/<name>.npz``; refuse if the run already holds a different one (a resume
        must continue with the directions its finished chunks were computed with) unless ``replace``
        (the direction is the run's result, recomputed in full)."""
        path = self.path / DIRECTIONS / f"{name}.npz"
        path.parent.mkdir(exist_ok=True)
        if path.is_file() and not replace:
            saved = load_direction(path, theta0)
            if any(not np.array_equal(saved.values[n], direction.values[n]) for n in theta0):
                raise RlscapeError(f"{path} differs from the direction this run now makes; pass --overwrite to start again")
        direction.save(path)

    def write_chunk(self, points: np.ndarray, arrays: dict[str, np.ndarray], first_episode: int = 0) -> None:
        """Save one finished chunk atomically (write to a temporary name, then rename)."""
        name = f"points-{int(points[0]):07d}-{len(points):05d}-{time.time_ns()}"
        (self.path / CHUNKS).mkdir(exist_ok=True)
        tmp = self.path / CHUNKS / f"{name}.tmp.npz"
        fields = {"points": np.asarray(points, np.int64), "first_episode": np.int64(first_episode), **{k: arrays[k] for k in _CHUNK_FIELDS}}
        np.savez(tmp, **fields)  # type: ignore[arg-type]  # numpy stubs: **arrays read as allow_pickle
        tmp.replace(self.path / CHUNKS / f"{name}.npz")

    def save_chunk(self, c: ChunkData) -> None:
        """:meth:`write_chunk` of a :class:`ChunkData`."""
        self.write_chunk(c.points, {k: getattr(c, k) for k in _CHUNK_FIELDS}, c.first_episode)

    def has_chunks(self) -> bool:
        """Whether any chunk has finished (without reading them)."""
        return any(not f.name.endswith(".tmp.npz") for f in (self.path / CHUNKS).glob("points-*.npz"))

    def has_results(self, names: tuple[str, ...] = ()) -> bool:
        """Whether anything was computed here: a chunk, results, or a non-empty folder among ``names``."""
        if self.has_chunks() or (self.path / RESULTS).exists():
            return True
        return any((self.path / n).is_dir() and any((self.path / n).iterdir()) for n in names if n not in (SPEC_FILE, RUN_FILE, "plots"))

    def read_chunks(self) -> list[ChunkData]:
        """Every finished chunk (temporary files from a killed run are ignored)."""
        out = []
        for f in sorted((self.path / CHUNKS).glob("points-*.npz")):
            if f.name.endswith(".tmp.npz"):
                continue
            try:
                with np.load(f) as z:
                    first = int(z["first_episode"]) if "first_episode" in z.files else 0
                    out.append(ChunkData(z["points"], **{k: z[k] for k in _CHUNK_FIELDS}, first_episode=first))
            except (OSError, ValueError, KeyError):
                log.warning("ignoring unreadable chunk file %s (it will be recomputed)", f)
        return out

    # -- results ----------------------------------------------------------------------------------
    def write_dataset(self, ds: Any) -> None:
        """Write ``results.zarr`` atomically enough: a complete new store replaces the old one."""
        final = self.path / RESULTS
        tmp = self.path / (RESULTS + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2)
        old = self.path / (RESULTS + ".old")
        if final.exists():
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)


def merge_chunks(chunks: Iterable[ChunkData], n_points: int) -> dict[str, np.ndarray]:
    """Place chunk arrays into ``(n_points, E)`` arrays (E = most episodes any point used)."""
    chunks = list(chunks)
    E = max([c.first_episode + c.returns.shape[1] for c in chunks], default=0)
    out = {k: np.full((n_points, E), np.nan) for k in _CHUNK_FIELDS}
    out["lengths"] = np.zeros((n_points, E), np.int64)
    done = np.zeros(n_points, bool)
    for c in chunks:
        e0, e1 = c.first_episode, c.first_episode + c.returns.shape[1]
        for k in _CHUNK_FIELDS:
            out[k][c.points, e0:e1] = getattr(c, k)
        done[c.points] = True
    out["done"] = done
    return out


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
