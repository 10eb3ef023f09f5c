"""Bearer tokens and roles.

Tokens are 32 random bytes (256 bits) from `secrets`, stored only as their SHA-256. A slow password hash
(bcrypt, scrypt) exists to make guessing a *human-chosen* secret from its hash expensive; a uniformly
random 256-bit token cannot be guessed whatever the hash costs, so one fast SHA-256 keeps a stolen
database useless to an attacker while letting every request be checked in microseconds by a unique
index lookup.

Roles are ordered: viewer (read) < operator (inspect, review, see images) < admin (models, tokens).
Every route states its role through `require(role)`; tests walk the app's routes to prove none forgot.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from fastapi import HTTPException, Request, status

from cellsight.storage.service_store import ServiceStore

COOKIE = "cellsight_token"
TOKEN_PREFIX = "cs_"


class Role(IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r}; use viewer, operator or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name (recorded as reviewer / deployer) and its role."""

    name: str
    role: Role


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(store: ServiceStore, name: str, role: Role | str) -> str:
    """Store a new token's hash and return the token itself: the only time it is ever seen."""
    role = role if isinstance(role, Role) else Role.parse(role)
    token = new_token()
    store.add_token(name, role.label, hash_token(token))
    return token


def authenticate(store: ServiceStore, token: str | None) -> Principal | None:
    if not token:
        return None
    info = store.token(hash_token(token))
    return None if info is None else Principal(info.name, Role.parse(info.role))


def request_token(request: Request) -> str | None:
    """The bearer token from the Authorization header, else the dashboard's HttpOnly cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE)


class RoleDependency:
    """A FastAPI dependency demanding at least `role`; its `role` attribute lets tests find it on a route."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def __call__(self, request: Request) -> Principal:
        principal = authenticate(request.app.state.service.store, request_token(request))
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing or unknown bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if principal.role < self.role:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {principal.role.label} may not do this; needs {self.role.label}"
            )
        return principal


def require(role: Role) -> Callable[[Request], Principal]:
    return RoleDependency(role)
