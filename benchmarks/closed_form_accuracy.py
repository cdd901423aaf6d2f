"""Accuracy of the gradient and Hessian estimates on the closed-form linear-Gaussian task vs N.

    .venv/bin/python benchmarks/closed_form_accuracy.py

Prints cos(g, ∇J), relative errors and the reported standard error, then λ_max/λ_min against the
exact eigenvalues of ∇²J = −2 E[xxᵀ] ⊗ I (see tests/analyses/linear_gaussian.py). Last line: the
relative eigenvalue errors at the largest N.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the task lives with the tests


def main() -> None:
    torch.set_num_threads(1)
    from tests.analyses import linear_gaussian as lg

    from rlscape.core.linalg import lanczos
    from rlscape.core.pg import PolicyHessian, reinforce
    from rlscape.core.trajectories import collect

    agent, w, b = lg.agent()
    exact = np.concatenate([v.ravel() for v in lg.exact_gradient(w, b).values()])
    for n in (500, 2000, 8000, 32000):
        est = reinforce(agent, collect(agent, n, seed=0))
        g = np.concatenate([est.values[k].ravel() for k in ("lin.weight", "lin.bias")])
        print(f"gradient N={n}: cos={g @ exact / np.linalg.norm(g) / np.linalg.norm(exact):.4f} "
              f"|g-∇J|/|∇J|={np.linalg.norm(g - exact) / np.linalg.norm(exact):.3f} stderr/|∇J|={est.stderr / np.linalg.norm(exact):.3f}")
    wo, bo = lg.optimal_parameters()
    near, _, _ = lg.agent(wo + 0.05, bo - 0.05)
    e = lg.exact_hessian_eigenvalues()
    for n in (2000, 8000, 20000, 50000):
        op = PolicyHessian(near, collect(near, n, seed=0))
        lmax, lmin = lanczos(op, 1, "LA").values[0], lanczos(op, 1, "SA").values[0]
        print(f"hessian N={n}: λ_max={lmax:.4f} (exact {e[-1]:.4f}) λ_min={lmin:.4f} (exact {e[0]:.4f})")
    print(f"relative errors at N={n}: λ_max {abs(lmax / e[-1] - 1):.1%}, λ_min {abs(lmin / e[0] - 1):.1%}")


if __name__ == "__main__":
    main()
