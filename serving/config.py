"""Service settings: typed, validated, read from ``REPAIRQC_*`` environment variables.

Why strict: the sampling secret is what makes the third-party draw unpredictable to the people
it audits. A service that silently falls back to a default secret would produce a sample that
anyone can recompute, so outside an explicit dev mode the settings refuse to exist without it.
Dev mode works without one, but says so loudly at every start.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent

#: Secrets that must never be used outside dev mode (examples from docs, obvious placeholders).
_UNSAFE_SECRETS = frozenset({"", "changeme", "secret", "dev", "test", "password"})
#: The dev-mode secret: fixed so a dev store stays consistent across restarts, public so that
#: nobody mistakes a dev sample for a protected one.
DEV_SECRET = "repairqc-dev-mode-insecure-sampling-secret"
#: Shortest sampling secret accepted: 128 bits of hex.
MIN_SECRET_CHARS = 32


class Settings(BaseSettings):
    """Everything the service needs to start; see each field's description."""

    model_config = SettingsConfigDict(env_prefix="REPAIRQC_", extra="ignore")

    dev_mode: bool = Field(
        False, description="Allow start without a sampling secret (never in production)."
    )
    sampling_secret: SecretStr | None = Field(
        None, description="HMAC key of the sampling draws (>= 32 characters)."
    )
    database_url: str = Field(
        f"sqlite:///{PROJECT_ROOT / 'data' / 'serving' / 'repairqc.db'}",
        description="SQLAlchemy URL of the audit store (SQLite file or PostgreSQL).",
    )
    model_dir: Path | None = Field(
        None, description="Serve this saved model directory instead of the registry champion."
    )
    model_name: str = Field("repairqc-risk", description="Registered model name.")
    model_alias: str = Field("champion", description="Registry alias served.")
    policy_path: Path = Field(
        PACKAGE_DIR / "policy.yaml", description="Inspection/sampling policy YAML."
    )
    max_batch: int = Field(10_000, ge=1, description="Most orders in one score request.")
    reasons_k: int = Field(3, ge=0, le=10, description="Reasons returned per order.")
    reference_orders: int = Field(
        2000, ge=50, description="Stored orders used to bin each feature's mean contribution."
    )
    history_refresh_orders: int = Field(
        1, ge=1, description="Unused: stored orders are history at once (kept for old configs)."
    )
    history_merge_orders: int = Field(
        5000,
        ge=1,
        description="Fold the in-memory history's delta into a rebuilt index after this many "
        "new orders (queries of a large delta get slower; the rebuild runs in the background).",
    )
    history_refresh_seconds: float = Field(
        2.0, ge=0.0, description="At most one background history rebuild per this many seconds."
    )
    key_cache_seconds: float = Field(
        5.0,
        ge=0.0,
        le=60.0,
        description="API-key roles are remembered this long: a key revoked by another process "
        "(the CLI) stops working within this many seconds (at once when revoked in this one).",
    )
    log_level: str = Field("INFO", description="Root log level.")

    @model_validator(mode="after")
    def _require_secret(self) -> Settings:
        secret = self.sampling_secret.get_secret_value() if self.sampling_secret else ""
        if self.dev_mode:
            if not secret:
                self.sampling_secret = SecretStr(DEV_SECRET)
            return self
        if secret.lower() in _UNSAFE_SECRETS or len(secret) < MIN_SECRET_CHARS:
            raise ValueError(
                "REPAIRQC_SAMPLING_SECRET must be set to a random string of at least "
                f"{MIN_SECRET_CHARS} characters (e.g. `python -c 'import secrets; "
                "print(secrets.token_hex(32))'`); set REPAIRQC_DEV_MODE=1 only for local "
                "development"
            )
        return self

    @property
    def secret_bytes(self) -> bytes:
        """The sampling secret as bytes (always set after validation)."""
        assert self.sampling_secret is not None
        return self.sampling_secret.get_secret_value().encode()

    def warn_if_dev(self) -> None:
        """Log, loudly, that this instance is not fit for production."""
        if self.dev_mode:
            banner = "!" * 78
            log.warning(
                "%s\nDEV MODE (REPAIRQC_DEV_MODE=1): %s; draws are NOT protected: anyone "
                "who knows the secret can predict them. Never use in production.\n%s",
                banner,
                "sampling draws use the PUBLIC dev secret"
                if self.secret_bytes == DEV_SECRET.encode()
                else "a sampling secret is set, but dev mode is on",
                banner,
            )
