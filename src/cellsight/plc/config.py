"""The PLC link's configuration: where it listens, which stations, who may log in, which certificate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_STATION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESERVED = {"Cellsight", "Heartbeat"}


class PlcConfig(BaseModel):
    """Configuration of the OPC UA server a line PLC talks to.

    `users` maps a user name to a stored password hash (`cellsight.plc.auth.hash_password`), never to a
    password. Secure by default: only the Basic256Sha256 SignAndEncrypt endpoint, user name and password
    required. `allow_insecure` (commissioning only) adds the unencrypted endpoint and anonymous login.
    `trusted_client_certificates`: a folder of client (PLC) certificates; when set, only those may open a
    secure channel, otherwise any well-formed client certificate may (the password still guards the session).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str = "opc.tcp://0.0.0.0:4840/cellsight/"
    stations: list[str] = Field(min_length=1)
    users: dict[str, str] = Field(default_factory=dict)
    certificate: Path | None = None
    private_key: Path | None = None
    allow_insecure: bool = False
    inspect_timeout_s: float = Field(default=5.0, gt=0.0)
    trusted_client_certificates: Path | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_opc_tcp(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError(f"endpoint must start with opc.tcp://, got {value!r}")
        return value

    @field_validator("stations")
    @classmethod
    def _stations_are_node_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _STATION_NAME.match(name):
                raise ValueError(f"station name {name!r}: a letter, then letters, digits or _ (it names nodes)")
            if name in _RESERVED:
                raise ValueError(f"station name {name!r} is reserved (server-level node)")
        if len(set(value)) != len(value):
            raise ValueError(f"station names must be unique: {value}")
        return value

    @model_validator(mode="after")
    def _secure_unless_told(self) -> Self:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        if not self.allow_insecure:
            if self.certificate is None:
                raise ValueError("a secure PLC link needs certificate and private_key (or allow_insecure)")
            if not self.users:
                raise ValueError("a secure PLC link needs at least one user (or allow_insecure)")
        return self
