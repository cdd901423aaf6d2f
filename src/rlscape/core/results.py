"""Reading stored results."""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import kind_of
from rlscape.core.store import RESULTS


def load(run_dir: str | Path) -> xr.Dataset:
    """Open the results of a run directory (or a ``.zarr`` store) as an ``xarray.Dataset``.

    Refuses (:class:`RlscapeError`) results of an unknown kind or of a ``schema_version`` newer
    than this rlscape reads (see :mod:`rlscape.core.kinds`); ``xarray.open_zarr`` opens them anyway.
    """
    path = Path(run_dir)
    store = path if path.suffix == ".zarr" else path / RESULTS
    if not store.exists():
        raise RlscapeError(f"{path} holds no results ({RESULTS} is missing); give a run directory written by rlscape")
    ds = xr.open_zarr(store, consolidated=True)
    kind_of(ds)  # before reading any array
    return ds.load()
