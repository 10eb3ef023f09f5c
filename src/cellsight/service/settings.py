"""Service knobs that are not part of the line configuration: keyword arguments or CELLSIGHT_* variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Read from `CELLSIGHT_<NAME>` environment variables unless given; unknown keywords are an error."""

    model_config = SettingsConfigDict(env_prefix="CELLSIGHT_", frozen=True, extra="forbid")

    max_upload_bytes: int = Field(32 * 1024 * 1024, gt=0, description="largest request body (413 above)")
    pchart_subgroup: int = Field(20, ge=2, description="cells per p-chart point on the dashboard")
    refresh_seconds: float = Field(5.0, gt=0, description="dashboard polling interval")
    secure_cookie: bool = Field(False, description="mark the login cookie Secure (behind HTTPS)")
    allowed_origins: tuple[str, ...] = Field(
        (), description="origins besides the service's own from which a browser may send state-changing requests "
                        "(e.g. https://line.example behind a TLS proxy); JSON list in the environment",
    )
