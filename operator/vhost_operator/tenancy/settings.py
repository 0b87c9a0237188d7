"""Settings of the tenancy gate, read once from environment variables prefixed ``VHOST_GATE_``.

Every field documents its unit, its default and why. The global theme is validated here, so a
bad value stops the gate at start with a message naming it instead of reaching any page.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vhost_operator.resources.models import Theme, ThemeColors, ThemeLogos
from vhost_operator.tenancy import themes
from vhost_operator.tenancy.names import normalise_hostname


class GateSettings(BaseSettings):
    """The gate's configuration. Tests pass values as keyword arguments instead."""

    model_config = SettingsConfigDict(
        env_prefix="VHOST_GATE_", frozen=True, use_attribute_docstrings=True
    )

    listen_address: str = "0.0.0.0"
    """Address the HTTP server binds to. All interfaces by default, as a Pod's Service needs."""

    listen_port: int = Field(default=8090, ge=1, le=65535)
    """Port of the gate's HTTP API (login checks, ``auth_request``, themes, probes)."""

    primary_hostnames: tuple[str, ...] = ()
    """The instance's own hostnames: logins through them are never restricted by tenancy (the
    same list as the operator's ``VHOST_OPERATOR_PRIMARY_HOSTNAMES``). Normalised like every
    hostname the gate compares (lowercase, no trailing dot, no port). Environment form: a JSON
    list, e.g. ``["mail.example.net"]``."""

    # -- the global theme: what every host shows where its own theme is blank -----------------

    theme_primary: str | None = None
    """Global primary colour, ``#RRGGBB``. Unset: the mail web app's built-in colour."""

    theme_primary_light: str | None = None
    """Global light variant of the primary colour, ``#RRGGBB``."""

    theme_primary_dark: str | None = None
    """Global dark variant of the primary colour, ``#RRGGBB``."""

    theme_secondary: str | None = None
    """Global secondary colour, ``#RRGGBB``."""

    theme_label: str | None = None
    """Global label (text) colour, ``#RRGGBB``."""

    theme_logo_login: str | None = None
    """Global logo of the login page: an ``https://`` URL (safe characters only, see
    ``tenancy.themes``). Unset: the mail web app's built-in logo."""

    theme_logo_menu: str | None = None
    """Global logo of the menu bar: an ``https://`` URL."""

    theme_logo_creation_form: str | None = None
    """Global logo of the creation forms: an ``https://`` URL."""

    @field_validator("primary_hostnames")
    @classmethod
    def _normalised_hostnames(cls, hostnames: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalise_hostname(hostname) for hostname in hostnames)

    @field_validator(
        "theme_primary",
        "theme_primary_light",
        "theme_primary_dark",
        "theme_secondary",
        "theme_label",
    )
    @classmethod
    def _colors(cls, value: str | None) -> str | None:
        return themes.check_color(value) if value else None  # "" counts as unset

    @field_validator("theme_logo_login", "theme_logo_menu", "theme_logo_creation_form")
    @classmethod
    def _logos(cls, value: str | None) -> str | None:
        return themes.check_logo_url(value) if value else None

    def global_theme(self) -> Theme:
        """The global theme as a ``Theme``, already validated field by field."""
        return Theme(
            colors=ThemeColors(
                primary=self.theme_primary,
                primary_light=self.theme_primary_light,
                primary_dark=self.theme_primary_dark,
                secondary=self.theme_secondary,
                label=self.theme_label,
            ),
            logos=ThemeLogos(
                login=self.theme_logo_login,
                menu=self.theme_logo_menu,
                creation_form=self.theme_logo_creation_form,
            ),
        )
