"""Training runs with full-state checkpoints: ``rlscape train ENV_ID --algo ALGO --steps N --out DIR``.

Reads top to bottom: hyperparameters (shipped defaults + user overrides) → the training env
pipeline → the SB3 model → a callback that saves whole checkpoints → train / resume.

A checkpoint is the whole training state at an iteration boundary (after an update, before the
next rollout): ``model.zip`` with the optimizer state, the VecNormalize statistics, and for
off-policy algorithms the replay buffer, so a checkpoint can continue training exactly where it
was. Checkpoints are taken at step 0, at the first boundary at or past every multiple of
``save_every`` and at the end; a checkpoint's step is ``model.num_timesteps``. For on-policy
algorithms boundaries fall on multiples of the rollout size ``n_steps · n_envs``, so the last
step is ``steps`` rounded up to it. See :mod:`rlscape.core.runs` for the layout.
"""

from __future__ import annotations

import ast
import copy
import functools
import inspect
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

from rlscape.core.envs import EnvSpec, is_atari
from rlscape.core.errors import RlscapeError
from rlscape.core.policy import ALGOS, ENV_FILE, algo_class
from rlscape.core.runs import CHECKPOINT_FILE, CHECKPOINTS, TRAIN_FILE, checkpoint_name, list_checkpoints
from rlscape.core.store import atomic_write_text, package_versions

log = logging.getLogger(__name__)

OFF_POLICY = ("sac", "td3", "ddpg", "dqn")
# Keys of the hyperparameter table that are not keywords of the algorithm.
_TABLE_KEYS = ("policy", "n_envs", "normalize", "frame_stack", "noise_type", "noise_std", "n_timesteps", "env_wrapper")
_SCHEDULES = ("learning_rate", "clip_range", "clip_range_vf")
# Keywords set by rlscape itself (from options), never from the hyperparameters.
_RESERVED = ("env", "seed", "device", "verbose", "tensorboard_log", "_init_setup_model", "action_noise")
# What identifies a run: a resume must match these.
_IDENTITY = ("env_id", "env_kwargs", "algo", "seed", "n_envs", "hyperparams", "save_every", "replay_buffer")
_ACTIONS = {
    "dqn": (gym.spaces.Discrete,),
    "sac": (gym.spaces.Box,),
    "td3": (gym.spaces.Box,),
    "ddpg": (gym.spaces.Box,),
}
_ON_POLICY_ACTIONS = (gym.spaces.Discrete, gym.spaces.Box, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)


# -- hyperparameters ---------------------------------------------------------------------------------

class LinearSchedule:
    """``"lin_X"``: X · progress_remaining, from X at the start of the run to 0 at its end (picklable)."""

    def __init__(self, initial: float) -> None:
        self.initial = float(initial)

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.initial

    def __repr__(self) -> str:
        return f"lin_{self.initial:g}"


@functools.cache
def _table_text() -> str:
    return resources.files("rlscape").joinpath("data/hyperparams.yaml").read_text()


@functools.cache
def _parsed_table() -> dict[str, Any]:
    return yaml.load(_table_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _table() -> dict[str, Any]:
    """The shipped hyperparameter table (a fresh copy: callers may change it)."""
    return copy.deepcopy(_parsed_table())


def default_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """The shipped defaults for ``algo`` on ``env_id``: the algorithm's ``default`` entry, updated by the
    entry of the env id (or the ``atari`` entry for Atari games)."""
    algo = _check_algo(algo)
    table = _table()[algo]
    out = dict(table["default"])
    key = env_id if env_id in table else ("atari" if is_atari(env_id) and "atari" in table else None)
    if key is not None:
        out.update(table[key])
    return out


def parse_hyperparams(source: str | Path | Mapping[str, Any] | None, env_id: str | None = None) -> dict[str, Any]:
    """User overrides from a YAML/JSON file, an inline JSON/YAML mapping, or a dict.

    A file in the Zoo's layout (``{env_id: {...}}``) is accepted when it has an entry for ``env_id``.
    """
    if source is None:
        return {}
    if isinstance(source, Mapping):
        data: Any = dict(source)
        where = "the hyperparameters"
    else:
        text = str(source).strip()
        path = Path(text)
        is_file_name = text.lower().endswith((".yaml", ".yml", ".json"))
        if is_file_name or (len(text) < 4096 and "\n" not in text and path.is_file()):
            if not path.is_file():
                raise RlscapeError(f"hyperparameter file {path} does not exist; give a YAML/JSON file or an inline '{{\"key\": value}}'")
            text, where = path.read_text(), str(path)
        else:
            where = "--hyperparams"
        try:
            data = yaml.safe_load(text) if text else {}
        except yaml.YAMLError as exc:
            first = str(exc).replace("\n", " ")
            raise RlscapeError(f"{where} is not valid YAML/JSON ({first}); write a mapping such as '{{\"learning_rate\": 3e-4}}'") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RlscapeError(f"{where} must be a mapping of hyperparameter names to values (such as '{{\"learning_rate\": 3e-4}}'), not a {type(data).__name__}")
    if env_id is not None and env_id in data and isinstance(data[env_id], dict):
        data = data[env_id]
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise RlscapeError(f"{where}: hyperparameter names must be strings, not {bad[0]!r}")
    return data


def _check_algo(algo: str) -> str:
    a = str(algo).lower()
    if a not in ALGOS:
        raise RlscapeError(f"unknown algorithm {algo!r}; use one of {', '.join(ALGOS)}")
    return a


def _class_name(value: Any, what: str) -> str:
    """The canonical string for a class named in policy_kwargs (``nn.ReLU``, ``RMSpropTFLike``, ``th.optim.Adam``)."""
    if isinstance(value, type):
        mod = value.__module__
        if mod.startswith("torch.nn"):
            return f"nn.{value.__name__}"
        if mod.startswith("torch.optim"):
            return f"th.optim.{value.__name__}"
        return value.__name__
    name = str(value).strip()
    for prefix in ("torch.nn.", "th.nn.", "nn."):
        if name.startswith(prefix):
            name = "nn." + name[len(prefix) :]
            break
    name = name.replace("torch.optim.", "th.optim.")
    if what == "activation_fn" and "." not in name:  # "relu", "ReLU", "leaky_relu" → nn.ReLU, nn.LeakyReLU
        from torch import nn

        key = name.replace("_", "").lower()
        found = [c for c in dir(nn) if c.lower() == key and isinstance(getattr(nn, c), type)]
        if found:
            name = "nn." + found[0]
    _resolve_class(name, what)
    return name


def _resolve_class(name: str, what: str) -> type:
    import torch
    from torch import nn

    if name.startswith("nn."):
        cls = getattr(nn, name[3:], None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
    elif name.startswith("th.optim."):
        cls = getattr(torch.optim, name[9:], None)
        if isinstance(cls, type):
            return cls
    elif name == "RMSpropTFLike":
        from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

        return RMSpropTFLike
    raise RlscapeError(f"policy_kwargs {what}={name!r} is not a class rlscape knows; use e.g. nn.ReLU, nn.Tanh, th.optim.Adam or RMSpropTFLike")


def _eval_kwargs_string(text: str) -> Any:
    """The Zoo's ``"dict(net_arch=[64, 64], activation_fn=nn.ReLU)"`` → a plain dict, without eval()."""

    def conv(node: ast.AST) -> Any:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
            return {kw.arg: conv(kw.value) for kw in node.keywords}
        if isinstance(node, ast.Dict):
            return {conv(k): conv(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
        if isinstance(node, ast.List | ast.Tuple):
            return [conv(e) for e in node.elts]
        if isinstance(node, ast.Attribute | ast.Name):
            return ast.unparse(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -conv(node.operand)
        if isinstance(node, ast.Constant):
            return node.value
        raise ValueError(ast.unparse(node))

    try:
        return conv(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, ValueError) as exc:
        raise RlscapeError(f"cannot read policy_kwargs {text!r} ({type(exc).__name__}: {exc}); write a mapping such as {{net_arch: [64, 64]}}") from None


def _policy_kwargs_json(value: Any) -> dict[str, Any]:
    """policy_kwargs as recorded (JSON): a dict with classes named by strings."""
    if isinstance(value, str):
        value = _eval_kwargs_string(value)
    if not isinstance(value, dict):
        raise RlscapeError(f"policy_kwargs must be a mapping such as {{net_arch: [64, 64]}}, not {value!r}")
    out = dict(value)
    for key in ("activation_fn", "optimizer_class"):
        if key in out:
            out[key] = _class_name(out[key], key)
    arch = out.get("net_arch")
    if isinstance(arch, list) and len(arch) == 1 and isinstance(arch[0], dict):
        out["net_arch"] = arch[0]  # the pre-2.0 SB3 form [dict(pi=..., vf=...)]
    return out


def _normalize_json(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value) if value.strip().startswith("{") else yaml.safe_load(value)
        except (ValueError, SyntaxError, yaml.YAMLError):
            raise RlscapeError(f"normalize must be true, false or a mapping of VecNormalize options, not {value!r}") from None
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, dict):
        return dict(value)
    raise RlscapeError(f"normalize must be true, false or a mapping of VecNormalize options, not {value!r}")


def resolve_hyperparams(algo: str, env_id: str, overrides: Mapping[str, Any] | None = None,
                        n_envs: int | None = None) -> dict[str, Any]:
    """Defaults + overrides, checked and in their recorded (JSON) form. ``n_envs`` wins over both."""
    algo = _check_algo(algo)
    hp = default_hyperparams(algo, env_id)
    hp.update(dict(overrides or {}))
    if n_envs is not None:
        hp["n_envs"] = n_envs
    if "n_timesteps" in hp:
        log.info("hyperparameter n_timesteps=%s ignored: --steps sets the length of the run", hp["n_timesteps"])
        hp.pop("n_timesteps")
    if "env_wrapper" in hp:
        wrappers = hp.pop("env_wrapper")
        names = [next(iter(w)) if isinstance(w, dict) else str(w) for w in (wrappers if isinstance(wrappers, list) else [wrappers])]
        if not (is_atari(env_id) and all(n.endswith("AtariWrapper") for n in names)):
            raise RlscapeError(f"env_wrapper {names} is not supported; only SB3's AtariWrapper (applied to every Atari game) is")
    allowed = set(inspect.signature(algo_class(algo).__init__).parameters) - {"self", *_RESERVED}
    for key in hp:
        if key in _RESERVED:
            raise RlscapeError(f"hyperparameter {key!r} is set by rlscape; use the command-line option instead (e.g. --seed, --device)")
        if key not in allowed and key not in _TABLE_KEYS:
            raise RlscapeError(f"unknown hyperparameter {key!r} for {algo.upper()}; check its spelling against the SB3 {algo.upper()} arguments")
    if ("noise_type" in hp or "noise_std" in hp) and algo not in ("sac", "td3", "ddpg"):
        raise RlscapeError(f"noise_type/noise_std (action noise) apply to SAC, TD3 and DDPG, not {algo.upper()}")
    if "noise_type" in hp and hp["noise_type"] not in ("normal", "ornstein-uhlenbeck"):
        raise RlscapeError(f"noise_type must be normal or ornstein-uhlenbeck, not {hp['noise_type']!r}")
    for key in _SCHEDULES:
        if key in hp:
            _schedule(key, hp[key])
    if "policy_kwargs" in hp:
        hp["policy_kwargs"] = _policy_kwargs_json(hp["policy_kwargs"])
    if "normalize" in hp:
        hp["normalize"] = _normalize_json(hp["normalize"])
        if hp["normalize"] is None:
            hp.pop("normalize")
    if "train_freq" in hp and isinstance(hp["train_freq"], tuple):
        hp["train_freq"] = list(hp["train_freq"])
    for key, kind in (("n_envs", "a positive integer"), ("frame_stack", "a positive integer")):
        if key in hp and (not isinstance(hp[key], int) or isinstance(hp[key], bool) or hp[key] < 1):
            raise RlscapeError(f"{key} must be {kind}, not {hp[key]!r}")
    try:
        json.dumps(hp)
    except TypeError as exc:
        raise RlscapeError(f"hyperparameters must be plain values (numbers, strings, lists, mappings): {exc}") from None
    return hp


def _schedule(key: str, value: Any) -> Any:
    if isinstance(value, str):
        if value.startswith("lin_"):
            try:
                return LinearSchedule(float(value[4:]))
            except ValueError:
                pass
        else:
            try:
                return float(value)
            except ValueError:
                pass
        raise RlscapeError(f"{key} must be a number or lin_X (a linear schedule from X to 0), not {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RlscapeError(f"{key} must be a number or lin_X (a linear schedule from X to 0), not {value!r}")
    return float(value)


def sb3_kwargs(algo: str, hp: Mapping[str, Any], action_space: gym.Space) -> dict[str, Any]:
    """The keyword arguments of the SB3 constructor for resolved hyperparameters ``hp``."""
    kwargs = {k: v for k, v in hp.items() if k not in _TABLE_KEYS}
    for key in _SCHEDULES:
        if key in kwargs:
            kwargs[key] = _schedule(key, kwargs[key])
    if "policy_kwargs" in kwargs:
        pk = dict(kwargs["policy_kwargs"])
        for key in ("activation_fn", "optimizer_class"):
            if key in pk:
                pk[key] = _resolve_class(pk[key], key)
        kwargs["policy_kwargs"] = pk
    if isinstance(kwargs.get("train_freq"), list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    if "noise_type" in hp:
        from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

        if action_space.shape is None:
            raise RlscapeError(f"noise_type needs an action space with a shape, not {action_space}; drop noise_type")
        dim = int(np.prod(action_space.shape))
        std = float(hp.get("noise_std", 0.1))
        cls = NormalActionNoise if hp["noise_type"] == "normal" else OrnsteinUhlenbeckActionNoise
        kwargs["action_noise"] = cls(mean=np.zeros(dim), sigma=std * np.ones(dim))
    return kwargs


# -- the training env --------------------------------------------------------------------------------

def _probe_env(env_id: str, env_kwargs: dict[str, Any], algo: str) -> gym.Space:
    env = EnvSpec(env_id, env_kwargs).make()
    try:
        space = env.action_space
    finally:
        env.close()
    allowed = _ACTIONS.get(algo, _ON_POLICY_ACTIONS)
    if not isinstance(space, allowed):
        fits = [a for a in ALGOS if isinstance(space, _ACTIONS.get(a, _ON_POLICY_ACTIONS))]
        raise RlscapeError(f"{algo.upper()} cannot act in {env_id} (action space {space}); use one of {', '.join(fits)}")
    return space


def _make_venv(env_id: str, env_kwargs: dict[str, Any], hp: Mapping[str, Any], seed: int, atari: bool) -> Any:
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    n_envs = int(hp.get("n_envs", 1))
    if atari:
        venv = make_atari_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    else:
        venv = make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    if "normalize" in hp:
        from stable_baselines3.common.vec_env import VecNormalize

        kw = dict(hp["normalize"])
        if "gamma" in hp:
            kw.setdefault("gamma", hp["gamma"])
        venv = VecNormalize(venv, **kw)
    if int(hp.get("frame_stack", 1)) > 1:
        venv = VecFrameStack(venv, n_stack=int(hp["frame_stack"]))
    return venv


def _wrappers(hp: Mapping[str, Any], atari: bool) -> list[str]:
    out = ["Monitor"]
    if atari:
        out.append("AtariWrapper(terminal_on_life_loss=True, clip_reward=True)")
    if "normalize" in hp:
        out.append(f"VecNormalize({', '.join(f'{k}={v}' for k, v in hp['normalize'].items())})")
    if int(hp.get("frame_stack", 1)) > 1:
        out.append(f"VecFrameStack({int(hp['frame_stack'])})")
    return out


# -- checkpoints ------------------------------------------------------------------------------------

def _checkpoint_callback(run_dir: Path, algo: str, save_every: int, replay_buffer: bool, total: int,
                         start_step: int, episodes: int, wall_before: float, progress: bool) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class CheckpointCallback(BaseCallback):
        """Saves a whole checkpoint at the iteration boundaries at or past every multiple of ``save_every``."""

        def __init__(self) -> None:
            super().__init__()
            self.last_saved = start_step if start_step > 0 else -1
            self.episodes = episodes
            self.t0 = time.perf_counter()
            self.bar: Any = None

        def _on_training_start(self) -> None:
            if progress:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=start_step, unit="step", desc="training", dynamic_ncols=True,
                                mininterval=0.5)

        def _on_rollout_start(self) -> None:
            step = self.model.num_timesteps
            if self.last_saved < 0 or step // save_every > self.last_saved // save_every:
                self.save()

        def _on_step(self) -> bool:
            dones = self.locals.get("dones")
            infos = self.locals.get("infos") or []
            if dones is not None:
                self.episodes += sum(1 for d, i in zip(dones, infos, strict=False) if d and "episode" in i)
            if self.bar is not None:
                self.bar.update(self.model.num_timesteps - self.bar.n)
            return True

        def _on_training_end(self) -> None:
            if self.bar is not None:
                self.bar.close()

        def wall(self) -> float:
            return wall_before + time.perf_counter() - self.t0

        def save(self) -> Path:
            model = self.model
            step = int(model.num_timesteps)
            final = run_dir / CHECKPOINTS / checkpoint_name(step)
            tmp = run_dir / CHECKPOINTS / f".tmp-{checkpoint_name(step)}"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            model.save(tmp / "model.zip")
            vn = model.get_vec_normalize_env()
            if vn is not None:
                vn.save(str(tmp / "vecnormalize.pkl"))
            if algo in OFF_POLICY and replay_buffer:
                model.save_replay_buffer(tmp / "replay_buffer.pkl")
            returns = [float(e["r"]) for e in (model.ep_info_buffer or [])][-100:]
            info = {"step": step, "wall_time_s": round(self.wall(), 3), "recent_returns": returns, "episodes": int(self.episodes)}
            (tmp / CHECKPOINT_FILE).write_text(json.dumps(info, indent=2))
            if final.exists():  # only an identical step can be here (a resume never re-saves its start)
                shutil.rmtree(final)
            os.replace(tmp, final)
            self.last_saved = step
            log.debug("checkpoint %s", final)
            return final

    return CheckpointCallback()


# -- train / resume ---------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RlscapeError(f"{path} is unreadable ({type(exc).__name__}); it is not a training run rlscape can resume") from None


def train(
    env_id: str,
    algo: str,
    *,
    steps: int,
    out: str | Path,
    save_every: int | None = None,
    seed: int = 0,
    n_envs: int | None = None,
    hyperparams: str | Path | Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    device: str = "auto",
    resume: bool = False,
    replay_buffer: bool = True,
    progress: bool | None = None,
) -> Path:
    """Train ``algo`` on ``env_id`` for ``steps`` env steps, saving whole checkpoints into ``out``.

    ``hyperparams`` overrides the shipped defaults (a YAML/JSON file, inline JSON, or a dict).
    ``resume=True`` continues the run in ``out`` from its last checkpoint (the spec must match; a
    larger ``steps`` extends it). Returns ``out``. ``device="auto"``: a GPU when there is one for
    CNN policies, the CPU for MLP policies.
    """
    algo = _check_algo(algo)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise RlscapeError(f"--steps must be a positive integer, not {steps!r}")
    save_every = max(steps // 10, 1) if save_every is None else save_every
    if save_every < 1:
        raise RlscapeError(f"--save-every must be a positive number of steps, not {save_every}")
    if save_every > steps:
        raise RlscapeError(f"--save-every {save_every} is larger than --steps {steps}; use at most {steps}")
    if n_envs is not None and n_envs < 1:
        raise RlscapeError(f"--n-envs must be at least 1, not {n_envs}")
    if device != "auto":
        import torch

        try:
            torch.device(device)
        except RuntimeError:
            raise RlscapeError(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}") from None
    run_dir = Path(out)
    env_kwargs = dict(env_kwargs or {})
    overrides = parse_hyperparams(hyperparams, env_id)
    action_space = _probe_env(env_id, env_kwargs, algo)
    atari = is_atari(env_id)
    hp = resolve_hyperparams(algo, env_id, overrides, n_envs)
    spec = {"env_id": env_id, "env_kwargs": env_kwargs, "algo": algo, "seed": int(seed), "n_envs": int(hp.get("n_envs", 1)),
            "hyperparams": hp, "save_every": int(save_every), "replay_buffer": bool(replay_buffer and algo in OFF_POLICY)}

    if run_dir.exists() and not run_dir.is_dir():
        raise RlscapeError(f"--out {run_dir} is a file; give a folder path")
    existing = run_dir.is_dir() and any(run_dir.iterdir())
    if existing and not resume:
        what = "a training run" if (run_dir / TRAIN_FILE).is_file() else "files"
        raise RlscapeError(f"{run_dir} already holds {what}; pass --resume to continue a run there, or choose another --out")
    checkpoints: list[tuple[int, Path]] = []
    old: dict[str, Any] = {}
    if existing:
        if not (run_dir / TRAIN_FILE).is_file():
            raise RlscapeError(f"{run_dir} holds files but no {TRAIN_FILE}, so it is not a training run to resume; choose another --out")
        old = _read_json(run_dir / TRAIN_FILE)
        changed = [k for k in _IDENTITY if old.get(k) != json.loads(json.dumps(spec[k]))]
        if changed:
            raise RlscapeError(f"{run_dir} holds a different training run (differs in: {', '.join(changed)}); "
                               "resume it with the same options, or choose another --out")
        checkpoints = list_checkpoints(run_dir)
    elif resume:
        log.info("nothing to resume in %s; starting a new training run", run_dir)

    policy = str(hp.get("policy", "MlpPolicy"))
    dev = device
    if device == "auto" and policy != "CnnPolicy":
        dev = "cpu"
    frame_stack = int(hp.get("frame_stack", 1))
    meta = {
        "env_id": env_id, "env_kwargs": env_kwargs, "algo": algo, "seed": int(seed), "hyperparams": hp,
        "atari": atari, "frame_stack": frame_stack, "normalize": "normalize" in hp, "n_envs": spec["n_envs"],
        "wrappers": _wrappers(hp, atari), "policy": policy,
    }
    train_info = dict(spec, steps=int(steps), device=device, wrappers=meta["wrappers"], atari=atari, frame_stack=frame_stack,
                      normalize=meta["normalize"], policy=policy, versions=package_versions())
    start_step = checkpoints[-1][0] if checkpoints else 0
    if checkpoints and start_step >= steps:
        if old.get("status") != "complete":
            atomic_write_text(run_dir / TRAIN_FILE, json.dumps(dict(old, status="complete", finished=old.get("finished") or _now()), indent=2))
        log.info("%s is already trained to step %d (asked: %d); nothing to do", run_dir, start_step, steps)
        return run_dir

    import torch

    threads = torch.get_num_threads()
    if dev == "cpu" and policy != "CnnPolicy":
        torch.set_num_threads(1)  # small MLPs train faster on one thread
    try:
        cls = algo_class(algo)
        if checkpoints:
            step_dir = checkpoints[-1][1]
            ck = _read_json(step_dir / CHECKPOINT_FILE)
            venv = _make_venv(env_id, env_kwargs, {k: v for k, v in hp.items() if k != "normalize"}, seed + start_step, atari)
            if "normalize" in hp:
                from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize

                inner = venv.venv if isinstance(venv, VecFrameStack) else venv
                inner = VecNormalize.load(str(step_dir / "vecnormalize.pkl"), inner)
                inner.training = True
                venv = VecFrameStack(inner, n_stack=frame_stack) if frame_stack > 1 else inner
            model = cls.load(step_dir / "model.zip", env=venv, device=dev)
            if algo in OFF_POLICY and replay_buffer:
                model.load_replay_buffer(step_dir / "replay_buffer.pkl")
            model.set_random_seed(seed + start_step)
            episodes, wall_before = int(ck.get("episodes", 0)), float(ck.get("wall_time_s", 0.0))
            resumed = list(old.get("resumed", [])) + [{"at_step": start_step, "time": _now()}]
            train_info.update(started=old.get("started"), resumed=resumed)
            log.info("resuming %s from step %d to %d", run_dir, start_step, steps)
        else:
            venv = _make_venv(env_id, env_kwargs, hp, seed, atari)
            try:
                model = cls(policy, venv, seed=seed, device=dev, verbose=0, **sb3_kwargs(algo, hp, action_space))
            except Exception as exc:  # noqa: BLE001 - SB3 raises many types for bad hyperparameters
                venv.close()
                msg = str(exc).splitlines()[0] if str(exc) else ""
                raise RlscapeError(f"cannot build {algo.upper()} with these hyperparameters ({type(exc).__name__}: {msg}); fix --hyperparams") from None
            if run_dir.exists():
                shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)  # only hidden, incomplete ones can be here
            (run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / ENV_FILE, json.dumps(meta, indent=2))
            episodes, wall_before = 0, 0.0
            train_info.update(started=_now(), resumed=[])
        for stale in (run_dir / CHECKPOINTS).glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        train_info.update(status="running", finished=None, device_used=str(model.device))
        atomic_write_text(run_dir / TRAIN_FILE, json.dumps(train_info, indent=2))

        show = sys.stderr.isatty() if progress is None else progress
        callback = _checkpoint_callback(run_dir, algo, save_every, replay_buffer, steps, start_step, episodes, wall_before, show)
        try:
            model.learn(steps - start_step, callback=callback, reset_num_timesteps=not checkpoints)
        except BaseException as exc:
            train_info.update(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
            atomic_write_text(run_dir / TRAIN_FILE, json.dumps(train_info, indent=2))
            raise
        if callback.last_saved != model.num_timesteps:
            callback.save()
        venv.close()
    finally:
        torch.set_num_threads(threads)
    train_info.update(status="complete", finished=_now(), final_step=int(model.num_timesteps))
    atomic_write_text(run_dir / TRAIN_FILE, json.dumps(train_info, indent=2))
    log.info("trained %s on %s to step %d → %s", algo.upper(), env_id, model.num_timesteps, run_dir)
    return run_dir
