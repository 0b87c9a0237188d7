"""The mail TLS agent's settings, read once from environment variables prefixed ``VHOST_MAILTLS_``.

Its own settings class, like the nginx agent's: it runs in the mail server's pod, with
permissions of its own, and needs nothing of the operator's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MailTlsSettings(BaseSettings):
    """The agent's configuration. Tests pass values as keyword arguments instead."""

    model_config = SettingsConfigDict(
        env_prefix="VHOST_MAILTLS_", frozen=True, use_attribute_docstrings=True
    )

    namespace: str = "vhost-operator"
    """Namespace of the TLS Secrets (the operator's ``nginx_namespace``) and of the report
    ConfigMap. The agent watches this one namespace only."""

    root_dir: Path = Path("/var/lib/vhost-mail-tls")
    """Directory the agent owns, shared with the mail server's container: ``postfix/`` and
    ``dovecot/`` hold its generations, ``<service>/current`` the one in use."""

    report_configmap: str = "vhost-mail-tls"
    """ConfigMap (in ``namespace``) the agent reports into: per TLS Secret, the serial each
    service serves. It must exist (the chart creates it); one per agent, so agents of several
    mail pods do not overwrite each other."""

    postfix_config_dir: Path | None = None
    """Postfix's ``config_directory`` (``/etc/postfix``); unset: no Postfix. Its ``main.cf``
    must set ``tls_server_sni_maps = <postfix_map_type>:<root_dir>/postfix/current/sni``."""

    postfix_map_type: str = "hash"
    """Table type of the SNI map (``hash``, ``lmdb``, ``cdb``: one ``postmap -F`` can build)."""

    postfix_binary: str = "postfix"
    """``postfix`` command (``check``, ``reload``), looked up on PATH unless absolute."""

    postmap_binary: str = "postmap"
    """``postmap`` command that builds the SNI table (``postmap -F``)."""

    postconf_binary: str = "postconf"
    """``postconf`` command the agent asks which SNI table ``main.cf`` uses."""

    dovecot_config: Path | None = None
    """Dovecot's main config (``/etc/dovecot/dovecot.conf``); unset: no Dovecot. It must contain
    ``!include_try <root_dir>/dovecot/current/local_names.conf``."""

    doveconf_binary: str = "doveconf"
    """``doveconf`` command that validates Dovecot's config (``doveconf -n``)."""

    doveadm_binary: str = "doveadm"
    """``doveadm`` command that reloads Dovecot (``doveadm reload``)."""

    quiet_window: float = Field(default=0.5, gt=0)
    """Seconds without further changes after which a burst is applied (one check and one reload
    per service for all of it)."""

    max_delay: float = Field(default=3.0, gt=0)
    """Seconds after the first change of a burst by which it is applied even if changes keep
    coming."""

    health_port: int = Field(default=8082, ge=0, le=65535)
    """Port of ``/healthz``, ``/readyz`` (synced, and every service reloaded once) and
    ``/metrics``. 0 switches the endpoint off."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.max_delay < self.quiet_window:
            raise ValueError("max_delay must not be shorter than quiet_window")
        if self.postfix_config_dir is None and self.dovecot_config is None:
            raise ValueError("set postfix_config_dir, dovecot_config or both")
        return self
