"""Alignment tests run their (tiny) linear algebra single-threaded: on a shared 2-core machine, BLAS/OpenMP
threads that spin-wait for a descheduled peer turn microsecond products into 15 ms ones."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def single_threaded_linear_algebra():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)
