"""Password hashes and the configuration's secure defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua.crypto.permission_rules import UserRole
from pydantic import ValidationError

from cellsight.plc.auth import PasswordUserManager, hash_password, verify_password
from cellsight.plc.config import PlcConfig

FAST = {"n": 2**10}  # cheap hashes for tests; the default cost is for production


def test_hash_round_trip_and_salted() -> None:
    stored = hash_password("s3cret", **FAST)
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret ", stored)
    assert hash_password("s3cret", **FAST) != stored


@pytest.mark.parametrize("stored", ["", "plain", "pbkdf2$1$2$3$00$00", "scrypt$x$8$1$00$00", "scrypt$1024$8$1$zz$00"])
def test_malformed_hash_never_matches(stored: str) -> None:
    assert not verify_password("anything", stored)


def test_user_manager() -> None:
    users = {"plc": hash_password("pw", **FAST)}
    manager = PasswordUserManager(users)
    cert = b"client certificate of the secure channel"
    user = manager.get_user(None, "plc", "pw", cert)  # type: ignore[arg-type]
    assert user is not None and user.role is UserRole.User  # never Admin: AccessLevel must apply
    assert manager.get_user(None, "plc", "pw") is None  # type: ignore[arg-type]  # channel without security
    assert manager.get_user(None, "plc", "wrong", cert) is None  # type: ignore[arg-type]
    assert manager.get_user(None, "nobody", "pw", cert) is None  # type: ignore[arg-type]
    assert manager.get_user(None, None, None, cert) is None  # type: ignore[arg-type]
    commissioning = PasswordUserManager(users, allow_anonymous=True, secure_channel_only=False)
    assert commissioning.get_user(None) is not None  # type: ignore[arg-type]


def test_config_is_secure_by_default(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    with pytest.raises(ValidationError, match="certificate"):
        PlcConfig(stations=["EL"], users={"plc": "x"})
    with pytest.raises(ValidationError, match="user"):
        PlcConfig(stations=["EL"], certificate=cert, private_key=key)
    with pytest.raises(ValidationError, match="go together"):
        PlcConfig(stations=["EL"], certificate=cert, allow_insecure=True)
    config = PlcConfig(stations=["EL"], users={"plc": "x"}, certificate=cert, private_key=key)
    assert not config.allow_insecure and config.inspect_timeout_s == 5.0
    assert PlcConfig(stations=["EL"], allow_insecure=True).certificate is None


@pytest.mark.parametrize("stations", [[], ["EL", "EL"], ["1st"], ["a.b"], ["Heartbeat"]])
def test_station_names_are_node_names(stations: list[str]) -> None:
    with pytest.raises(ValidationError):
        PlcConfig(stations=stations, allow_insecure=True)


def test_endpoint_and_timeout_checked() -> None:
    with pytest.raises(ValidationError):
        PlcConfig(endpoint="http://x", stations=["EL"], allow_insecure=True)
    with pytest.raises(ValidationError):
        PlcConfig(stations=["EL"], allow_insecure=True, inspect_timeout_s=0)
