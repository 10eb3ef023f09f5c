"""PLC user names and passwords: stored as scrypt hashes, checked in constant time.

A stored hash reads `scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>`; make one with `hash_password` (or
`python -m cellsight.plc.auth`) and put it in the configuration, never the password itself.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

if TYPE_CHECKING:
    from asyncua.server.internal_server import InternalServer

_N, _R, _P, _LEN = 2**14, 8, 1, 32


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """A salted scrypt hash of `password`, self-describing so that its cost can be raised later."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_LEN)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored`; a malformed stored hash never matches."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        want = bytes.fromhex(expected)
        digest = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(want)
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest, want)


# checked for unknown user names, so that a wrong name costs as long as a wrong password
_DUMMY_HASH = hash_password(secrets.token_hex(8))


class PasswordUserManager(UserManager):
    """asyncua user manager: users from the configuration, never admins (so AccessLevel always applies).

    `secure_channel_only`: refuse any session whose secure channel has no client certificate. asyncua keeps a
    SecurityPolicy None channel open for discovery even when no None endpoint is configured, and would
    otherwise activate a session on it (the password crossing in clear, the session unsigned).
    """

    def __init__(
        self, users: Mapping[str, str], allow_anonymous: bool = False, secure_channel_only: bool = True
    ) -> None:
        self._users = dict(users)
        self._allow_anonymous = allow_anonymous
        self._secure_channel_only = secure_channel_only

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        """The session's user, or None to refuse the login. `certificate`: the channel's client certificate."""
        if self._secure_channel_only and not certificate:
            return None
        if username is None:
            return User(role=UserRole.User, name="anonymous") if self._allow_anonymous else None
        stored = self._users.get(username)
        ok = verify_password(password or "", stored if stored is not None else _DUMMY_HASH)
        return User(role=UserRole.User, name=username) if ok and stored is not None else None


if __name__ == "__main__":
    print(hash_password(getpass.getpass("PLC user password: ")))
