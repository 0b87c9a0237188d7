"""Typed settings, read once from environment variables prefixed ``VHOST_OPERATOR_``.

Every field documents its unit, its default and why. The README's configuration reference is
checked against this class by a test, so a new setting must be documented there too.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """The operator's configuration. Tests pass values as keyword arguments instead."""

    model_config = SettingsConfigDict(env_prefix="VHOST_OPERATOR_", frozen=True)

    acme_enabled: bool = False
    """Order certificates over ACME (the ``certificate`` step). Off by default: with both ACME
    and nginx off a VirtualHost is Ready as soon as it is created, as in the original product."""

    nginx_enabled: bool = False
    """Write nginx configuration for each host (the ``bootstrap`` and ``final`` steps)."""

    nginx_namespace: str = "vhost-operator"
    """Namespace of the per-host nginx ConfigMaps and TLS Secrets, where nginx and its agent run."""

    primary_hostnames: tuple[str, ...] = ()
    """The instance's own hostnames: logins through them are never restricted by tenancy.
    Environment form: a JSON list, e.g. ``["mail.example.net"]``."""

    liveness_port: int = Field(default=8080, ge=1, le=65535)
    """Port of the ``/healthz`` liveness endpoint kopf serves."""
