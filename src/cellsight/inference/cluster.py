"""Connecting to Ray: the address comes from the caller (line YAML, `--ray`), else `CELLSIGHT_RAY_ADDRESS`
or `RAY_ADDRESS`, else a small local cluster started here. No cluster answering is a `ClusterError`
that names the address, never a hang or a silent fallback to local inference.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from cellsight.errors import CellsightError

LOCAL = "local"
ENV_VARS = ("CELLSIGHT_RAY_ADDRESS", "RAY_ADDRESS")


class ClusterError(CellsightError, RuntimeError):
    """No Ray cluster at the address given, or Ray is not installed."""


def resolve_address(address: str | None) -> str:
    """The address to use: the given one, else the environment's, else `local`."""
    if address:
        return address
    for name in ENV_VARS:
        value = os.environ.get(name)
        if value:
            return value
    return LOCAL


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - ray is a dependency; a broken install names itself
        raise ClusterError(f"the ray backend needs Ray: pip install 'ray[serve,data]' ({exc})") from exc
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join (or start) the cluster once per process; True when this call started or joined it (so the
    caller should leave it with `shutdown`), False when the process was already connected.

    `local` starts a cluster inside this process (`num_cpus`, default every core; no dashboard). Any
    other address must answer: a connection failure is a ClusterError naming it.
    """
    ray = import_ray()
    resolved = resolve_address(address)
    if resolved not in (LOCAL, "auto"):
        _probe(resolved)
    if ray.is_initialized():
        return False
    try:
        if resolved == LOCAL:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=resolved, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(
            f"no Ray cluster answers at {resolved!r} ({type(exc).__name__}: {exc}); start one with "
            "`ray start --head` or use `address: local`"
        ) from exc
    return True


def _probe(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast when nothing listens at host:port (ray.init would retry for minutes)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address {address!r} is not host:port, ray://host:port, auto or local")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterError(
            f"no Ray cluster answers at {address!r} ({exc.strerror or exc}); start one with `ray start --head` "
            "or use `address: local`"
        ) from exc


def shutdown() -> None:
    """Leave the cluster (and stop it when this process started it)."""
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()
