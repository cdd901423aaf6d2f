"""Validated specs: what a run asks for. A spec is the identity of a run directory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from rlscape.core.errors import RlscapeError

if TYPE_CHECKING:
    from rlscape.core.evaluate import Budget

M = TypeVar("M", bound=BaseModel)


class EvalSpec(BaseModel):
    """How each point is evaluated (methods.md §3): ``episodes`` per point, episodes until ``steps``
    steps, or an adaptive budget (``target_sem``: episodes added in rounds where the SEM is above it,
    between ``min_episodes`` and ``max_episodes``; :mod:`rlscape.core.budgets`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    episodes: int | None = 20
    steps: int | None = None
    seed: int = 0
    deterministic: bool = False
    target_sem: float | None = None
    min_episodes: int | None = None  # adaptive budgets only (default 10)
    max_episodes: int | None = None  # adaptive budgets only (default 400)
    #: adaptive budgets only: the allocation rule (2 = the √2 ladder; the first, doubling rule was 1
    #: and its runs are not resumed under this one: their spec lacks the key)
    adaptive_rule: Literal[2] | None = None

    @model_validator(mode="before")
    @classmethod
    def _adaptive_defaults(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("target_sem") is not None:
            data = {**data, "episodes": data.get("episodes"), "min_episodes": data.get("min_episodes") or 10,
                    "max_episodes": data.get("max_episodes") or 400, "adaptive_rule": data.get("adaptive_rule") or 2}
        return data

    @model_serializer(mode="wrap")
    def _without_unused(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        """A fixed budget's spec has no adaptive fields (specs written before them keep their identity)."""
        out = handler(self)
        if self.target_sem is None:
            for key in ("target_sem", "min_episodes", "max_episodes", "adaptive_rule"):
                out.pop(key, None)
        return out

    @classmethod
    def from_budget(cls, episodes: int | str | None, steps: int | None, seed: int = 0, deterministic: bool = False,
                    target_sem: float | None = None, min_episodes: int | None = None,
                    max_episodes: int | None = None) -> EvalSpec:
        """The evaluation spec for user flags: 20 episodes when neither budget is given;
        ``episodes="auto"`` (or a ``target_sem`` alone) for an adaptive budget."""
        adaptive = isinstance(episodes, str) and episodes.strip().lower() == "auto"
        if isinstance(episodes, str) and not adaptive:
            try:
                episodes = int(episodes)
            except ValueError:
                raise RlscapeError(f"--episodes must be a positive integer or 'auto', not {episodes!r}") from None
        if adaptive or (target_sem is not None and episodes is None and steps is None):
            if target_sem is None:
                raise RlscapeError("--episodes auto needs --target-sem S: the standard error of the mean return to reach at every point")
            if steps is not None:
                raise RlscapeError("give --episodes auto or --steps, not both")
            return validated(cls, episodes=None, steps=None, seed=seed, deterministic=deterministic, target_sem=target_sem,
                             min_episodes=min_episodes, max_episodes=max_episodes)
        if target_sem is not None or min_episodes is not None or max_episodes is not None:
            raise RlscapeError("--target-sem, --min-episodes and --max-episodes go with --episodes auto")
        if episodes is None and steps is None:
            episodes = 20
        return validated(cls, episodes=episodes, steps=steps, seed=seed, deterministic=deterministic)

    @property
    def adaptive(self) -> bool:
        """Whether episodes are added in rounds until the SEM reaches :attr:`target_sem`."""
        return self.target_sem is not None

    def budget(self, what: str = "this analysis") -> Budget:
        """The fixed budget; a one-line error for an adaptive one where ``what`` does not support it."""
        from rlscape.core.evaluate import Budget

        if self.adaptive:
            raise RlscapeError(f"--episodes auto is not supported by {what}; give --episodes N or --steps S")
        return Budget(episodes=self.episodes, steps=self.steps)

    @model_validator(mode="after")
    def _budget(self) -> EvalSpec:
        if self.target_sem is not None:
            if self.episodes is not None or self.steps is not None:
                raise ValueError("an adaptive budget (--target-sem) goes with --episodes auto, not with a number of episodes or --steps")
            if not (math.isfinite(self.target_sem) and self.target_sem > 0):
                raise ValueError(f"--target-sem must be a positive number, not {self.target_sem}")
            assert self.min_episodes is not None and self.max_episodes is not None  # filled in by _adaptive_defaults
            if self.min_episodes < 2:
                raise ValueError(f"--min-episodes must be at least 2 (a variance needs two episodes), not {self.min_episodes}")
            if self.max_episodes < self.min_episodes:
                raise ValueError(f"--max-episodes ({self.max_episodes}) must be at least --min-episodes ({self.min_episodes})")
            if self.seed < 0:
                raise ValueError(f"--seed must be ≥ 0, not {self.seed}")
            return self
        if self.min_episodes is not None or self.max_episodes is not None:
            raise ValueError("--min-episodes and --max-episodes go with --episodes auto --target-sem S")
        if self.steps is not None and self.episodes is not None:
            raise ValueError("give --episodes or --steps, not both")
        if self.steps is None and self.episodes is None:
            raise ValueError("give --episodes or --steps")
        if self.episodes is not None and self.episodes < 1:
            raise ValueError(f"--episodes must be a positive integer, not {self.episodes}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps must be a positive integer, not {self.steps}")
        if self.seed < 0:
            raise ValueError(f"--seed must be ≥ 0, not {self.seed}")
        return self


class CheckpointSpec(BaseModel):
    """The fields every analysis of one checkpoint shares: where it is and how to load it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str
    env_id: str | None = None
    vecnormalize: str | None = None
    algo: str | None = None

    @field_validator("checkpoint", "vecnormalize")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        return None if v is None else str(Path(v).expanduser().resolve())


class SurfaceSpec(BaseModel):
    """A plane (two directions) or a line (one direction, or θ1→θ2 interpolation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["plane", "line"]
    checkpoint: str
    env_id: str | None = None
    vecnormalize: str | None = None
    algo: str | None = None
    grid: tuple[int, ...]
    ranges: tuple[tuple[float, float], ...]
    directions: tuple[str, ...]
    normalization: Literal["filter", "layer", "none"] = "filter"
    bias: Literal["ignore", "normalize"] = "ignore"
    params: Literal["actor", "critic", "all"] = "actor"
    evaluation: EvalSpec = EvalSpec()
    # scale convention of non-random directions (gradient, files): None = gradient `match`, files as stored
    scale: Literal["unit", "match", "raw"] | None = None
    gradient_episodes: int = 100  # episodes of the REINFORCE estimate behind a `gradient` direction

    @field_validator("checkpoint", "vecnormalize")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        return None if v is None else str(Path(v).expanduser().resolve())

    @model_validator(mode="after")
    def _shape(self) -> SurfaceSpec:
        n = 2 if self.kind == "plane" else 1
        if len(self.grid) != n or len(self.ranges) != n or len(self.directions) != n:
            raise ValueError(f"a {self.kind} needs {n} grid size(s), range(s) and direction(s)")
        for g in self.grid:
            if self.kind == "plane" and (g < 1 or g % 2 == 0):
                raise ValueError(f"--grid must be odd and positive (so θ0 is the centre), not {g}; e.g. --grid 21")
            if self.kind == "line" and g < 1:
                raise ValueError(f"--points must be at least 1, not {g}")
        if self.gradient_episodes < 2:
            raise ValueError(f"--gradient-episodes must be at least 2, not {self.gradient_episodes}")
        for lo, hi in self.ranges:
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError("ranges and magnitudes must be finite numbers")
            if self.kind == "plane" and not hi > 0:
                raise ValueError(f"--magnitude must be positive, not {hi}")
            if self.kind == "line" and not hi > lo:
                raise ValueError(f"--range A,B needs A < B, not {lo},{hi}")
        return self


def validated(model: type[M], **fields: object) -> M:
    """Build ``model``, turning pydantic's report into one line that says what to change."""
    try:
        return model(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in err.get("loc", ()))
        raise RlscapeError(msg if not loc or loc in msg else f"{loc}: {msg}") from None
