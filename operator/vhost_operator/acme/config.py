"""Which CA to use and how to talk to it: :class:`AcmeConfig`, validated at the boundary."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    field_validator,
    model_validator,
)


class AcmeConfig(BaseModel):
    """Which CA to use and how to talk to it. Secrets stay out of ``repr`` and logs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    directory_url: str
    """The CA's ACME directory, e.g. ``https://acme-v02.api.letsencrypt.org/directory``."""
    contact_email: str | None = None
    """Where the CA sends expiry and policy mail; set on account creation only."""
    eab_kid: str | None = None
    """External Account Binding key id, for CAs that require one (ZeroSSL, private CAs)."""
    eab_hmac_key: SecretStr | None = None
    """External Account Binding MAC key, base64url as CAs hand it out."""
    ca_bundle_path: FilePath | None = None
    """PEM bundle trusted for the CA's HTTPS API instead of the system store (private CAs)."""
    user_agent: str = "vhost-operator"
    timeout: int = Field(default=30, ge=1, le=300)
    """Seconds allowed for one HTTP request to the CA."""
    order_timeout: float = Field(default=120.0, gt=0)
    """Seconds to wait for the CA to validate and issue before giving up (AcmeUnavailable)."""

    @field_validator("directory_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("directory_url must be an http(s) URL")
        return value

    @field_validator("contact_email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^@\s,]+@[^@\s,]+", value):
            raise ValueError("contact_email must be a single email address")
        return value

    @field_validator("eab_hmac_key")
    @classmethod
    def _base64url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]+=*", value.get_secret_value()):
            raise ValueError("eab_hmac_key must be base64url")
        return value

    @model_validator(mode="after")
    def _eab_pair(self) -> AcmeConfig:
        if (self.eab_kid is None) != (self.eab_hmac_key is None):
            raise ValueError("eab_kid and eab_hmac_key must be set together")
        return self

    @property
    def ca_origin(self) -> str:
        """``scheme://host:port`` of the CA: the stable address named in error messages."""
        parts = urlsplit(self.directory_url)
        return f"{parts.scheme}://{parts.netloc}"
