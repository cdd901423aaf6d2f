"""Validated specs: what a run asks for. A spec is the identity of a run directory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from rlscape.core.errors import RlscapeError

M = TypeVar("M", bound=BaseModel)


class EvalSpec(BaseModel):
    """How each point is evaluated (methods.md §3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    episodes: int | None = 20
    steps: int | None = None
    seed: int = 0
    deterministic: bool = False

    @classmethod
    def from_budget(cls, episodes: int | None, steps: int | None, seed: int = 0, deterministic: bool = False) -> EvalSpec:
        """The evaluation spec for user flags: 20 episodes when neither budget is given."""
        if episodes is None and steps is None:
            episodes = 20
        return validated(cls, episodes=episodes, steps=steps, seed=seed, deterministic=deterministic)

    @model_validator(mode="after")
    def _budget(self) -> EvalSpec:
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
