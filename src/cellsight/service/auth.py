"""Bearer tokens and roles.

Tokens are 32 random bytes (256 bits) from `secrets`, stored only as their SHA-256. A slow password hash
(bcrypt, scrypt) exists to make guessing a *human-chosen* secret from its hash expensive; a uniformly
random 256-bit token cannot be guessed whatever the hash costs, so one fast SHA-256 keeps a stolen
database useless to an attacker while letting every request be checked in microseconds by a unique
index lookup.

Roles are ordered: viewer (read) < operator (inspect, review, see images) < admin (models, tokens).
Every route states its role through `require(role)`; tests walk the app's routes to prove none forgot.

A browser sends the dashboard cookie with any request to this host, whichever page made it (SameSite
treats another port of the same host as the same site). So a state-changing request authenticated by the
cookie must also come from our own origin (Origin, else Referer) and carry the CSRF token the pages hold
(`X-CSRF-Token` header or `csrf` form field): a value derived from the cookie's secret that another
origin can neither read nor compute. Bearer-token clients (scripts, PLC gateways) send no cookie and
need neither.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from fastapi import HTTPException, Request, status

from cellsight.storage.service_store import ServiceStore

COOKIE = "cellsight_token"
TOKEN_PREFIX = "cs_"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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


def request_token(request: Request) -> tuple[str | None, bool]:
    """The bearer token from the Authorization header, else the dashboard's HttpOnly cookie; True if the cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    cookie = request.cookies.get(COOKIE)
    return cookie, cookie is not None


def csrf_token(token: str) -> str:
    """The CSRF token for a session: an HMAC of its secret token, so it needs no server-side state."""
    return hmac.new(token.encode("utf-8"), b"cellsight-csrf", hashlib.sha256).hexdigest()


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def origin_allowed(request: Request, extra: tuple[str, ...] = ()) -> bool:
    """The request names its origin (Origin, else Referer) and it is this service's own or configured one."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer", "")
        parts = referer.split("/")
        origin = "/".join(parts[:3]) if len(parts) >= 3 and parts[0] in ("http:", "https:") else None
    return origin is not None and origin != "null" and (origin == own_origin(request) or origin in extra)


def check_csrf(request: Request, token: str, form_value: str | None = None) -> None:
    """403 unless a cookie-authenticated state change comes from our origin with the session's CSRF token."""
    allowed: tuple[str, ...] = request.app.state.service.settings.allowed_origins
    if not origin_allowed(request, allowed):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-origin request refused: Origin is not this service")
    sent = request.headers.get(CSRF_HEADER) or form_value or ""
    if not hmac.compare_digest(sent.encode("utf-8", "replace"), csrf_token(token).encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token (X-CSRF-Token)")


class RoleDependency:
    """A FastAPI dependency demanding at least `role`; its `role` attribute lets tests find it on a route."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def __call__(self, request: Request) -> Principal:
        token, from_cookie = request_token(request)
        principal = authenticate(request.app.state.service.store, token)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing or unknown bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if principal.role < self.role:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {principal.role.label} may not do this; needs {self.role.label}"
            )
        if from_cookie and request.method not in SAFE_METHODS:
            assert token is not None
            check_csrf(request, token)
        return principal


def require(role: Role) -> Callable[[Request], Principal]:
    return RoleDependency(role)
