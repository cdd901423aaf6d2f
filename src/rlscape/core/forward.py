"""The batched forward pass of K parameter vectors, each on its own observations.

``make_forward(head)`` returns ``forward(params, obs) -> outputs``: ``params`` maps parameter names
(as in ``head.named_parameters()``) to tensors with a leading ``K`` dim (parameters not named keep
the head's own values), ``obs`` is ``(K, E, ...)``; every output has leading dims ``(K, E)``.

Two strategies, both exact per point (point ``k``'s outputs are computed from ``params[·][k]`` and
``obs[k]`` only, so they never depend on which other points share the batch, up to float rounding):

- ``"vmap"``: ``torch.func.vmap`` of a ``functional_call`` — one set of kernels for all points.
  Best for small MLP heads, where per-call overhead dominates and batched matmuls are cheap.
- ``"loop"``: one plain batched forward per point on its ``E`` observations, through a private
  copy of the head whose parameter slots are pointed at point ``k``'s tensors (no copying, and the
  user's module is never touched). Best for CNN heads: vmap turns a convolution with per-point
  weights into a grouped convolution that oneDNN runs slowly on CPU, while a per-point conv uses
  its fast kernels; pointing the slots directly avoids ``functional_call``'s per-call cost (about a
  millisecond for SB3's NatureCNN policy), which would otherwise be paid once per point per step.

The evaluator tries :func:`rlscape.core.fastmlp.fast_mlp_forward` first (SB3's MLP heads as plain
batched matmuls) and uses this module for everything else (CNNs, adapters, gSDE, custom extractors).

The strategy is chosen from the head's *structure* (any convolution → ``loop``), never by timing,
so every process of a run uses the same arithmetic and results do not depend on ``--workers``.
``benchmarks/atari_pong.py`` measures the choice.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

log = logging.getLogger(__name__)

Forward = Callable[[dict[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]


class SkippingForward(Protocol):
    """A :data:`Forward` with ``skips_inactive`` true: it also takes ``active`` (K,) bool, the points to compute."""

    skips_inactive: bool

    def __call__(self, params: dict[str, torch.Tensor], obs: torch.Tensor,
                 active: np.ndarray | None = None) -> dict[str, torch.Tensor]: ...


STRATEGIES = ("vmap", "loop")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
GROUP = 8  # points per vmap call


def choose_strategy(head: nn.Module) -> str:
    """``"loop"`` for heads with a convolution, else ``"vmap"`` (see the module docstring)."""
    return "loop" if any(isinstance(m, _CONV) for m in head.modules()) else "vmap"


def make_forward(head: nn.Module, strategy: str | None = None) -> Forward:
    """The batched forward of ``head`` over stacked parameters; ``strategy`` None: :func:`choose_strategy`."""
    strategy = strategy or choose_strategy(head)
    log.debug("forward strategy for %s: %s", type(head).__name__, strategy)
    if strategy == "vmap":
        return _VmapForward(head)
    if strategy == "loop":
        return _LoopForward(head)
    raise ValueError(f"unknown forward strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


class _PrivateHead:
    """A private copy of the head and every place each of its parameters sits.

    A module can be registered under several names (SB3's actor-critic policies register their
    shared features extractor three times), and a parameter can be tied into several modules.
    ``functional_call`` over such a module saves, as an "original" to restore, the value it has just
    set through another name, and so leaves the perturbed (under ``vmap``: batched) tensors behind
    (torch 2.13). The strategies below therefore work on a copy and set each place once.
    """

    def __init__(self, head: nn.Module) -> None:
        try:
            self.module = copy.deepcopy(head)
            self.module.requires_grad_(False)
            self.private = True
        except RuntimeError:  # e.g. gSDE policies hold non-leaf tensors, which cannot be deep-copied
            self.module, self.private = head, False
        first: dict[int, str] = {id(p): n for n, p in reversed(list(self.module.named_parameters()))}
        self.places: dict[str, list[str]] = {n: [] for n in first.values()}  # public name → one name per place
        seen: set[tuple[int, str]] = set()
        for name, p in self.module.named_parameters(remove_duplicate=False):
            owner, _, leaf = name.rpartition(".")
            place = (id(self.module.get_submodule(owner)), leaf)  # a shared module is one place
            if place not in seen:
                seen.add(place)
                self.places[first[id(p)]].append(name)

    def _every(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``params`` keyed by every place (for ``functional_call(..., tie_weights=False)``)."""
        return {place: value for name, value in params.items() for place in self.places[name]}

    def check(self, params: dict[str, torch.Tensor]) -> None:
        unknown = set(params) - set(self.places)
        if unknown:
            raise KeyError(f"no such parameters in the head: {sorted(unknown)}")


class _VmapForward(_PrivateHead):
    """``vmap`` of ``functional_call`` over the points (see the module docstring)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__(head)

        def single(params: dict[str, torch.Tensor], obs: torch.Tensor) -> dict[str, torch.Tensor]:
            return functional_call(self.module, self._every(params), (obs,), tie_weights=False)

        self._batched = vmap(single, in_dims=(0, 0))

    def __call__(self, params: dict[str, torch.Tensor], obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs ``(K, E, ...)``, computed in groups of exactly :data:`GROUP` points (the last one
        padded with copies of its last point): every batched product then has one shape, so a
        point's rounding never depends on how many points share the call (``--max-envs``)."""
        self.check(params)
        K = obs.shape[0]
        outs = []
        for k0 in range(0, K, GROUP):
            index = torch.clamp(torch.arange(k0, k0 + GROUP), max=K - 1)
            got = self._batched({n: v.index_select(0, index) for n, v in params.items()}, obs.index_select(0, index))
            outs.append({key: val[: min(GROUP, K - k0)] for key, val in got.items()})
        return outs[0] if len(outs) == 1 else {key: torch.cat([o[key] for o in outs]) for key in outs[0]}


class _LoopForward(_PrivateHead):
    """Point by point through a private copy of the head (see the module docstring)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__(head)
        self.slots: dict[str, list[tuple[nn.Module, str]]] = {}
        for name, aliases in self.places.items():
            self.slots[name] = []
            for alias in aliases:
                owner, _, leaf = alias.rpartition(".")
                self.slots[name].append((self.module.get_submodule(owner), leaf))
        self.defaults: dict[str, torch.Tensor] = {}
        for name, places in self.slots.items():
            for mod, leaf in places[:1]:
                value = mod._parameters[leaf]
                if value is None:  # the names come from named_parameters(), which lists no None slot
                    raise ValueError(f"parameter {name!r} of the head is None")
                self.defaults[name] = value

    skips_inactive = True  # the evaluator may pass ``active``: the points whose outputs it still needs

    def __call__(self, params: dict[str, torch.Tensor], obs: torch.Tensor,
                 active: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Outputs ``(K, E, ...)``; with ``active``, only those points are computed (each point's
        arithmetic is its own, so skipping others changes no number) and the others are zeros."""
        self.check(params)
        ks = range(obs.shape[0]) if active is None else np.flatnonzero(active).tolist()
        outs = []
        if not self.private:  # never set slots of the user's module: functional_call, point by point
            for k in ks:
                outs.append(functional_call(self.module, self._every({n: v[k] for n, v in params.items()}), (obs[k],),
                                            tie_weights=False))
        else:
            try:
                for k in ks:
                    for name, value in params.items():
                        self._point(name, value[k])
                    outs.append(self.module(obs[k]))
            finally:
                for name in params:
                    self._point(name, self.defaults[name])
        if not outs:
            ks, outs = [0], [self(params, obs[:1], None)]  # nothing active: shapes only
            outs = [{key: val[0] for key, val in outs[0].items()}]
        stacked = {key: torch.stack([o[key] for o in outs]) for key in outs[0]}
        if len(ks) == obs.shape[0]:
            return stacked
        index = torch.as_tensor(ks)
        return {key: torch.zeros((obs.shape[0], *val.shape[1:]), dtype=val.dtype).index_copy_(0, index, val)
                for key, val in stacked.items()}

    def _point(self, name: str, value: torch.Tensor) -> None:
        for mod, leaf in self.slots[name]:
            mod._parameters[leaf] = value  # type: ignore[assignment]
