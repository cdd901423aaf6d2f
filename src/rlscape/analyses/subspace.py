"""How much of the policy gradient lies in the top Hessian eigenspace (Schneider et al., ICLR 2024).

At a checkpoint: the policy Hessian of J on a fixed batch of direction-stream episodes
(:class:`rlscape.core.pg.PolicyHessian`, the leave-one-out baseline), its ``k_max`` extreme
eigenvectors by Lanczos, and the gradient g on the same batch. For each k the **gradient
fraction** ‖P_k g‖² / ‖g‖² (P_k the projection on the first k eigenvectors) is stored; a random
k-dimensional subspace would hold k/P of it. Over a training run the **subspace overlap** of
consecutive checkpoints, ‖V_aᵀ V_b‖²_F / k (1: the same subspace; k/P: unrelated), is stored too.

"Top" follows Schneider et al.: the top eigenspace of the *loss* −J, i.e. the eigenvectors of J's
Hessian with the most negative eigenvalues (``end="SA"``, the default); ``end="LA"`` takes J's
most positive ones instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import kind_attrs
from rlscape.core.lifecycle import Run, checkpoint_or_run
from rlscape.core.linalg import lanczos
from rlscape.core.pg import FlatPolicy, PolicyHessian, torch_threads
from rlscape.core.trajectories import check_stochastic, collect, stream_seeds

log = logging.getLogger(__name__)

ENDS = ("SA", "LA")


def gradient_fraction(vectors: np.ndarray, g: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """‖V[:, :k]ᵀ g‖² / ‖g‖² for each k; ``vectors`` (P, K) orthonormal columns, ``g`` (P,) → (len(ks),).

    NaN when g = 0. Columns are used in order, so k must not exceed K.
    """
    V, g = np.asarray(vectors, np.float64), np.asarray(g, np.float64)
    gg = float(g @ g)
    coef = V.T @ g  # (K,)
    cum = np.cumsum(coef**2)
    return np.array([cum[int(k) - 1] / gg if gg > 0 else np.nan for k in ks])


def subspace_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """‖Aᵀ B‖²_F / k of two (P, k) orthonormal bases: 1 for the same subspace, ≈ k/P for random ones."""
    A, B = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if A.shape != B.shape:
        raise ValueError(f"bases of different shapes {A.shape} and {B.shape}")
    return float(np.sum((A.T @ B) ** 2) / A.shape[1])


def run_subspace(source: str | Path, out: str | Path, *, ks: Sequence[int] = (1, 10, 50), episodes: int = 100, seed: int = 0,
                 end: str = "SA", which: str = "actor", tol: float = 1e-6, checkpoints: str | None = None,
                 env_id: str | None = None, algo: str | None = None, overwrite: bool = False, progress: bool = True) -> xr.Dataset:
    """Gradient fractions in the top-k Hessian eigenspace of a checkpoint, or of each checkpoint of a run
    (then also the overlap of consecutive eigenspaces). Dims ``k`` (and ``step``), ``rank``."""
    from rlscape.core.policy import load_checkpoint
    from rlscape.core.runs import first_checkpoint

    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise RlscapeError(f"--k must be positive subspace sizes such as 1,10,50, not {ks}")
    if end not in ENDS:
        raise RlscapeError(f"--end must be SA (top eigenspace of the loss −J) or LA (of J), not {end!r}")
    if episodes < 2:
        raise RlscapeError(f"--episodes must be at least 2 (the leave-one-out baseline), not {episodes}")
    many, first_path = first_checkpoint(source, checkpoints)
    first = load_checkpoint(first_path, env_id, algo=algo)
    check_stochastic(first, "the policy Hessian", update_hint=False)
    P = FlatPolicy(first, which).size
    kmax = ks[-1]
    if kmax >= P:
        raise RlscapeError(f"--k must stay below the number of parameters ({P}), not {kmax}")
    spec = {"kind": "subspace", "source": str(Path(source).resolve()), "ks": ks, "episodes": episodes, "seed": seed, "end": end,
            "params": which, "tol": tol, "env_id": env_id, "algo": algo}
    attrs = {**kind_attrs("subspace"), "env_id": first.env.env_id, "algo": first.algo, "source": spec["source"], "episodes": episodes,
             "seed": seed, "end": end, "params": which, "n_parameters": P,
             "fraction": "‖P_k g‖²/‖g‖² with P_k the projection on the first k eigenvectors (random subspace: k/P)"}

    def compute(step: int | None, path: Path, run: Run) -> xr.Dataset:
        agent = first if Path(path) == first_path else load_checkpoint(path, env_id, algo=algo)
        traj = collect(agent, episodes, seed, stream="direction")
        with torch_threads(P):
            op = PolicyHessian(agent, traj, which=which)
            eig = lanczos(op, kmax, end, seed=seed, tol=tol)
            g = op.gradient()
        frac = gradient_fraction(eig.vectors, g, ks)
        log.info("%s: gradient fraction in the top-%d eigenspace %.3g (random: %.2g)",
                 f"step {step}" if step is not None else Path(path).name, kmax, frac[-1], kmax / P)
        return xr.Dataset(
            {"fraction": (("k",), frac, {"long_name": "‖P_k g‖² / ‖g‖²"}),
             "random_fraction": (("k",), np.asarray(ks, np.float64) / P, {"long_name": "k/P (a random subspace)"}),
             "eigenvalues": (("rank",), eig.values, {"long_name": f"eigenvalues of the policy Hessian ({end})"}),
             "residuals": (("rank",), eig.residuals),
             "eigenvectors": (("parameter", "rank"), eig.vectors.astype(np.float32)),
             "grad_norm": ((), float(np.linalg.norm(g)))},
            coords={"k": np.asarray(ks, np.int64), "rank": np.arange(1, kmax + 1)}, attrs=attrs)

    def combine(done: list[tuple[int, xr.Dataset]]) -> xr.Dataset:
        ds = xr.concat([d for _, d in done], dim="step").assign_coords(step=np.asarray([s for s, _ in done], np.int64))
        vecs = ds["eigenvectors"].values  # (step, P, kmax)
        overlap = np.full((len(done), len(ks)), np.nan)
        for i in range(1, len(done)):
            for j, k in enumerate(ks):
                overlap[i, j] = subspace_overlap(vecs[i - 1][:, :k], vecs[i][:, :k])
        ds["overlap"] = (("step", "k"), overlap, {"long_name": "‖V_prevᵀ V‖²_F / k with the previous checkpoint (random: k/P)"})
        ds.attrs.update(attrs, over_training=1)
        return ds

    record = {"seeds": {"direction_episodes": stream_seeds(seed, "direction"), "lanczos_v0": f"default_rng({seed}): N(0, I)"}}
    return checkpoint_or_run(source, out, spec, compute, checkpoints=checkpoints, overwrite=overwrite, progress=progress,
                             record=record, combine=combine)
