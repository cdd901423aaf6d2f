"""The registry of result kinds: what a stored ``results.zarr`` is, and how to summarise it in a line.

Every results dataset carries two attributes, set where its analysis builds it (:func:`kind_attrs`):

* ``kind`` — ``plane``, ``line``, ``curve``, ``gradient``, ``hessian``, ``stepsize``,
  ``stepsize-over-training``, ``cliffs`` or ``cliff-dive``. A plane, line, gradient or Hessian of a
  whole training run keeps the kind of one checkpoint and gains a leading ``step`` dim; the
  registry tells the two forms apart (``plane-over-training`` etc.; a dataset may also carry such a
  registry name as its ``kind``).
* ``schema_version`` — the layout version of that kind. Runs written before versions existed have
  none and read as version 1. A version newer than this rlscape knows is refused.

Layering: this module is core (xarray only). It names each kind, its title and its one-line
headline; :mod:`rlscape.plots.render` maps the same names to renderers (figures), and a report
walks :data:`KINDS` in order. Adding a kind = one :class:`Kind` here + one renderer there (a test
checks that every kind has one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from rlscape.core.errors import RlscapeError

__all__ = ["Kind", "KINDS", "kind_of", "kind_attrs", "headline"]


@dataclass(frozen=True)
class Kind:
    """One result kind.

    ``name`` is the registry key; ``attr`` the stored ``attrs["kind"]``; ``over_training`` whether
    the dataset has a leading ``step`` dim (decides between kinds sharing one ``attr``).
    """

    name: str
    attr: str
    over_training: bool
    title: str
    schema_version: int
    headline: Callable[[xr.Dataset], str]


def _num(x: Any) -> str:
    v = float(x)
    return f"{v:.4g}" if math.isfinite(v) else "NaN"


def _at_origin(da: xr.DataArray) -> xr.DataArray:
    """The value at offset 0 on every offset dim (nearest grid point)."""
    for dim in ("alpha", "beta"):
        if dim in da.dims:
            da = da.sel({dim: 0.0}, method="nearest")
    return da


def _centre(ds: xr.Dataset) -> str:
    j = _at_origin(ds["return_mean"])
    sem = f" ± {_num(_at_origin(ds['return_sem']))}" if "return_sem" in ds else ""
    lo, hi = np.nanmin(ds["return_mean"].values), np.nanmax(ds["return_mean"].values)
    return f"J(θ0) = {_num(j)}{sem} (SEM); range [{_num(lo)}, {_num(hi)}] over {ds['return_mean'].size} points"


def _over_training_centre(ds: xr.Dataset) -> str:
    j = _at_origin(ds["return_mean"]).values
    steps = ds["step"].values
    return (f"{steps.size} checkpoints; J(θ) at the centre {_num(j[0])} (step {int(steps[0])}) → "
            f"{_num(j[-1])} (step {int(steps[-1])})")


def _curve(ds: xr.Dataset) -> str:
    j, steps = ds["return_mean"].values, ds["step"].values
    sem = f" ± {_num(ds['return_sem'].values[-1])}" if "return_sem" in ds else ""
    best = int(np.nanargmax(j)) if np.isfinite(j).any() else 0
    return (f"{steps.size} checkpoints; final J = {_num(j[-1])}{sem} (SEM) at step {int(steps[-1])}; "
            f"best {_num(j[best])} at step {int(steps[best])}")


def _gradient(ds: xr.Dataset) -> str:
    return f"‖g‖ = {_num(ds['grad_norm'])} ± {_num(ds['grad_stderr'])} (standard error), {ds.attrs.get('estimator', '')}".rstrip(", ")


def _gradient_over_training(ds: xr.Dataset) -> str:
    g, steps = ds["grad_norm"].values, ds["step"].values
    return f"{steps.size} checkpoints; ‖g‖ {_num(g[0])} (step {int(steps[0])}) → {_num(g[-1])} (step {int(steps[-1])})"


def _hessian(ds: xr.Dataset) -> str:
    return (f"λ_max = {_num(ds['lambda_max'])}, λ_min = {_num(ds['lambda_min'])}, "
            f"−λ_max/λ_min = {_num(ds['curvature_ratio'])}")


def _hessian_over_training(ds: xr.Dataset) -> str:
    last = ds.isel(step=-1)
    return f"{ds.sizes['step']} checkpoints; at step {int(last['step'])}: {_hessian(last)}"


def _stepsize(ds: xr.Dataset) -> str:
    a = ds.attrs
    return f"α* = {_num(a['alpha_star'])} ({a['status']}); J(θ) = {_num(a['j0'])}, threshold {_num(a['threshold'])}"


def _stepsize_over_training(ds: xr.Dataset) -> str:
    alpha, status = ds["alpha_star"].values, np.asarray(ds["status"].values).astype(str)
    found = alpha[status == "found"]
    span = f"α* from {_num(found.min())} to {_num(found.max())}" if found.size else "no α* found"
    return f"{alpha.size} checkpoints; {span} ({found.size} found)"


def _population(ds: xr.Dataset) -> str:
    j = ds["return_mean"].values
    return (f"{j.size} members: mean return {_num(np.nanmean(j))}, range [{_num(np.nanmin(j))}, {_num(np.nanmax(j))}]"
            if np.isfinite(j).any() else f"{j.size} members, none evaluated")


def _regions(ds: xr.Dataset) -> str:
    d = np.atleast_1d(ds["current_density_pooled"].values)
    where = f" (step {int(ds['step'].values[0])} → {int(ds['step'].values[-1])})" if "step" in ds.dims else ""
    return (f"{_num(d[0])}{'' if d.size == 1 else f' → {_num(d[-1])}'} transitions per unit length along the policy's "
            f"own trajectories{where}; {ds.attrs.get('n_neurons', '?')} neurons")


def _regions_plane(ds: xr.Dataset) -> str:
    return f"{ds.attrs.get('n_regions', '?')} linear regions in the plane ({ds.attrs.get('mode', '')})"


def _subspace(ds: xr.Dataset) -> str:
    f = ds["fraction"].values
    k = int(ds["k"].values[-1])
    last = f[-1, -1] if f.ndim == 2 else f[-1]
    where = f" at step {int(ds['step'].values[-1])}" if "step" in ds.dims else ""
    return (f"{_num(last)} of ‖g‖² in the top-{k} Hessian eigenspace{where} "
            f"(a random subspace: {_num(float(ds['random_fraction'].values.ravel()[-1]))})")


def _cliffs(ds: xr.Dataset) -> str:
    return f"{int(ds['cliff'].sum())} of {ds.sizes['step']} checkpoints are cliffs"


def _cliff_dive(ds: xr.Dataset) -> str:
    parts = []
    for a in ds["algo"].values:
        row = ds.sel(algo=a)
        parts.append(f"{str(a).upper()}: change {_num(row.mean_change_cliff)} at cliffs vs {_num(row.mean_change_noncliff)} "
                     f"elsewhere (Welch p = {_num(row.welch_p)})")
    return "; ".join(parts)


def _purd(ds: xr.Dataset) -> str:
    return (f"post-update mean {_num(ds['mean'])} (before {_num(ds['pre_return'])}), LTP {_num(ds['ltp'])}, "
            f"CVaR {_num(ds['cvar'])} over {ds.sizes['update']} updates")


def _purd_over_training(ds: xr.Dataset) -> str:
    return f"{ds.sizes['step']} checkpoints; at step {int(ds['step'][-1])}: {_purd(ds.isel(step=-1))}"


def _interpolation(ds: xr.Dataset) -> str:
    m = ds["mean"].values
    return (f"mean {_num(m[0])} (A) → {_num(m[-1])} (B), lowest {_num(np.nanmin(m))}; "
            f"{ds.sizes['alpha']} points × {ds.sizes['sample']} perturbations (σ = {_num(ds.attrs.get('sigma', float('nan')))})")


def _cvar_train(ds: xr.Dataset) -> str:
    kept = ds["purd_cvar"].values[ds["accepted"].values.astype(bool)]
    return (f"{'CVaR rejection' if ds.attrs.get('reject') else 'no rejection'}: accepted {int(ds.attrs.get('n_accepted', 0))} of "
            f"{ds.sizes['proposal'] - 1}; PURD CVaR {_num(kept[0])} → {_num(kept[-1])}")


def _grad_quality(ds: xr.Dataset) -> str:
    n = ds["samples"].values
    if "step" in ds.dims:
        first, last = ds.isel(step=0), ds.isel(step=-1)
        return (f"{ds.sizes['step']} checkpoints; cosine to the true gradient at N = {int(n[0])}: "
                f"{_num(first['true_cosine_mean'].values[0])} (step {int(first['step'])}) → "
                f"{_num(last['true_cosine_mean'].values[0])} (step {int(last['step'])})")
    pw, tc = ds["pairwise_cosine_mean"].values, ds["true_cosine_mean"].values
    return (f"mean pairwise cosine {_num(pw[0])} (N = {int(n[0])}) → {_num(pw[-1])} (N = {int(n[-1])}); "
            f"cosine to truth {_num(tc[0])} → {_num(tc[-1])}")


def _value_error(ds: xr.Dataset) -> str:
    m = np.atleast_1d(ds["mre"].values)
    where = f" (step {int(ds['step'].values[0])} → {int(ds['step'].values[-1])})" if "step" in ds.dims else ""
    return f"critic MRE against MC returns {_num(m[0])}{'' if m.size == 1 else f' → {_num(m[-1])}'}{where}"


def _surrogate(ds: xr.Dataset) -> str:
    n = ds["samples"].values
    s0 = ds["surrogate"].isel(beta=0)
    j0 = ds["return_mean"].isel(beta=0)
    return (f"{str(ds.attrs.get('algo', '')).upper()} step ‖Δθ‖ = {_num(ds.attrs.get('step_norm', float('nan')))}; along the step "
            f"(N = {int(n[-1])}): surrogate {_num(s0.values[-1, 0])} → {_num(s0.values[-1, -1])}, "
            f"return {_num(j0.values[-1, 0])} → {_num(j0.values[-1, -1])}")


#: Every kind this rlscape reads, in the order a report lists them.
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("plane", "plane", False, "Return on a plane around a checkpoint", 1, _centre),
    Kind("line", "line", False, "Return along a line", 1, _centre),
    Kind("curve", "curve", True, "Training curve", 1, _curve),
    Kind("plane-over-training", "plane", True, "Planes over training", 1, _over_training_centre),
    Kind("line-over-training", "line", True, "Lines over training", 1, _over_training_centre),
    Kind("gradient", "gradient", False, "Policy gradient", 1, _gradient),
    Kind("gradient-over-training", "gradient", True, "Policy gradient over training", 1, _gradient_over_training),
    Kind("hessian", "hessian", False, "Policy-Hessian curvature", 1, _hessian),
    Kind("hessian-over-training", "hessian", True, "Curvature over training", 1, _hessian_over_training),
    Kind("stepsize", "stepsize", False, "Step-size search", 1, _stepsize),
    Kind("stepsize-over-training", "stepsize-over-training", True, "Step size over training", 1, _stepsize_over_training),
    Kind("cliffs", "cliffs", True, "Cliff labels", 1, _cliffs),
    Kind("regions", "regions", False, "Linear regions along segments", 1, _regions),
    Kind("regions-over-training", "regions", True, "Linear regions over training", 1, _regions),
    Kind("regions-plane", "regions-plane", False, "Linear regions of a 2-D plane of states", 1, _regions_plane),
    Kind("subspace", "subspace", False, "Gradient in the top Hessian eigenspace", 1, _subspace),
    Kind("subspace-over-training", "subspace", True, "Gradient in the top Hessian eigenspace over training", 1, _subspace),
    Kind("population", "population", False, "Population of parameter vectors", 1, _population),
    Kind("grad-quality", "grad-quality", False, "Gradient-estimate quality vs samples", 1, _grad_quality),
    Kind("grad-quality-over-training", "grad-quality", True, "Gradient-estimate quality over training", 1, _grad_quality),
    Kind("value-error", "value-error", False, "Critic error against Monte-Carlo returns", 1, _value_error),
    Kind("value-error-over-training", "value-error", True, "Critic error over training", 1, _value_error),
    Kind("surrogate", "surrogate", False, "Surrogate vs true return on the update-step plane", 1, _surrogate),
    Kind("cliff-dive", "cliff-dive", True, "Cliff dive: one A2C/PPO update at cliffs and elsewhere", 1, _cliff_dive),
    Kind("purd", "purd", False, "Post-update return distribution", 1, _purd),
    Kind("purd-over-training", "purd", True, "Post-update return distributions over training", 1, _purd_over_training),
    Kind("interpolation", "interpolation", False, "Return distributions between two policies", 1, _interpolation),
    Kind("cvar-train", "cvar-train", False, "Post-update CVaR rejection (Algorithm 1)", 1, _cvar_train),
)}


def kind_attrs(attr: str) -> dict[str, Any]:
    """``{"kind": attr, "schema_version": n}`` for a dataset being written (n: this rlscape's version of it)."""
    versions = [k.schema_version for k in KINDS.values() if k.attr == attr]
    if not versions:
        raise KeyError(f"no result kind {attr!r} in rlscape.core.kinds.KINDS")
    return {"kind": attr, "schema_version": max(versions)}


def kind_of(ds: xr.Dataset) -> Kind:
    """The registered kind of a results dataset; refuses unknown kinds and newer schema versions.

    Raises
    ------
    RlscapeError
        No or an unknown ``kind`` attribute, or a ``schema_version`` newer than this rlscape reads.
    """
    from rlscape import __version__

    attr = ds.attrs.get("kind")
    if attr is None:
        raise RlscapeError("these results carry no 'kind' attribute; give a run directory written by rlscape")
    candidates = [k for k in KINDS.values() if k.attr == attr] or [k for k in KINDS.values() if k.name == attr]
    if not candidates:
        raise RlscapeError(f"unknown result kind {attr!r}: rlscape {__version__} reads {', '.join(KINDS)}; upgrade rlscape to read it")
    if len(candidates) > 1:
        candidates = [k for k in candidates if k.over_training == ("step" in ds.dims)]
    kind = candidates[0]
    try:
        version = int(ds.attrs.get("schema_version", 1))
    except (TypeError, ValueError):
        raise RlscapeError(f"schema_version {ds.attrs.get('schema_version')!r} of these results is not a number") from None
    if version > kind.schema_version:
        raise RlscapeError(f"these {attr} results have schema_version {version}, newer than the {kind.schema_version} that "
                           f"rlscape {__version__} reads; upgrade rlscape")
    return kind


def headline(ds: xr.Dataset) -> str:
    """One line that sums up a results dataset, e.g. ``λ_max = 3.1, λ_min = −0.2, −λ_max/λ_min = 15``."""
    return kind_of(ds).headline(ds)
