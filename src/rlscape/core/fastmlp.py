"""A fast batched forward pass for the MLP heads of SB3 policies.

``vmap(functional_call(head, …))`` costs milliseconds per call in dispatch alone, which dominates
when a few hundred envs are stepped per call. SB3's MLP policies are chains of ``Linear`` layers
and elementwise activations, so their forward pass over K parameter sets × E observations is a
handful of batched matrix products: ``x (K, E, in) @ W (K, in, out) + b (K, 1, out)``. This module
recognises those structures (PPO/A2C/TRPO actor-critic, SAC, TD3/DDPG, DQN with a flattening
feature extractor on vector observations) and runs them that way; anything else (CNNs, gSDE,
adapters, custom extractors) returns ``None`` and keeps the general ``vmap`` path.

Parameters that are not moved (absent from the stacked dict) are the head's own, shared by all K.

Without autograd the chain runs in numpy (:func:`_run_numpy`): NumPy's BLAS and its SIMD ``tanh``
make the forward pass cost what its matrix products cost — ``torch.tanh`` took 84 µs on a
(512, 64) float32 block where ``np.tanh`` takes 12 µs, and a CartPole MLP head's whole forward pass
is ~3.5× faster (``benchmarks/forward_limit.py``). The numbers agree with SB3's own forward within
float32 rounding (``tests/core/rounding.py`` states the bound), not bit for bit: the run identity
records it (``ARITHMETIC_VERSION`` 3). With parameters that require gradients the same chain runs in
torch (:func:`_run`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

Chain = list[tuple[str, Any]]  # ("linear", (functional prefix, module)) | ("act", module)
Forward = Callable[[dict[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]

_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Identity, nn.Softplus)


def _chain(module: nn.Module, prefix: str) -> Chain | None:
    """``module`` (a Sequential, Linear or activation) as a chain of steps, or None if it is not one."""
    if isinstance(module, nn.Linear):
        return [("linear", (prefix, module))]
    if isinstance(module, _ELEMENTWISE):
        return [("act", module)]
    if isinstance(module, nn.Sequential):
        steps: Chain = []
        for name, child in module.named_children():
            sub = _chain(child, f"{prefix}.{name}")
            if sub is None:
                return None
            steps += sub
        return steps
    return None


def _run(chain: Chain, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``x (K, E, in)`` through ``chain`` with the stacked ``params``: numpy, or torch when autograd needs it."""
    if _needs_grad(params, x):
        return _run_torch(chain, params, x)
    return _run_numpy(chain, params, x)


def _run_torch(chain: Chain, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    for kind, item in chain:
        if kind == "act":
            x = item(x)
            continue
        prefix, lin = item
        w, b = params.get(prefix + ".weight"), params.get(prefix + ".bias")
        if w is None:  # shared by all points: a stride-0 view, so the product has the same shape either way
            w = lin.weight.expand(x.shape[0], *lin.weight.shape)
        x = _batched_linear(x, w)
        if b is not None:
            x = x + b.unsqueeze(1)
        elif lin.bias is not None:
            x = x + lin.bias
    return x


# activations numpy computes in place (the others run through torch on the same memory)
_NUMPY_ACTIVATIONS: dict[type, Callable[[np.ndarray], Any]] = {
    nn.Tanh: lambda h: np.tanh(h, out=h),
    nn.ReLU: lambda h: np.maximum(h, np.float32(0), out=h),
    nn.Identity: lambda h: h,
}


def _run_numpy(chain: Chain, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """:func:`_run` in numpy (no autograd): ``x (K, E, in)`` through ``chain``; a tensor sharing numpy's memory.

    Each point's product is one BLAS call on its own ``(E, in) @ (in, out)`` matrices (numpy loops
    over the stack), so a row's rounding depends on the block's shape only, never on ``K``.
    """
    h = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    for kind, item in chain:
        if kind == "act":
            fast = _NUMPY_ACTIVATIONS.get(type(item))
            if fast is not None:
                fast(h)
            else:
                h = item(torch.from_numpy(h)).numpy()
            continue
        prefix, lin = item
        w, b = params.get(prefix + ".weight"), params.get(prefix + ".bias")
        wt = (lin.weight.detach() if w is None else w).numpy().swapaxes(-1, -2)  # (in, out) or (K, in, out): a view
        h = _matmul_np(h, wt)
        if b is not None:
            h += b.numpy()[:, None, :]
        elif lin.bias is not None:
            h += lin.bias.detach().numpy()
    return torch.from_numpy(h)


def _matmul_np(x: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """``x (K, E, in) @ wt`` (``(K, in, out)`` or shared ``(in, out)``), each row rounded the same
    whatever ``K`` and whatever its position in the block.

    OpenBLAS's kernels for an output width that is not a multiple of 4 handle the block's last
    rows differently (another summation order): a (10, 64) @ (64, 2) product rounded row 9
    unlike row 0, so an episode's numbers moved with ``--max-envs``. The weights are therefore padded
    with zero columns to a multiple of 4 (``tests/core/test_evaluate.py`` checks the property on the
    machine that runs the tests).
    """
    n = wt.shape[-1]
    pad = -n % 4
    if not pad:
        return np.matmul(x, wt)
    wide = np.zeros((*wt.shape[:-1], n + pad), np.float32)
    wide[..., :n] = wt
    return np.ascontiguousarray(np.matmul(x, wide)[..., :n])


def _needs_grad(params: dict[str, torch.Tensor], x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(v.requires_grad for v in params.values()))


def _batched_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x (K, E, in) @ w (K, out, in)ᵀ``: row ``(k, e)`` rounded the same whatever ``K`` (and, for
    the evaluator's fixed ``E``, whatever the rest of the batch holds).

    MKL's batched product of a single output column switches kernels with the batch count (from
    4 matrices on), which changed one-action policies' returns (Pendulum) with ``--max-envs``; a
    single column is therefore an elementwise product summed over ``in``, a reduction whose order
    depends on ``in`` alone. Wider outputs keep ``bmm``, whose rows are invariant at a fixed ``E``
    (``tests/core/test_evaluate.py`` checks both on the machine that runs the tests).
    """
    if w.shape[1] == 1:
        return (x * w).sum(-1, keepdim=True)
    return torch.bmm(x, w.transpose(1, 2))


def _flat_vector_obs(model: nn.Module, extractor: nn.Module) -> bool:
    from stable_baselines3.common.torch_layers import FlattenExtractor

    space = getattr(model, "observation_space", None)
    return isinstance(extractor, FlattenExtractor) and isinstance(space, gym.spaces.Box) and len(space.shape) == 1


def fast_mlp_forward(head: nn.Module, *, value: bool = True) -> Forward | None:
    """A batched forward for ``head`` (an rlscape policy head), or None when it is not a plain MLP.

    The returned function takes the stacked parameters (functional names, leading dim K) and
    observations ``(K, E, obs_dim)`` and returns the head's outputs with leading dims ``(K, E)``.
    ``value=False``: an actor-critic head leaves out its critic (``"value"``), for callers that
    only act (trajectory collection); the actor's outputs are the same either way.
    """
    from rlscape.core import policy as P

    p: Any = getattr(head, "p", None)  # the SB3 policy (attributes looked up at run time)
    if isinstance(head, P._ActorCriticHead):
        if getattr(p, "use_sde", False) or not _flat_vector_obs(p, p.features_extractor):
            return None
        if not p.share_features_extractor and not _flat_vector_obs(p, p.vf_features_extractor):
            return None
        actor = _chain(p.mlp_extractor.policy_net, "p.mlp_extractor.policy_net")
        critic = _chain(p.mlp_extractor.value_net, "p.mlp_extractor.value_net")
        if actor is None or critic is None:
            return None
        actor = actor + [("linear", ("p.action_net", p.action_net))]
        critic = critic + [("linear", ("p.value_net", p.value_net))]
        gaussian = head.gaussian

        def actor_critic(params: dict[str, torch.Tensor], obs: torch.Tensor) -> dict[str, torch.Tensor]:
            x = obs.float()
            out = _run(actor, params, x)
            extra = {"value": _run(critic, params, x).squeeze(-1)} if value else {}
            if gaussian:
                log_std = params.get("p.log_std")
                log_std = p.log_std.expand_as(out) if log_std is None else log_std.unsqueeze(1).expand_as(out)
                return {"mean": out, "log_std": log_std, **extra}
            return {"logits": out, **extra}

        return actor_critic

    if isinstance(head, P._SACHead):
        a = p.actor
        if a.use_sde or not _flat_vector_obs(a, a.features_extractor):
            return None
        latent = _chain(a.latent_pi, "p.actor.latent_pi")
        if latent is None:
            return None
        mu, log_std = [("linear", ("p.actor.mu", a.mu))], [("linear", ("p.actor.log_std", a.log_std))]
        from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN

        def sac(params: dict[str, torch.Tensor], obs: torch.Tensor) -> dict[str, torch.Tensor]:
            z = _run(latent, params, obs.float())
            return {"mean": _run(mu, params, z), "log_std": torch.clamp(_run(log_std, params, z), LOG_STD_MIN, LOG_STD_MAX)}

        return sac

    if isinstance(head, P._TD3Head):
        a = p.actor
        mu_chain = _chain(a.mu, "p.actor.mu") if _flat_vector_obs(a, a.features_extractor) else None
        if mu_chain is None:
            return None
        return lambda params, obs: {"action": _run(mu_chain, params, obs.float())}

    if isinstance(head, P._DQNHead):
        q = p.q_net
        q_chain = _chain(q.q_net, "p.q_net.q_net") if _flat_vector_obs(q, q.features_extractor) else None
        if q_chain is None:
            return None
        return lambda params, obs: {"q": _run(q_chain, params, obs.float())}
    return None
