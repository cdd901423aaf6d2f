"""The algorithm's own next update from a checkpoint's saved training state (methods.md §4, §6, §8).

One :class:`Updater` is built once from a checkpoint (:meth:`Updater.from_checkpoint`): its own
SB3 model loaded from disk (the user's model is never touched), the saved optimizer state (Adam
moments and step counts), for off-policy agents the saved replay buffer, and the *training* env
pipeline rebuilt from the checkpoint: SB3's ``make_vec_env`` / ``make_atari_env`` (AtariWrapper as
trained: life loss ends an episode, clipped rewards), VecNormalize loaded from the checkpoint's
``vecnormalize.pkl`` with frozen statistics (``training=False``) but ``norm_reward`` as trained,
and frame stacking. So the data of an update passes through the pipeline the agent trained in,
rewards included.

:meth:`Updater.step` takes one update with the agent's own SB3 loss code and returns the updated
parameters and Δθ. By default every step starts from the saved state (restored per sample), so
``step(seed)`` is repeatable and samples are independent; ``from_saved=False`` continues from the
current state (a sequence of updates, e.g. a rejection rule with :meth:`state` / :meth:`restore`).

Modes:

* ``"train"`` — the algorithm's full next ``train()``: PPO/A2C/TRPO on a fresh rollout of the
  training size (``n_steps × n_envs``); SAC/TD3/DDPG one gradient step of ``train()`` (critic,
  entropy coefficient, actor, targets; TD3/DDPG with the delayed actor update included); DQN one
  Q step.
* ``"actor"`` — the post-update-return-distribution sample rule (methods.md §8): SAC/TD3/DDPG one
  actor Adam step on an independent minibatch drawn uniformly *with replacement* from the saved
  buffer (critic, targets and entropy coefficient frozen; SB3's actor loss); PPO/A2C/TRPO the
  first minibatch step of ``train()`` on a fresh rollout.

Random streams: every step runs inside :func:`isolated_rng`, seeded from the step's seed; the
caller's global torch / numpy / python RNG states are restored afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
import math
import random
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlscape.core.errors import RlscapeError
from rlscape.core.params import NamedArrays, select_names

log = logging.getLogger(__name__)

ON_POLICY = ("ppo", "a2c", "trpo")
OFF_POLICY = ("sac", "td3", "ddpg", "dqn")
MODES = ("train", "actor")
OPTIMIZERS = ("saved", "fresh")
#: methods.md §8: the reference draws minibatches of 256 for the actor-only step
ACTOR_BATCH = 256
UPDATE_STREAM = 0x0DA7E  # seed-sequence tag of an update's random streams
_OPTIMIZER_FILES = {"ppo": ("policy.optimizer",), "a2c": ("policy.optimizer",), "trpo": ("policy.optimizer",),
                    "dqn": ("policy.optimizer",), "sac": ("actor.optimizer", "critic.optimizer"),
                    "td3": ("actor.optimizer", "critic.optimizer"), "ddpg": ("actor.optimizer", "critic.optimizer")}


@dataclass(frozen=True)
class StepSeeds:
    """The seeds of one update, all derived from its seed: ``rng`` seeds torch, numpy and python
    inside :func:`isolated_rng`; ``env`` the resets of the rollout envs; ``batch`` the actor-only
    minibatch indices (``numpy.random.default_rng(batch)``)."""

    rng: int
    env: int
    batch: int

    @classmethod
    def of(cls, seed: int) -> StepSeeds:
        s = np.random.SeedSequence([int(seed), UPDATE_STREAM]).generate_state(3)
        return cls(int(s[0] % (2**31 - 1)), int(s[1] % (2**31 - 1)), int(s[2]))


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Seed torch (CPU), numpy and python's global RNGs with ``seed`` for the body; restore the
    caller's states afterwards (SB3 samples actions and minibatches from the global RNGs)."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only, as torch.manual_seed seeds it; torch.manual_seed also queues a
        # CUDA seeding call with a formatted stack on every call where CUDA is not initialised
        # (about 1 ms, and a queue that grows with every update)
        torch.default_generator.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


@dataclass(frozen=True)
class UpdateResult:
    """One update: the selected parameters after it, the step Δθ, and what it took.

    ``params`` / ``delta``: name → array (the policy's own parameter names and shapes, float32).
    ``indices``: the replay rows of an actor-only minibatch, shape (batch,), else None.
    """

    params: NamedArrays
    delta: NamedArrays
    gradient_steps: int  # steps of policy.optimizer (SAC/TD3/DDPG: actor.optimizer; TRPO: its critic's, the actor moves by CG)
    rollout_steps: int  # env steps collected (0 off-policy)
    seed: int
    indices: np.ndarray | None = None

    @property
    def norm(self) -> float:
        """‖Δθ‖ over the selected parameters."""
        return float(math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in self.delta.values())))


@dataclass
class UpdaterState:
    """A deep snapshot of everything an update changes: networks (targets included), optimizer
    states, saved tensors (SAC's log entropy coefficient), counters, the replay buffer's position
    and the updater's seed stream."""

    policy: dict[str, torch.Tensor]
    optimizers: dict[str, dict[str, Any]]
    tensors: dict[str, torch.Tensor]
    counters: dict[str, Any]
    buffer: tuple[int, bool] | None
    rng: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActorRowTable:
    """Per-row quantities of the actor steps from one saved θ (:meth:`Updater.actor_row_table`):
    ``keys`` (U,) sorted replay-row keys; ``inputs`` / ``deltas``: ``id(linear)`` → ``(U, in)`` its
    inputs and ``(U, out)`` the loss gradient with respect to its outputs, for minibatches of
    ``batch_size`` rows."""

    keys: np.ndarray
    batch_size: int
    inputs: dict[int, torch.Tensor]
    deltas: dict[int, torch.Tensor]

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Row positions of ``keys`` in the table (every key must be in it)."""
        pos = np.searchsorted(self.keys, keys)
        if np.any(pos >= self.keys.size) or np.any(self.keys[np.minimum(pos, self.keys.size - 1)] != keys):
            raise RlscapeError("the row table lacks rows these updates draw; build it from their rows (actor_step_rows)")
        return pos


def _read_data(zip_path: Path) -> tuple[dict[str, Any], list[str]]:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            return json.loads(zf.read("data")), zf.namelist()
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
        raise RlscapeError(f"{zip_path} is not a readable Stable-Baselines3 model ({type(exc).__name__}); give a model saved with model.save()") from None


def _no_optimizer(zip_path: Path, missing: str) -> str:
    return (f"{zip_path} holds no optimizer state ({missing} missing); the update needs the full training state, "
            "which `rlscape train` keeps (model.zip with its optimizers, and the replay buffer for off-policy agents)")


def training_venv(agent: Any, n_envs: int, vecnormalize: Path | None) -> Any:
    """The training env pipeline of a checkpoint as an SB3 VecEnv of ``n_envs`` envs.

    SB3's ``make_vec_env`` (``make_atari_env`` for Atari, whose AtariWrapper ends an episode on a
    lost life and clips rewards, as in training), VecNormalize with the saved statistics frozen
    (``training=False``; ``norm_obs`` / ``norm_reward`` as saved), VecFrameStack as trained.
    """
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize

    spec = agent.env
    if spec.atari:
        venv = make_atari_env(spec.env_id, n_envs=n_envs, env_kwargs=dict(spec.env_kwargs))
    else:
        venv = make_vec_env(spec.env_id, n_envs=n_envs, env_kwargs=dict(spec.env_kwargs))
    if vecnormalize is not None:
        try:
            venv = VecNormalize.load(str(vecnormalize), venv)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is the user's file
            venv.close()
            raise RlscapeError(f"cannot read VecNormalize statistics {vecnormalize} ({type(exc).__name__}); pass the vecnormalize.pkl saved with the model") from None
        venv.training = False
    if spec.frame_stack > 1:
        venv = VecFrameStack(venv, n_stack=spec.frame_stack)
    return venv


class Updater:
    """The algorithm's own update from one checkpoint's saved state (see the module docstring).

    Build with :meth:`from_checkpoint`; the object owns its SB3 model and envs (call
    :meth:`close`, or use it as a context manager).
    """

    def __init__(self, model: Any, venv: Any, algo: str, which: str, info: dict[str, Any]) -> None:
        self.model, self.venv, self.algo, self.which, self.info = model, venv, algo, which, info
        self.names = select_names([n for n, _ in model.policy.named_parameters()], which)
        self.rng = np.random.default_rng(info.get("seed_stream", 0))
        self.saved = self.state()

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        *,
        env_id: str | None = None,
        algo: str | None = None,
        vecnormalize: str | Path | None = None,
        update_algo: str | None = None,
        hyperparams: Mapping[str, Any] | None = None,
        optimizer: str = "saved",
        which: str = "actor",
        agent: Any = None,
    ) -> Updater:
        """Load a checkpoint's training state for updates.

        ``update_algo``: update with another on-policy algorithm than the checkpoint's (its policy
        weights copied into a fresh model; implies ``optimizer="fresh"``), as the cliff dive does.
        ``hyperparams``: overrides of the algorithm's attributes (e.g. ``n_envs``, ``n_steps``,
        ``learning_rate``, ``batch_size``, ``n_epochs``). ``optimizer``: ``saved`` (the checkpoint's
        optimizer state, the default) or ``fresh``. ``which``: the parameters reported
        (``actor``, ``critic``, ``all``).
        """
        if optimizer not in OPTIMIZERS:
            raise RlscapeError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {optimizer!r}")
        # loading builds networks and envs, which draw from the global RNGs: keep the caller's untouched
        with isolated_rng(0):
            return cls._load(checkpoint, env_id, algo, vecnormalize, update_algo, hyperparams, optimizer, which, agent)

    @classmethod
    def _load(cls, checkpoint: str | Path, env_id: str | None, algo: str | None, vecnormalize: str | Path | None,
              update_algo: str | None, hyperparams: Mapping[str, Any] | None, optimizer: str, which: str, agent: Any) -> Updater:
        from stable_baselines3.common.logger import Logger

        from rlscape.core.policy import algo_class, load_checkpoint, resolve_model_zip

        zip_path = resolve_model_zip(checkpoint)
        data, files = _read_data(zip_path)
        if optimizer == "saved" and update_algo is None and not any(f.endswith("optimizer.pth") for f in files):
            raise RlscapeError(_no_optimizer(zip_path, "optimizer .pth files"))
        agent = agent if agent is not None else load_checkpoint(checkpoint, env_id, algo=algo, vecnormalize=vecnormalize)
        algo = agent.algo
        if algo not in ON_POLICY + OFF_POLICY:
            raise RlscapeError(f"updates need a Stable-Baselines3 checkpoint (PPO, A2C, TRPO, SAC, TD3, DDPG, DQN), not a {algo} policy")
        target = (update_algo or algo).lower()
        if target != algo and not (target in ON_POLICY and algo in ON_POLICY):
            raise RlscapeError(f"a {algo.upper()} checkpoint can be updated with {algo}" + (" or another on-policy algorithm (ppo, a2c, trpo)" if algo in ON_POLICY else "") + f", not {target}")
        fresh = optimizer == "fresh" or target != algo
        if not fresh:
            missing = [f"{n}.pth" for n in _OPTIMIZER_FILES[algo] if f"{n}.pth" not in files]
            if missing:
                raise RlscapeError(_no_optimizer(zip_path, ", ".join(missing)))
        buffer_path = zip_path.parent / "replay_buffer.pkl"
        if algo in OFF_POLICY and not buffer_path.is_file():
            raise RlscapeError(f"the update of a {algo.upper()} checkpoint needs its replay buffer {buffer_path}; "
                               "`rlscape train` keeps it (or save it with model.save_replay_buffer())")
        overrides = dict(hyperparams or {})
        n_envs = int(overrides.pop("n_envs", data.get("n_envs", 1)) or 1)
        vn = Path(vecnormalize) if vecnormalize else zip_path.parent / "vecnormalize.pkl"
        venv = training_venv(agent, n_envs, vn if vn.is_file() else None)
        try:
            src = algo_class(algo).load(zip_path, env=venv, device="cpu", **({} if fresh else overrides))
            if fresh:
                keep = {k: v for k, v in (src.policy_kwargs or {}).items() if k not in ("optimizer_class", "optimizer_kwargs")}
                model = algo_class(target)(type(src.policy), venv, gamma=float(src.gamma), policy_kwargs=keep, device="cpu",
                                           verbose=0, **overrides)
                model.policy.load_state_dict(src.policy.state_dict(), strict=True)
            else:
                model = src
        except RlscapeError:
            venv.close()
            raise
        except Exception as exc:  # noqa: BLE001 - SB3 raises many types for a bad file or option
            venv.close()
            msg = str(exc).splitlines()[0] if str(exc) else ""
            raise RlscapeError(f"cannot load {zip_path} with its training state for an update ({type(exc).__name__}: {msg})") from None
        model.set_logger(Logger(folder=None, output_formats=[]))
        if model.ep_info_buffer is None:
            model.ep_info_buffer, model.ep_success_buffer = deque(maxlen=100), deque(maxlen=100)
        if algo in OFF_POLICY:
            model.load_replay_buffer(buffer_path)
        info = {"checkpoint": str(zip_path.resolve()), "algo": algo, "update_algo": target, "optimizer": "fresh" if fresh else "saved",
                "n_envs": n_envs, "hyperparams": overrides, "vecnormalize": str(vn) if vn.is_file() else None,
                "norm_reward": bool(getattr(model.get_vec_normalize_env(), "norm_reward", False))}
        return cls(model, venv, target, which, info)

    def close(self) -> None:
        self.venv.close()

    def __enter__(self) -> Updater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- state ------------------------------------------------------------------------------------
    def _optimizers(self) -> dict[str, Any]:
        names, _ = self.model._get_torch_save_params()
        out = {}
        for name in names:
            obj = self.model
            for part in name.split("."):
                obj = getattr(obj, part)
            if isinstance(obj, torch.optim.Optimizer):
                out[name] = obj
        return out

    def _tensors(self) -> dict[str, torch.Tensor]:
        _, names = self.model._get_torch_save_params()
        return {n: getattr(self.model, n) for n in names}

    def state(self) -> UpdaterState:
        """A deep copy of everything an update changes (see :class:`UpdaterState`)."""
        m = self.model
        buf = getattr(m, "replay_buffer", None)
        return UpdaterState(
            policy={k: v.detach().clone() for k, v in m.policy.state_dict().items()},
            optimizers={k: copy.deepcopy(o.state_dict()) for k, o in self._optimizers().items()},
            tensors={k: v.detach().clone() for k, v in self._tensors().items()},
            counters={"_n_updates": int(m._n_updates), "num_timesteps": int(m.num_timesteps)},
            buffer=(int(buf.pos), bool(buf.full)) if buf is not None else None,
            rng=copy.deepcopy(dict(self.rng.bit_generator.state)),
        )

    def restore(self, state: UpdaterState) -> None:
        """Put the networks, optimizer states, counters, buffer position and seed stream back.

        Transitions written into the replay buffer after the snapshot stay in its memory but
        beyond the restored position (they are overwritten first, never sampled)."""
        m = self.model
        m.policy.load_state_dict(state.policy, strict=True)
        for k, o in self._optimizers().items():
            o.load_state_dict(copy.deepcopy(state.optimizers[k]))
        with torch.no_grad():
            for k, t in self._tensors().items():
                t.copy_(state.tensors[k])
        m._n_updates, m.num_timesteps = state.counters["_n_updates"], state.counters["num_timesteps"]
        if state.buffer is not None:
            m.replay_buffer.pos, m.replay_buffer.full = state.buffer
        self.rng.bit_generator.state = copy.deepcopy(state.rng)

    def parameters(self) -> NamedArrays:
        """The selected parameters now, name → float32 array."""
        table = dict(self.model.policy.named_parameters())
        return {n: table[n].detach().cpu().numpy().astype(np.float32, copy=True) for n in self.names}

    # -- one update -------------------------------------------------------------------------------
    def step(self, seed: int | None = None, *, mode: str = "train", batch_size: int = ACTOR_BATCH, from_saved: bool = True) -> UpdateResult:
        """One update (``mode`` ``train`` or ``actor``, see the module docstring) → :class:`UpdateResult`.

        ``seed`` (default: the next from the updater's own stream) fixes every random choice of
        the update (:class:`StepSeeds`). ``from_saved``: start from the state saved at construction
        (repeatable, independent samples) or continue from the current state. ``batch_size``: the
        actor-only minibatch (off-policy, ``mode="actor"``).
        """
        if mode not in MODES:
            raise RlscapeError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "actor" and self.algo == "dqn":
            raise RlscapeError("DQN has no separate actor; its update is the Q step (mode 'train')")
        if seed is None:
            seed = int(self.rng.integers(0, 2**31 - 1))
        if from_saved:  # the saved networks and optimizers; the seed stream goes on
            stream = copy.deepcopy(dict(self.rng.bit_generator.state))
            self.restore(self.saved)
            self.rng.bit_generator.state = stream
        seeds = StepSeeds.of(seed)
        before = self.parameters()
        counted = [0]
        main = self._main_optimizer()
        handle = main.register_step_post_hook(lambda *_: counted.__setitem__(0, counted[0] + 1))
        indices = None
        rollout = 0
        try:
            with isolated_rng(seeds.rng):
                if self.algo in ON_POLICY:
                    rollout = self._rollout(seeds.env)
                    self._on_policy_train(mode)
                elif mode == "train":
                    self._off_policy_train()
                else:
                    indices = self._actor_step(seeds.batch, batch_size)
        finally:
            handle.remove()
        after = self.parameters()
        return UpdateResult(after, {n: after[n] - before[n] for n in self.names}, counted[0], rollout, int(seed), indices)

    def _main_optimizer(self) -> torch.optim.Optimizer:
        return self.model.actor.optimizer if self.algo in ("sac", "td3", "ddpg") else self.model.policy.optimizer

    def _rollout(self, env_seed: int) -> int:
        from stable_baselines3.common.callbacks import CallbackList

        m = self.model
        m.env.seed(env_seed)
        m._last_obs = m.env.reset()
        m._last_episode_starts = np.ones((m.env.num_envs,), dtype=bool)
        callback = CallbackList([])
        callback.init_callback(m)
        if not m.collect_rollouts(m.env, callback, m.rollout_buffer, n_rollout_steps=m.n_steps):
            raise RlscapeError("the rollout for the update stopped early; check the env")
        return int(m.n_steps * m.env.num_envs)

    def _on_policy_train(self, mode: str) -> None:
        m = self.model
        if mode == "train":
            m.train()
            return
        # the first minibatch step of train(): one epoch, one minibatch (SB3's own loss code)
        buffer, epochs = m.rollout_buffer, getattr(m, "n_epochs", None)
        full = buffer.get
        buffer.get = lambda *a, **k: itertools.islice(full(*a, **k), 1)  # type: ignore[method-assign]
        if epochs is not None:
            m.n_epochs = 1
        try:
            m.train()
        finally:
            del buffer.get
            if epochs is not None:
                m.n_epochs = epochs

    def _off_policy_train(self) -> None:
        m = self.model
        if m.replay_buffer.size() < m.batch_size:
            raise RlscapeError(f"the replay buffer holds {m.replay_buffer.size()} transitions, fewer than one batch of {m.batch_size}")
        delay = int(getattr(m, "policy_delay", 1))
        if self.algo in ("td3", "ddpg"):  # so that this gradient step includes the (delayed) actor update
            m._n_updates = (m._n_updates // delay + 1) * delay - 1
        m.train(gradient_steps=1, batch_size=m.batch_size)

    def minibatch_indices(self, batch_seed: int, batch_size: int) -> np.ndarray:
        """Replay rows drawn uniformly with replacement from the filled part of the buffer, (batch_size,)."""
        buf = self.model.replay_buffer
        if buf.size() < 1:
            raise RlscapeError("the replay buffer is empty; an actor step needs saved transitions")
        rng = np.random.default_rng(batch_seed)
        if buf.optimize_memory_usage and buf.full:  # SB3's rule: the row at pos has no valid next observation
            return (rng.integers(1, buf.buffer_size, size=batch_size) + buf.pos) % buf.buffer_size
        return rng.integers(0, buf.buffer_size if buf.full else buf.pos, size=batch_size)

    # -- many independent actor steps at once (TD3 / DDPG) -----------------------------------------
    def batched_actor_steps_supported(self) -> bool:
        """Whether :meth:`actor_steps` applies: a TD3/DDPG actor and critic that are chains of
        ``Linear`` layers and elementwise activations on flat vector observations (rows never mix),
        and the actor's optimizer plain Adam as SB3 builds it (one parameter group, no weight
        decay, AMSGrad, maximize, foreach, fused, capturable or differentiable variants)."""
        from rlscape.core.fastmlp import _chain, _flat_vector_obs

        m = self.model
        if self.algo not in ("td3", "ddpg"):
            return False
        a, c = m.actor, m.critic
        if not (_flat_vector_obs(a, a.features_extractor) and _flat_vector_obs(c, c.features_extractor)):
            return False
        if _chain(a.mu, "mu") is None or any(_chain(q, "q") is None for q in c.q_networks):
            return False
        linear = {id(p) for mod in a.modules() if isinstance(mod, torch.nn.Linear) for p in mod.parameters()}
        if {id(p) for p in a.parameters()} != linear:
            return False
        opt = a.optimizer
        if type(opt) is not torch.optim.Adam or len(opt.param_groups) != 1:
            return False
        g = opt.param_groups[0]
        plain = (g.get("weight_decay", 0) == 0 and not g.get("amsgrad") and not g.get("maximize") and not g.get("foreach")
                 and not g.get("fused") and not g.get("capturable") and not g.get("differentiable")
                 and not g.get("decoupled_weight_decay") and not isinstance(g.get("lr"), torch.Tensor))
        return bool(plain)

    def actor_step_rows(self, seeds: list[int], batch_size: int = ACTOR_BATCH) -> np.ndarray:
        """The replay rows the actor steps of ``seeds`` draw, ``(K, batch_size)``, as keys
        ``index · n_envs + env`` (the env of each row drawn as SB3's ``_get_samples`` draws it)."""
        n_envs = int(self.model.replay_buffer.n_envs)
        rows = np.empty((len(seeds), batch_size), np.int64)
        for i, seed in enumerate(seeds):
            st = StepSeeds.of(seed)
            batch = self.minibatch_indices(st.batch, batch_size)
            # SB3's _get_samples draws each row's env from numpy's global RNG, seeded as in step()
            env_idx = np.random.RandomState(st.rng % 2**32).randint(0, high=n_envs, size=(batch_size,))
            rows[i] = batch * n_envs + env_idx
        return rows

    def actor_row_table(self, keys: np.ndarray, batch_size: int = ACTOR_BATCH, *, row_block: int = 1024) -> ActorRowTable:
        """For the replay rows ``keys`` (as :meth:`actor_step_rows` gives them): each actor
        ``Linear`` layer's input and the gradient of a ``batch_size``-row minibatch's actor loss with
        respect to its output, at the saved θ with the critic frozen — what every actor step that
        draws the row uses. Rows are computed in blocks of ``row_block``; a row's numbers do not
        depend on its block (the products' rows are invariant: tested against :meth:`step`)."""
        from torch import nn

        m = self.model
        self.restore(self.saved)
        buf = m.replay_buffer
        n_envs = int(buf.n_envs)
        unique = np.unique(np.asarray(keys, np.int64))
        linears = [mod for mod in m.actor.modules() if isinstance(mod, nn.Linear)]
        inputs: dict[int, list[torch.Tensor]] = {id(mod): [] for mod in linears}
        deltas: dict[int, list[torch.Tensor]] = {id(mod): [] for mod in linears}
        vn = m.get_vec_normalize_env()
        m.policy.set_training_mode(True)
        try:
            with self._critic_frozen():
                for r0 in range(0, unique.size, row_block):
                    u = unique[r0 : r0 + row_block]
                    obs = buf.to_torch(buf._normalize_obs(buf.observations[u // n_envs, u % n_envs, :], vn))
                    seen: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
                    hooks = [mod.register_forward_hook(lambda mod, inp, out, seen=seen: seen.append((mod, inp[0].detach(), out)))
                             for mod in linears]
                    try:
                        q = m.critic.q1_forward(obs, m.actor(obs))
                    finally:
                        for hook in hooks:
                            hook.remove()
                    # −mean over a minibatch of batch_size rows: every row's share of the loss is −q/batch_size
                    loss = -(q.sum() / batch_size)
                    grads = torch.autograd.grad(loss, [out for _, _, out in seen])
                    for (mod, inp, _), d in zip(seen, grads, strict=True):
                        inputs[id(mod)].append(inp)
                        deltas[id(mod)].append(d)
        finally:
            m.policy.set_training_mode(False)
        return ActorRowTable(unique, batch_size, {k: torch.cat(v) for k, v in inputs.items()},
                             {k: torch.cat(v) for k, v in deltas.items()})

    def actor_steps(self, seeds: list[int], batch_size: int = ACTOR_BATCH, *, group: int = 8, row_block: int = 1024,
                    visit: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
                    table: ActorRowTable | None = None) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """``len(seeds)`` independent actor steps from the saved state at once: the steps Δθ = θ' − θ
        (name → ``(K, *shape)`` float32, every parameter of the actor) and the minibatch rows
        ``(K, batch_size)``.

        Bit for bit the updates :meth:`step` takes one at a time (``mode="actor"``,
        ``from_saved=True``), for :meth:`batched_actor_steps_supported` agents (tested): every
        update starts from the same θ with the critic frozen, so a replay row's activations and its
        gradient with respect to every ``Linear`` output are the same in every minibatch that
        draws it (:meth:`actor_row_table`: computed once per distinct row; pass ``table`` to share
        one among calls, e.g. a PURD's chunks). Then each update's weight gradient is its own rows'
        product ``δᵀ h`` (one batched product for ``group`` updates, the operand order of torch's
        ``Linear`` backward), its bias gradient their sum, and Adam's step is applied with the same
        elementwise operations as ``torch.optim.Adam`` from the saved moments and step count. On a
        40k-row Hopper buffer 250 updates share 32k distinct rows of their 64k draws.
        ``visit(k0, after)`` is called with the updated parameters θ' of updates ``k0 … k0 + k − 1``
        (name → ``(k, *shape)``) while they are at hand. The model is not changed.
        """
        from torch import nn

        m = self.model
        keys = self.actor_step_rows(seeds, batch_size)
        if table is None:
            table = self.actor_row_table(keys, batch_size, row_block=row_block)
        self.restore(self.saved)
        K = len(seeds)
        inverse_t = torch.from_numpy(table.positions(keys))
        if table.batch_size != batch_size:
            raise RlscapeError(f"the row table was computed for minibatches of {table.batch_size}, not {batch_size}")
        linears = [mod for mod in m.actor.modules() if isinstance(mod, nn.Linear)]
        m._update_learning_rate([m.actor.optimizer])
        opt = m.actor.optimizer
        grp = opt.param_groups[0]
        lr, (beta1, beta2), eps = float(grp["lr"]), grp["betas"], float(grp["eps"])
        names = {id(p): n for n, p in m.policy.named_parameters()}
        out = {names[id(p)]: torch.empty((K, *p.shape), dtype=p.dtype) for mod in linears for p in mod.parameters()}
        with torch.no_grad():
            for k0 in range(0, K, group):
                idx = inverse_t[k0 : k0 + group]
                shape = (idx.shape[0], batch_size)
                flat = idx.reshape(-1)
                after: dict[str, torch.Tensor] = {}
                for mod in linears:
                    h = table.inputs[id(mod)].index_select(0, flat).view(*shape, -1)  # (k, B, in)
                    d = table.deltas[id(mod)].index_select(0, flat).view(*shape, -1)  # (k, B, out)
                    grads_of = {id(mod.weight): torch.bmm(d.transpose(1, 2), h)}  # as Linear's backward: gradᵀ · input
                    if mod.bias is not None:
                        grads_of[id(mod.bias)] = d.sum(1)
                    for p in mod.parameters():
                        new = _adam(p.detach(), grads_of[id(p)], opt.state.get(p, {}), lr, beta1, beta2, eps)
                        torch.sub(new, p.detach(), out=out[names[id(p)]][k0 : k0 + group])  # θ' − θ, as step() reports it
                        after[names[id(p)]] = new
                if visit is not None:
                    visit(k0, after)
        return out, keys // int(m.replay_buffer.n_envs)

    @contextlib.contextmanager
    def _critic_frozen(self) -> Iterator[None]:
        """The critic's parameters (those it does not share with the actor) frozen for the body.

        The critic's own gradient of the actor loss is never applied; freezing it before the forward
        pass keeps autograd from computing it (freezing after the forward saves nothing: the weight
        gradient is already planned). The actor's gradient is the same."""
        m = self.model
        shared = {id(p) for p in m.actor.parameters()}
        frozen = [p for p in m.critic.parameters() if p.requires_grad and id(p) not in shared]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def _actor_step(self, batch_seed: int, batch_size: int) -> np.ndarray:
        """One actor step, critic / targets / entropy coefficient frozen (SB3's actor loss)."""
        m = self.model
        indices = self.minibatch_indices(batch_seed, batch_size)
        m.policy.set_training_mode(True)
        m._update_learning_rate([m.actor.optimizer])
        data = m.replay_buffer._get_samples(indices, env=m.get_vec_normalize_env())
        with self._critic_frozen():
            if self.algo == "sac":
                if m.use_sde:
                    m.actor.reset_noise()
                actions_pi, log_prob = m.actor.action_log_prob(data.observations)
                log_prob = log_prob.reshape(-1, 1)
                ent_coef = torch.exp(m.log_ent_coef.detach()) if m.ent_coef_optimizer is not None else m.ent_coef_tensor
                q_values_pi = torch.cat(m.critic(data.observations, actions_pi), dim=1)
                min_qf_pi, _ = torch.min(q_values_pi, dim=1, keepdim=True)
                actor_loss = (ent_coef * log_prob - min_qf_pi).mean()
            else:
                actor_loss = -m.critic.q1_forward(data.observations, m.actor(data.observations)).mean()
            m.actor.optimizer.zero_grad()
            actor_loss.backward()
        m.actor.optimizer.step()
        m.critic.optimizer.zero_grad(set_to_none=True)  # the critic's gradient of this loss is never applied
        m.policy.set_training_mode(False)
        return indices


def _adam(param: torch.Tensor, grad: torch.Tensor, state: Mapping[str, Any], lr: float, beta1: float, beta2: float,
          eps: float) -> torch.Tensor:
    """``torch.optim.Adam``'s single-tensor step (no weight decay, AMSGrad or maximize) for a stack
    of gradients ``(k, *shape)`` of one parameter, from its ``state`` (moments, step count; empty:
    a first step): the updated parameters ``(k, *shape)``, with the same elementwise operations."""
    exp_avg = state.get("exp_avg", torch.zeros_like(param))
    exp_avg_sq = state.get("exp_avg_sq", torch.zeros_like(param))
    step = float(state["step"]) + 1 if "step" in state else 1.0
    m = exp_avg.expand_as(grad).lerp(grad, 1 - beta1)
    v = exp_avg_sq.expand_as(grad).mul(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    denom = (v.sqrt_() / bias_correction2**0.5).add_(eps)
    return param.expand_as(grad).addcdiv(m, denom, value=-step_size)
