"""One intra-op thread for these tests: on a shared 2-core runner, 2 OpenMP threads competing with
other processes spin-wait and run the small forwards here 10-30x slower (measured: 38 s vs 9 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
