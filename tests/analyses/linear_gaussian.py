"""A one-step task with a closed-form objective (methods.md §5), for checking estimators against truth.

State s ~ N(m, diag(v)) at reset; one action a ~ N(W·s + b, σ²·I); reward −‖a − c‖²; then the
episode ends. With x = [s; 1] and W' = [W b]:

    J(W')   = −tr(W' E[xxᵀ] W'ᵀ) + 2 cᵀ W' E[x] − ‖c‖² − d·σ²
    ∇J      = −2 (W' E[xxᵀ] − c E[x]ᵀ)
    ∇²J · V = −2 V E[xxᵀ]          (eigenvalues −2·eig(E[xxᵀ]), each d times)
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

M = np.array([0.5, -1.0])
V = np.array([2.0, 0.5])
C = np.array([1.0, -1.0])
SIGMA = 0.5
ENV_ID = "tests.analyses.linear_gaussian:LinearGaussianTask-v0"


class LinearGaussianTask(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._s = (M + np.sqrt(V) * self.np_random.standard_normal(2)).astype(np.float32)
        return self._s.copy(), {}

    def step(self, action):
        r = -float(np.sum((np.asarray(action, np.float64) - C) ** 2))
        return self._s.copy(), r, True, False, {}


if "LinearGaussianTask-v0" not in gym.registry:
    gym.register("LinearGaussianTask-v0", entry_point=LinearGaussianTask)


class LinearPolicy(nn.Module):
    def __init__(self, w: np.ndarray, b: np.ndarray) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.as_tensor(w))
            self.lin.bias.copy_(torch.as_tensor(b))


def distribution(net: nn.Module, obs: torch.Tensor) -> torch.distributions.Normal:
    mean = net.lin(obs)
    return torch.distributions.Normal(mean, torch.full_like(mean, SIGMA))


def second_moment() -> np.ndarray:
    """E[x xᵀ] for x = [s; 1]."""
    ex = np.append(M, 1.0)
    cov = np.zeros((3, 3))
    cov[:2, :2] = np.diag(V)
    return cov + np.outer(ex, ex)


def exact_gradient(w: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    wp = np.concatenate([w, b[:, None]], axis=1)
    g = -2 * (wp @ second_moment() - np.outer(C, np.append(M, 1.0)))
    return {"lin.weight": g[:, :2], "lin.bias": g[:, 2]}


def exact_objective(w: np.ndarray, b: np.ndarray) -> float:
    wp = np.concatenate([w, b[:, None]], axis=1)
    ex = np.append(M, 1.0)
    return float(-np.trace(wp @ second_moment() @ wp.T) + 2 * C @ wp @ ex - C @ C - 2 * SIGMA**2)


def exact_hessian_eigenvalues() -> np.ndarray:
    """All eigenvalues of ∇²J, ascending (each eigenvalue of −2 E[xxᵀ] twice: d = 2 actions)."""
    return np.sort(np.repeat(np.linalg.eigvalsh(-2 * second_moment()), 2))


def agent(w: np.ndarray | None = None, b: np.ndarray | None = None):
    import rlscape

    w = np.array([[0.2, -0.4], [0.7, 0.1]]) if w is None else w
    b = np.array([0.1, 0.3]) if b is None else b
    return rlscape.Agent.from_torch(LinearPolicy(w, b), distribution, ENV_ID, gamma=1.0), w, b


def optimal_parameters() -> tuple[np.ndarray, np.ndarray]:
    """W'* = c E[x]ᵀ E[xxᵀ]⁻¹: the maximiser of J (where the Hessian estimator's variance is lowest)."""
    wp = np.outer(C, np.append(M, 1.0)) @ np.linalg.inv(second_moment())
    return wp[:, :2], wp[:, 2]
