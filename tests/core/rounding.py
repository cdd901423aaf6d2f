"""How far two float32 evaluations of the same network may differ, from the arithmetic.

Two float32 forward passes that sum their dot products in different orders (another kernel,
another batch shape, ``vmap``'s grouped convolution) round differently. For a dot product of length
n the rounding error is at most λ·√n·u·Σ|aᵢbᵢ| (u = 2⁻²⁴) except with probability 2n·exp(−λ²/2)
(Higham & Mary, "A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput.
2019); λ = 8 makes that < 1e-9 for n ≤ 10⁴. Σ|aᵢbᵢ| exceeds |Σaᵢbᵢ| by a cancellation factor,
≈ √n for weights of random sign and at most 64 for the layers here (NatureCNN's largest is 3136:
√3136 = 56); the errors of successive layers add (ReLU, tanh: 1-Lipschitz, and the layers are
near-isometries at SB3's orthogonal initialisation). So two evaluations differ by at most
2·λ·64·u·Σ_l √n_l relative to the output's scale: 1.0e-2·max|out| for SB3's NatureCNN policy
(reductions 256, 512, 576, 3136, 512, 512; the worst seen is 5.7e-5), 9.5e-4 for the small conv head. The worst-case (deterministic) bound n·u per layer
propagated through |W| is 10¹⁰ times looser here and useless; a fixed 1e-5 was wrong the other
way: it passed or failed with the kernel the CPU picked (6.7e-4 on a 2-core CI machine).
"""

from __future__ import annotations

import math

import torch
from torch import nn

U = 2.0**-24  # unit roundoff of float32
LAMBDA = 8.0  # probabilistic bound's confidence parameter
CANCELLATION = 64.0  # Σ|aᵢbᵢ| / |Σaᵢbᵢ| allowed per layer


def reduction_sizes(head: nn.Module) -> list[int]:
    """The dot-product length of every Linear and Conv layer of ``head``."""
    sizes = []
    for m in head.modules():
        if isinstance(m, nn.Linear):
            sizes.append(m.in_features)
        elif isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            sizes.append(m.in_channels // m.groups * math.prod(m.kernel_size))
    return sizes


def relative_tolerance(head: nn.Module) -> float:
    """How far, relative to an output's largest magnitude, two float32 evaluations may differ."""
    return 2 * LAMBDA * CANCELLATION * U * sum(math.sqrt(n) for n in reduction_sizes(head))


def assert_within_rounding(head: nn.Module, got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], msg: str = "") -> None:
    """Every output of ``got`` within :func:`relative_tolerance` of ``want`` (scaled per output key)."""
    rel = relative_tolerance(head)
    assert set(got) == set(want), msg
    for key in want:
        scale = float(want[key].detach().abs().max())
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=rel * scale + torch.finfo(torch.float32).tiny,
                                   msg=lambda m, key=key: f"{msg} {key}: {m}")
