"""Post-update CVaR rejection (methods.md §8, seed 002 Algorithm 1): train on, but refuse updates into noisy neighbourhoods.

From a root checkpoint with its full training state, ``proposals`` times: take the algorithm's
next update (:meth:`Updater.step` ``mode="train"``, continuing from the current state: TD3/SAC/DDPG
one gradient step of ``train()`` on the saved buffer, critic and targets included; PPO/A2C/TRPO a
fresh rollout and a whole ``train()``), compute the PURD of the proposed policy (``updates``
independent actor updates from it, as :mod:`rlscape.analyses.purd`), and accept it when its
CVaR_α is not below that of the last accepted policy; otherwise put back networks, targets,
optimizer states (moments and step counts), counters, replay-buffer position and the updater's
seed stream exactly (:meth:`Updater.restore`). ``reject=False`` accepts every proposal (the
baseline). Every proposal's PURD mean / LTP / CVaR is stored, accepted or not.

Every PURD uses the same evaluation seed, so all proposals are evaluated from the same initial
state(s) (common random numbers). Proposal ``k`` updates with seed
``SeedSequence([seed, TRAIN_STREAM, k])`` whether or not earlier proposals were accepted, so the
runs with and without rejection see the same proposal randomness. After every proposal the
updater's state is saved (``state.pt``) with the results (``proposals.npz``): a killed run resumes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from pydantic import model_validator

from rlscape.analyses.purd import (
    PartialResults,
    PurdSpec,
    churn_observations,
    eval_seed,
    evaluate_members,
    greedy_actions,
    open_updater,
    purd_summary,
    sample_updates,
)
from rlscape.core.errors import RlscapeError
from rlscape.core.kinds import kind_attrs
from rlscape.core.lifecycle import Run, open_run
from rlscape.core.policy import Agent
from rlscape.core.spec import CheckpointSpec
from rlscape.core.updater import ON_POLICY, Updater, UpdaterState

log = logging.getLogger(__name__)

TRAIN_STREAM = 0x7A1E  # SeedSequence([seed, TRAIN_STREAM, k]): proposal k's update
_RESULTS, _STATE = "proposals.npz", "state.pt"
STATS = ("mean", "ltp", "cvar")


class CvarTrainSpec(CheckpointSpec):
    """What one Algorithm-1 run asks for (the identity of its run directory)."""

    kind: Literal["cvar-train"] = "cvar-train"
    proposals: int = 40
    alpha: float = 0.1
    reject: bool = True
    updates: int = 1000
    seed: int = 0
    deterministic: bool = True
    episodes_per_update: int = 1
    batch_size: int = 256
    ltp_fraction: float = 0.5
    bins: int = 100
    bootstrap: int = 200

    @model_validator(mode="after")
    def _check(self) -> CvarTrainSpec:
        if self.proposals < 1:
            raise ValueError(f"--proposals must be at least 1, not {self.proposals}")
        if self.updates < 2:
            raise ValueError(f"--updates (PURD samples per proposal) must be at least 2, not {self.updates}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"--alpha must be in (0, 1], not {self.alpha}; e.g. --alpha 0.1")
        if self.episodes_per_update < 1 or self.batch_size < 1 or self.bootstrap < 1:
            raise ValueError("episodes per update, batch size and bootstrap must be at least 1")
        return self


def state_digest(state: UpdaterState) -> str:
    """sha1 of everything :meth:`Updater.restore` puts back (networks, optimizer moments and step
    counts, saved tensors, counters, buffer position, seed stream): equal digests = equal states."""
    h = hashlib.sha1()

    def feed(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            h.update(str(obj.dtype).encode())
            h.update(obj.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                h.update(str(k).encode())
                feed(obj[k])
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                feed(v)
        else:
            h.update(repr(obj).encode())

    feed([state.policy, state.optimizers, state.tensors, state.counters, state.buffer, state.rng])
    return h.hexdigest()


def proposal_seed(seed: int, k: int) -> int:
    """The seed of proposal ``k``'s update."""
    return int(np.random.SeedSequence([int(seed), TRAIN_STREAM, int(k)]).generate_state(1)[0] % (2**31 - 1))


def current_purd(updater: Updater, agent: Agent, spec: CvarTrainSpec, *, churn_obs: torch.Tensor, actions0: np.ndarray,
                 workers: int | None) -> np.ndarray:
    """The PURD of the updater's current policy: ``spec.updates`` independent actor updates from the
    current state (which is left as it was), evaluated as one population → returns (N,)."""
    here = updater.state()
    saved = updater.saved
    updater.saved = here
    try:
        mode = "actor" if updater.algo != "dqn" else "train"
        got = sample_updates(updater, range(spec.updates), seed=spec.seed, mode=mode, batch_size=spec.batch_size,
                             churn_obs=churn_obs, actions0=actions0)
    finally:
        updater.saved = saved
        updater.restore(here)
    theta = updater.parameters()
    thetas = {n: theta[n][None] + d for n, d in got.deltas.items()}
    rets, _ = evaluate_members(agent, thetas, episodes=spec.episodes_per_update, seed=eval_seed(spec.seed),
                               deterministic=spec.deterministic, workers=workers)
    return rets.mean(axis=1)


def cvar_train(spec: CvarTrainSpec, out: str | Path | None = None, *, overwrite: bool = False, workers: int | None = None,
               progress: bool = True) -> xr.Dataset:
    """Algorithm 1 from ``spec.checkpoint``; with ``out``, a resumable run directory.

    Returns a Dataset with dim ``proposal`` (0 = the root policy, then 1..K): ``purd_mean``,
    ``purd_ltp``, ``purd_cvar`` (of the proposed policy), ``accepted``, ``reference_cvar`` (the last
    accepted CVaR it was compared with), ``update_norm`` (‖Δθ‖ of the actor), ``digest_before`` /
    ``digest_after`` (the updater state before the proposal and after the decision: equal when rejected).
    """
    agent, updater, _ = open_updater(PurdSpec(checkpoint=spec.checkpoint, env_id=spec.env_id, vecnormalize=spec.vecnormalize,
                                              algo=spec.algo, deterministic=spec.deterministic))
    with updater:
        if out is None:
            return run_algorithm(None, spec, agent, updater, workers=workers, progress=progress)
        with open_run(out, spec.model_dump(mode="json"), overwrite=overwrite, owned=(_RESULTS, _STATE)) as run:
            ds = run_algorithm(run, spec, agent, updater, workers=workers, progress=progress)
            run.finish(ds)
    return ds


def run_algorithm(run: Run | None, spec: CvarTrainSpec, agent: Agent, updater: Updater, *, workers: int | None = None,
                  progress: bool = True) -> xr.Dataset:
    """The proposal loop inside an open run (``None``: in memory); see :func:`cvar_train`."""
    K = spec.proposals + 1
    res = PartialResults(run.path / _RESULTS if run is not None else None, {
        **{f"purd_{s}": ((K,), np.nan, np.float64) for s in STATS},
        "accepted": ((K,), False, bool), "reference_cvar": ((K,), np.nan, np.float64), "update_norm": ((K,), np.nan, np.float64),
        "digest_before": ((K,), "", "<U40"), "digest_after": ((K,), "", "<U40"),
        "purd": ((K, spec.updates), np.nan, np.float64)})
    state_file = run.path / _STATE if run is not None else None
    resumed: UpdaterState | None = None
    if res.done.any():
        if state_file is None or not state_file.is_file():
            raise RlscapeError(f"{run.path if run else 'the run'} has results but no {_STATE}; rerun with --overwrite")
        resumed = torch.load(state_file, weights_only=False)
    if updater.algo in ON_POLICY:  # one rollout of θ for the churn states (not kept)
        updater.step(proposal_seed(spec.seed, 0), mode="actor", batch_size=spec.batch_size, from_saved=True)
        updater.restore(updater.saved)
    if resumed is not None:
        updater.restore(resumed)
    churn_obs = churn_observations(updater, 256, spec.seed)
    actions0 = greedy_actions(updater, churn_obs)
    if run is not None:
        run.record(env=agent.env.describe(), algo=updater.algo, updater=updater.info,
                   seeds={"proposal_k": f"SeedSequence([{spec.seed}, {TRAIN_STREAM:#x}, k])", "evaluation": eval_seed(spec.seed)})

    def summarise(r: np.ndarray, k: int) -> dict[str, float]:
        s = purd_summary(r, alpha=spec.alpha, bins=spec.bins, ltp_fraction=spec.ltp_fraction, n_resamples=spec.bootstrap,
                         seed=spec.seed + k)
        return {st: s[st][0] for st in STATS}

    def save(k: int, **values: Any) -> None:
        if state_file is not None:
            tmp = state_file.with_name("state.tmp.pt")
            torch.save(updater.state(), tmp)
            tmp.replace(state_file)
        res.put(np.array([k]), **values)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=K, initial=int(res.done.sum()), unit="proposal", desc="cvar-train", dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        if not res.done[0]:
            digest = state_digest(updater.state())
            r = current_purd(updater, agent, spec, churn_obs=churn_obs, actions0=actions0, workers=workers)
            s = summarise(r, 0)
            save(0, purd=r, accepted=True, update_norm=0.0, digest_before=digest, digest_after=digest,
                 **{f"purd_{k}": v for k, v in s.items()})
            if bar is not None:
                bar.update(1)
        for k in range(1, K):
            if res.done[k]:
                continue
            accepted_cvar = float(res.data["purd_cvar"][np.flatnonzero(res.data["accepted"][:k])[-1]])
            before = updater.state()
            digest = state_digest(before)
            step = updater.step(proposal_seed(spec.seed, k), mode="train", from_saved=False)
            r = current_purd(updater, agent, spec, churn_obs=churn_obs, actions0=actions0, workers=workers)
            s = summarise(r, k)
            accept = (not spec.reject) or s["cvar"] >= accepted_cvar or not math.isfinite(accepted_cvar)
            if not accept:
                updater.restore(before)
            save(k, purd=r, accepted=accept, reference_cvar=accepted_cvar, update_norm=step.norm, digest_before=digest,
                 digest_after=state_digest(updater.state()), **{f"purd_{st}": v for st, v in s.items()})
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"CVaR {s['cvar']:.4g} {'accepted' if accept else 'rejected'}")
    finally:
        if bar is not None:
            bar.close()
    d = res.data
    ds = xr.Dataset(
        {
            "purd_mean": (("proposal",), d["purd_mean"], {"long_name": "PURD mean of the proposed policy"}),
            "purd_ltp": (("proposal",), d["purd_ltp"], {"long_name": "PURD left-tail probability of the proposed policy"}),
            "purd_cvar": (("proposal",), d["purd_cvar"], {"long_name": f"PURD CVaR_{spec.alpha:g} of the proposed policy"}),
            "accepted": (("proposal",), d["accepted"], {"long_name": "proposal accepted (0 = the root)"}),
            "reference_cvar": (("proposal",), d["reference_cvar"], {"long_name": "CVaR of the last accepted policy"}),
            "update_norm": (("proposal",), d["update_norm"], {"long_name": "‖Δθ‖ of the actor in the proposed update"}),
            "digest_before": (("proposal",), d["digest_before"], {"long_name": "sha1 of the updater state before the proposal"}),
            "digest_after": (("proposal",), d["digest_after"], {"long_name": "sha1 of the updater state after the decision"}),
            "purd": (("proposal", "update"), d["purd"], {"long_name": "post-update returns of the proposed policy"}),
        },
        coords={"proposal": np.arange(K), "update": np.arange(spec.updates)},
    )
    ds.attrs.update({**kind_attrs("cvar-train"), "env_id": agent.env.env_id, "algo": updater.algo, "checkpoint": spec.checkpoint,
                     "reject": int(spec.reject), "cvar_alpha": spec.alpha, "updates": spec.updates, "seed": spec.seed,
                     "deterministic": int(spec.deterministic), "episodes_per_update": spec.episodes_per_update,
                     "n_accepted": int(d["accepted"][1:].sum()), "wall_time_s": round(time.perf_counter() - t0, 3)})
    return ds
