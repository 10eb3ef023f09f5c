"""Per-image CPU work spread over threads, for the GPU path.

On a GPU the network is fast enough that the per-image steps around it (OpenCV resizes, map blurs) in a
Python loop become the limit. OpenCV releases the GIL, so a thread pool runs them in parallel with the
same functions, hence the same results, as the serial loop. The CPU runtimes keep the serial loop: there
the cores are busy in the network already.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cellsight-image")


def map_images(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """`[fn(x) for x in items]`, in order, on `workers` threads (serially for 1 worker or a single item)."""
    if workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    return list(_pool(workers).map(fn, items))


def gpu_workers() -> int:
    """Threads for the per-image work beside a GPU: every core the process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
