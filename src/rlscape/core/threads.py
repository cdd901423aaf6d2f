"""One thread for the evaluator's arithmetic: torch's and NumPy's BLAS.

Every forward pass of a run is computed single-threaded, in worker processes and in the parent
alike: BLAS libraries may split (and so round) work by thread count, and a worker per core that
also spawns BLAS threads only oversubscribes the machine. NumPy's OpenBLAS starts one thread per
core by default, so it is limited here too (``threadpoolctl``), not only torch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

_CONTROLLERS: dict[int, Any] = {}  # pid → ThreadpoolController (libraries found once per process)


def _controller() -> Any:
    from threadpoolctl import ThreadpoolController

    pid = os.getpid()
    if pid not in _CONTROLLERS:
        _CONTROLLERS[pid] = ThreadpoolController()
    return _CONTROLLERS[pid]


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with one torch thread and one BLAS thread; the previous settings come back after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _controller().limit(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def pin_process_to_one_thread() -> None:
    """For worker processes: one torch thread and one BLAS thread for the rest of the process."""
    torch.set_num_threads(1)
    _controller().limit(limits=1, user_api="blas")
