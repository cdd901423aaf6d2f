"""Agents: a policy network plus what is needed to evaluate it (spaces, env pipeline, γ).

An :class:`Agent` wraps the policy in a small *head* module whose ``forward(obs)`` returns the
action distribution's parameters as tensors (and the state value where the agent has one). The
evaluator calls it through ``torch.func.functional_call`` with perturbed parameters, so the
user's model is never modified.

Two ways in: :func:`load_checkpoint` for Stable-Baselines3 models (PPO, A2C, SAC, TD3, DDPG, DQN,
sb3-contrib TRPO), and :meth:`Agent.from_torch` for any PyTorch policy given a small adapter
``(module, obs) -> torch.distributions.Distribution | action tensor``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlscape.core.envs import EnvSpec, ObsNorm, check_spaces, is_atari, load_vecnormalize
from rlscape.core.errors import RlscapeError
from rlscape.core.params import NamedArrays, check_finite, numpy_params, select_names

log = logging.getLogger(__name__)

# Head kinds: how a head's outputs become actions (see rlscape.core.evaluate.select_actions).
CATEGORICAL = "categorical"  # {"logits"}
GAUSSIAN = "gaussian"  # {"mean", "log_std"}; actions clipped to the Box
SQUASHED = "squashed"  # {"mean", "log_std"}; tanh, then rescaled to the Box (SAC)
TANH = "tanh"  # {"action"} in [-1, 1], rescaled to the Box (TD3, DDPG)
QVALUES = "qvalues"  # {"q"}; greedy, ε-greedy when stochastic (DQN)
ACTION = "action"  # {"action"}: a deterministic action, clipped to the Box if continuous

ALGOS = ("ppo", "a2c", "trpo", "sac", "td3", "ddpg", "dqn")
ENV_FILE = "env.json"
_PREFIX = "p."


class _ActorCriticHead(nn.Module):
    """SB3 ``ActorCriticPolicy`` (PPO, A2C, TRPO): logits or Gaussian mean/log_std, plus V(s)."""

    def __init__(self, policy: nn.Module, gaussian: bool) -> None:
        super().__init__()
        self.p = policy
        self.gaussian = gaussian

    def forward(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.p
        features = p.extract_features(obs)
        pi_f, vf_f = (features, features) if p.share_features_extractor else features
        out = p.action_net(p.mlp_extractor.forward_actor(pi_f))
        value = p.value_net(p.mlp_extractor.forward_critic(vf_f)).squeeze(-1)
        if self.gaussian:
            # gSDE policies are evaluated deterministically only (Agent.check_sampling); their
            # log_std is a (latent, action) matrix, so a placeholder keeps the output shapes fixed
            log_std = torch.zeros_like(out) if p.use_sde else p.log_std.expand_as(out)
            return {"mean": out, "log_std": log_std, "value": value}
        return {"logits": out, "value": value}


class _SACHead(nn.Module):
    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.p = policy

    def forward(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, log_std, _ = self.p.actor.get_action_dist_params(obs)
        return {"mean": mean, "log_std": torch.zeros_like(mean) if self.p.actor.use_sde else log_std}


class _TD3Head(nn.Module):
    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.p = policy

    def forward(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"action": self.p.actor(obs)}


class _DQNHead(nn.Module):
    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.p = policy

    def forward(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"q": self.p.q_net(obs)}


class _AdapterHead(nn.Module):
    """Any torch policy: ``fn(module, obs)`` returns a Distribution or an action tensor."""

    def __init__(self, net: nn.Module, fn: Callable[..., Any], value_fn: Callable[..., Any] | None) -> None:
        super().__init__()
        self.p = net
        self.fn = fn
        self.value_fn = value_fn

    def forward(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = _distribution_params(self.fn(self.p, obs))
        if self.value_fn is not None:
            out["value"] = torch.as_tensor(self.value_fn(self.p, obs)).reshape(out[next(iter(out))].shape[:-1])
        return out


def _distribution_params(dist: Any) -> dict[str, torch.Tensor]:
    from torch.distributions import Categorical, Independent, Normal

    if isinstance(dist, torch.Tensor):
        return {"action": dist}
    if isinstance(dist, Independent):
        dist = dist.base_dist
    if isinstance(dist, Categorical):
        return {"logits": dist.logits}
    if isinstance(dist, Normal):
        return {"mean": dist.loc, "log_std": torch.log(dist.scale).expand_as(dist.loc)}
    raise RlscapeError(
        f"the adapter returned {type(dist).__name__}; return a Categorical, a Normal (or Independent Normal) or an action tensor"
    )


@dataclass
class Agent:
    """A policy ready for batched evaluation. Picklable, so worker processes can receive it."""

    head: nn.Module
    kind: str
    observation_space: gym.Space
    action_space: gym.Space
    env: EnvSpec
    gamma: float = 0.99
    algo: str = "custom"
    source: str = ""
    has_value: bool = False
    exploration_rate: float = 0.0
    gsde: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def check_sampling(self, deterministic: bool) -> None:
        """Refuse what the evaluator cannot sample exactly (gSDE exploration noise)."""
        if self.gsde and not deterministic:
            raise RlscapeError(
                "this checkpoint explores with gSDE (use_sde=True), whose state-dependent noise rlscape does not "
                "sample yet; pass --deterministic to evaluate its mean action"
            )

    # -- parameters -------------------------------------------------------------------------------
    def parameter_names(self) -> list[str]:
        """Public parameter names (as in the policy's own ``named_parameters``)."""
        return [n[len(_PREFIX) :] for n, _ in self.head.named_parameters()]

    def parameters(self, which: str = "actor") -> NamedArrays:
        """A copy of the selected parameters (``actor``, ``critic`` or ``all``) as float32 arrays."""
        names = select_names(self.parameter_names(), which)
        if which == "critic" and not self.has_value:
            raise RlscapeError(f"{self.algo} agents have no state-value critic to move; use --params actor or all")
        values = numpy_params(self.head, [_PREFIX + n for n in names])
        return {n[len(_PREFIX) :]: v for n, v in values.items()}

    @staticmethod
    def functional_name(name: str) -> str:
        """The name of a public parameter inside the head module."""
        return _PREFIX + name

    # -- construction from a plain torch module --------------------------------------------------
    @classmethod
    def from_torch(
        cls,
        module: nn.Module,
        distribution: Callable[[nn.Module, torch.Tensor], Any],
        env_id: str,
        *,
        value: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
        gamma: float = 0.99,
        env_kwargs: dict[str, Any] | None = None,
        obs_norm: ObsNorm | None = None,
    ) -> Agent:
        """Wrap any PyTorch policy (e.g. CleanRL style).

        ``distribution(module, obs)`` maps a float observation batch ``(B, *obs_shape)`` to a
        ``torch.distributions.Categorical``, ``Normal``/``Independent(Normal)``, or a tensor of
        actions ``(B, act_dim)`` for deterministic policies. ``value(module, obs)`` optionally
        gives V(s) with shape ``(B,)``. Both functions must use only ``module``'s parameters, and
        be importable top-level functions when evaluation uses several worker processes.
        """
        spec = EnvSpec(env_id, dict(env_kwargs or {}), obs_norm=obs_norm)
        env = spec.make()
        head = _AdapterHead(module, distribution, value)
        obs, _ = env.reset(seed=0)
        with torch.no_grad():
            out = head(torch.as_tensor(np.asarray(obs, dtype=np.float32))[None])
        if "logits" in out:
            kind = CATEGORICAL
        elif "mean" in out:
            kind = GAUSSIAN
        else:
            kind = ACTION
        return cls(head, kind, env.observation_space, env.action_space, spec, gamma=gamma, algo="custom",
                   source=type(module).__name__, has_value=value is not None)


# -- Stable-Baselines3 checkpoints -----------------------------------------------------------------

def _detect_algo(data: dict[str, Any]) -> str:
    if "cg_max_steps" in data:
        return "trpo"
    if "clip_range" in data:
        return "ppo"
    if "rollout_buffer_class" in data or "normalize_advantage" in data:
        return "a2c"
    if "target_entropy" in data:
        return "sac"
    if "exploration_rate" in data:
        return "dqn"
    if "policy_delay" in data:
        # SB3 DDPG = TD3 with one delayed update and no target-policy smoothing
        return "ddpg" if data.get("policy_delay") == 1 and not data.get("target_noise_clip") else "td3"
    raise RlscapeError("cannot tell which algorithm saved this model; pass --algo (ppo, a2c, trpo, sac, td3, ddpg, dqn)")


def algo_class(algo: str) -> type[Any]:
    """The SB3 (or sb3-contrib) class of an algorithm name (``ppo``, ``a2c``, ``trpo``, ``sac``, ``td3``, ``ddpg``, ``dqn``)."""
    import stable_baselines3 as sb3

    if algo == "trpo":
        from sb3_contrib import TRPO

        return TRPO
    return {"ppo": sb3.PPO, "a2c": sb3.A2C, "sac": sb3.SAC, "td3": sb3.TD3, "ddpg": sb3.DDPG, "dqn": sb3.DQN}[algo]




@contextlib.contextmanager
def _without_dynamo_import() -> Iterator[None]:
    """Load SB3 models without importing ``torch._dynamo`` (about as costly as importing torch).

    The optimizer SB3 rebuilds on load calls methods that torch wraps in a lazily imported
    "dynamo disabled" guard. Nothing is being compiled while a model loads, so for its duration
    the guard is pre-filled with the plain method and removed again afterwards (torch's own lazy
    behaviour is back once the model is loaded).
    """
    if "torch._dynamo" in sys.modules:
        yield
        return
    import torch.optim

    filled = []
    for attr in vars(torch.optim.Optimizer).values():
        fn = getattr(attr, "__wrapped__", None)
        if callable(fn) and not hasattr(fn, "__dynamo_disable"):
            fn.__dynamo_disable = fn
            filled.append(fn)
    try:
        yield
    finally:
        for fn in filled:
            del fn.__dynamo_disable


def _find_env_file(folder: Path) -> dict[str, Any]:
    for candidate in (folder, folder.parent, folder.parent.parent):
        f = candidate / ENV_FILE
        if f.is_file():
            try:
                return json.loads(f.read_text())
            except json.JSONDecodeError as exc:
                raise RlscapeError(f"{f} is not valid JSON ({exc}); fix or remove it") from None
    return {}


def resolve_model_zip(checkpoint: str | Path) -> Path:
    """The SB3 ``.zip`` for a checkpoint folder or file, or a clear error."""
    path = Path(checkpoint)
    if not path.exists():
        raise RlscapeError(f"checkpoint {path} does not exist; give a folder holding model.zip or an SB3 .zip file")
    if path.is_dir():
        zips = [path / "model.zip"] if (path / "model.zip").is_file() else sorted(path.glob("*.zip"))
        if len(zips) != 1:
            raise RlscapeError(f"checkpoint folder {path} must hold exactly one model.zip (found {len(zips)} .zip files)")
        return zips[0]
    return path


def load_checkpoint(
    checkpoint: str | Path,
    env_id: str | None = None,
    *,
    vecnormalize: str | Path | None = None,
    algo: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> Agent:
    """Load a Stable-Baselines3 checkpoint as an :class:`Agent` (on the CPU).

    ``checkpoint`` is a folder holding ``model.zip`` (and, when training used them,
    ``vecnormalize.pkl`` and ``env.json`` with the env id, kwargs and wrappers; ``env.json`` may
    also sit one or two folders up, as in a training run), or a bare SB3 ``.zip``. ``env_id``
    overrides/supplies the env; ``vecnormalize`` points at the observation statistics of a bare zip.
    """
    zip_path = resolve_model_zip(checkpoint)
    folder = zip_path.parent
    try:
        with zipfile.ZipFile(zip_path) as zf:
            data = json.loads(zf.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
        raise RlscapeError(f"{zip_path} is not a readable Stable-Baselines3 model ({type(exc).__name__}); give a model saved with model.save()") from None
    algo = (algo or _detect_algo(data)).lower()
    if algo not in ALGOS:
        raise RlscapeError(f"--algo must be one of {', '.join(ALGOS)}, not {algo!r}")
    meta = _find_env_file(folder)
    if env_id and meta.get("env_id") and env_id != meta["env_id"]:
        log.warning("--env %s overrides the checkpoint's env %s", env_id, meta["env_id"])
    env_id = env_id or meta.get("env_id")
    if not env_id:
        raise RlscapeError(f"the checkpoint {zip_path} does not name its env; pass --env ID (e.g. --env CartPole-v1)")
    kwargs = dict(meta.get("env_kwargs", {}) if env_id == meta.get("env_id") else {})
    kwargs.update(env_kwargs or {})

    custom: dict[str, Any] = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0,
                              "exploration_schedule": lambda _: 0.0}
    atari = bool(meta.get("atari", is_atari(env_id)))
    try:
        with _without_dynamo_import():
            model = algo_class(algo).load(zip_path, device="cpu", custom_objects=custom)
    except Exception as first:  # noqa: BLE001 - SB3 raises many types for a bad file
        # Models saved with the old `gym` (e.g. from the RL Zoo) may hold spaces that no longer
        # unpickle: take them from the env the model is evaluated in, and try once more.
        try:
            probe = EnvSpec(env_id, kwargs, atari=atari, frame_stack=int(meta.get("frame_stack", 4 if atari else 1)),
                            channel_first=atari).make()
            custom.update(observation_space=probe.observation_space, action_space=probe.action_space)
            probe.close()
            model = algo_class(algo).load(zip_path, device="cpu", custom_objects=custom)
            log.warning("%s: its saved spaces could not be read; using those of %s", zip_path.name, env_id)
        except Exception:  # noqa: BLE001 - report the original failure
            msg = str(first).splitlines()[0] if str(first) else ""
            raise RlscapeError(f"cannot load {zip_path} as {algo.upper()} ({type(first).__name__}: {msg}); check --algo and the file") from None
    policy = model.policy
    policy.set_training_mode(False)

    vn_path = Path(vecnormalize) if vecnormalize else folder / "vecnormalize.pkl"
    if vecnormalize and not vn_path.is_file():
        raise RlscapeError(f"--vecnormalize {vn_path} does not exist; give the vecnormalize.pkl saved with the model")
    obs_norm, reward_norm = load_vecnormalize(vn_path) if vn_path.is_file() else (None, None)

    obs_space = policy.observation_space
    channel_first, stack = False, int(meta.get("frame_stack", 1))
    if atari and isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 3:
        channel_first = obs_space.shape[0] < obs_space.shape[-1]
        stack = int(meta.get("frame_stack", obs_space.shape[0] if channel_first else obs_space.shape[-1]))
    spec = EnvSpec(env_id, kwargs, atari=atari, frame_stack=stack, channel_first=channel_first, obs_norm=obs_norm,
                   reward_norm=reward_norm)
    env = spec.make()
    try:
        check_spaces(env, obs_space, policy.action_space, env_id)
    finally:
        env.close()

    if algo in ("ppo", "a2c", "trpo"):
        gaussian = isinstance(policy.action_space, gym.spaces.Box)
        if not gaussian and not isinstance(policy.action_space, gym.spaces.Discrete):
            raise RlscapeError(f"action space {policy.action_space} is not supported yet (Discrete and Box are)")
        head: nn.Module = _ActorCriticHead(policy, gaussian)
        kind, has_value = (GAUSSIAN if gaussian else CATEGORICAL), True
    elif algo == "sac":
        head, kind, has_value = _SACHead(policy), SQUASHED, False
    elif algo in ("td3", "ddpg"):
        head, kind, has_value = _TD3Head(policy), TANH, False
    else:
        head, kind, has_value = _DQNHead(policy), QVALUES, False
    agent = Agent(
        head, kind, obs_space, policy.action_space, spec, gamma=float(model.gamma), algo=algo,
        source=str(zip_path.resolve()), has_value=has_value,
        exploration_rate=float(getattr(model, "exploration_rate", 0.0) or 0.0), gsde=bool(getattr(model, "use_sde", False)),
        info={"num_timesteps": int(getattr(model, "num_timesteps", 0))},
    )
    check_finite(agent.parameters("all" if has_value else "actor"), f"checkpoint {zip_path.name}")
    return agent
