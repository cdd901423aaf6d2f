"""Reading stored results."""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from rlscape.core.errors import RlscapeError
from rlscape.core.store import RESULTS


def load(run_dir: str | Path) -> xr.Dataset:
    """Open the results of a run directory (or a ``.zarr`` store) as an ``xarray.Dataset``."""
    path = Path(run_dir)
    store = path if path.suffix == ".zarr" else path / RESULTS
    if not store.exists():
        raise RlscapeError(f"{path} holds no results ({RESULTS} is missing); give a run directory written by rlscape")
    return xr.open_zarr(store, consolidated=True).load()
