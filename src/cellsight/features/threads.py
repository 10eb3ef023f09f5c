"""Threads: how many the CPU runtimes use (`CELLSIGHT_THREADS`), and per-image work spread over threads.

A line PC often runs other software (the camera driver, the HMI): `CELLSIGHT_THREADS=N` caps the
threads of the backbone (ONNX Runtime, OpenVINO, torch) and of the nearest-neighbour search (faiss) at N.
Unset, they use every core this process may use.

Per-image CPU work spread over threads, for the GPU path.

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

from cellsight.errors import ConfigError

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


THREADS_VARIABLE = "CELLSIGHT_THREADS"


def cpu_threads() -> int:
    """Threads for the CPU runtimes: `CELLSIGHT_THREADS` when set, else every core this process may use."""
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    if not value:
        return gpu_workers()
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigError(f"{THREADS_VARIABLE} must be a whole number of threads >= 1, got {value!r}")
    return threads


def apply_thread_setting() -> None:
    """Cap torch's intra-op threads at `CELLSIGHT_THREADS` where it is set (otherwise leave torch's choice)."""
    if os.environ.get(THREADS_VARIABLE, "").strip():
        import torch

        threads = cpu_threads()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
