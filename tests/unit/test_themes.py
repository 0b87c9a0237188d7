"""Theme validation and inheritance (``tenancy.themes``) and the global theme's settings."""

from __future__ import annotations

import pydantic
import pytest

from vhost_operator.resources.models import Theme, ThemeColors, ThemeLogos
from vhost_operator.tenancy import themes
from vhost_operator.tenancy.settings import GateSettings

GLOBAL = Theme(
    colors=ThemeColors(
        primary="#111111",
        primary_light="#222222",
        primary_dark="#333333",
        secondary="#444444",
        label="#555555",
    ),
    logos=ThemeLogos(
        login="https://brand.example/login.svg",
        menu="https://brand.example/menu.svg",
        creation_form="https://brand.example/form.svg",
    ),
)


# -- inheritance ------------------------------------------------------------------------------


def test_blank_host_theme_inherits_everything() -> None:
    assert themes.merge(Theme(), GLOBAL) == GLOBAL
    assert themes.merge(None, GLOBAL) == GLOBAL


def test_host_fields_win_and_blank_fields_inherit() -> None:
    host = Theme(
        colors=ThemeColors(primary="#1a73e8"),
        logos=ThemeLogos(menu="https://acme.example/menu.png"),
    )
    merged = themes.merge(host, GLOBAL)
    assert merged.colors.primary == "#1a73e8"
    assert merged.colors.primary_light == "#222222"
    assert merged.colors.label == "#555555"
    assert merged.logos.menu == "https://acme.example/menu.png"
    assert merged.logos.login == "https://brand.example/login.svg"
    assert merged.logos.creation_form == "https://brand.example/form.svg"


def test_fields_unset_everywhere_stay_null_on_the_wire() -> None:
    merged = themes.merge(Theme(colors=ThemeColors(secondary="#abcdef")), Theme())
    assert themes.to_wire(merged) == {
        "colors": {
            "primary": None,
            "primaryLight": None,
            "primaryDark": None,
            "secondary": "#abcdef",
            "label": None,
        },
        "logos": {"login": None, "menu": None, "creationForm": None},
    }


def test_empty_string_counts_as_blank() -> None:
    clean, problems = themes.sanitise(Theme(colors=ThemeColors(primary="")))
    assert problems == []
    assert themes.merge(clean, GLOBAL).colors.primary == "#111111"


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "normal"), [("#1A73E8", "#1a73e8"), ("#000000", "#000000")])
def test_valid_colors(value: str, normal: str) -> None:
    assert themes.check_color(value) == normal


@pytest.mark.parametrize(
    "value",
    ["1a73e8", "#1a73e", "#1a73e8f", "#ggg000", "red", "#1a73e8\n", "#1a73e8;}", " #1a73e8"],
)
def test_invalid_colors(value: str) -> None:
    with pytest.raises(ValueError, match="#RRGGBB"):
        themes.check_color(value)


@pytest.mark.parametrize(
    "value",
    [
        "https://example.com/logo.svg",
        "https://cdn.example.com:8443/a/b-c_d~e.png?v=2&size=large#top",
        "https://example.com/logo%20file.svg",
        "https://EXAMPLE.com/x.svg",
    ],
)
def test_valid_logo_urls(value: str) -> None:
    assert themes.check_logo_url(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "http://example.com/logo.svg",  # not https
        "javascript:alert(1)",
        "data:image/svg+xml;base64,PHN2Zz4=",
        "//example.com/logo.svg",
        "https://",  # no host
        "https:///logo.svg",
        'https://example.com/x.svg"onerror="alert(1)',  # closes an attribute
        "https://example.com/x.svg'><script>",
        "https://example.com/x.svg) ; background:url(evil",  # closes a CSS url()
        "https://example.com/x.svg;\n  return 301 https://evil/;",  # nginx directive
        "https://example.com/$host.svg",  # nginx variable
        "https://example.com/{x}.svg",
        "https://example.com/a b.svg",
        "https://example.com/x.svg\n",
        "https://example.com/x\\y.svg",
        "https://example.com/%zz.svg",  # broken escape
        "https://user:pw@example.com/x.svg",  # disguised destination
        "https://example.com:99999/x.svg",
        "https://exa_mple.com/x.svg",
        "https://example.com/" + "a" * 2048,
    ],
)
def test_invalid_logo_urls(value: str) -> None:
    with pytest.raises(ValueError, match="logo URL"):
        themes.check_logo_url(value)


def test_sanitise_drops_only_the_bad_values() -> None:
    # model_construct: a value past the CRD schema (older CRD, webhook down) must still not pass.
    dirty = Theme(
        colors=ThemeColors.model_construct(primary="#ABCDEF", label="red;}"),
        logos=ThemeLogos.model_construct(login="https://ok.example/l.svg", menu="javascript:x"),
    )
    clean, problems = themes.sanitise(dirty)
    assert clean.colors.primary == "#abcdef"
    assert clean.colors.label is None
    assert clean.logos.login == "https://ok.example/l.svg"
    assert clean.logos.menu is None
    assert len(problems) == 2
    merged = themes.merge(clean, GLOBAL)
    assert merged.colors.label == "#555555" and merged.logos.menu == GLOBAL.logos.menu


def test_validated_names_every_bad_value() -> None:
    with pytest.raises(ValueError, match=r"colour 'blue'.*logo URL 'http://x.example/'"):
        themes.validated(
            Theme(colors=ThemeColors(primary="blue"), logos=ThemeLogos(login="http://x.example/"))
        )


# -- the global theme from settings -----------------------------------------------------------


def test_global_theme_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VHOST_GATE_THEME_PRIMARY", "#1A73E8")
    monkeypatch.setenv("VHOST_GATE_THEME_LOGO_LOGIN", "https://brand.example/login.svg")
    monkeypatch.setenv("VHOST_GATE_THEME_LABEL", "")
    monkeypatch.setenv("VHOST_GATE_PRIMARY_HOSTNAMES", '["WebMail.Provider.net."]')
    settings = GateSettings()
    theme = settings.global_theme()
    assert theme.colors.primary == "#1a73e8"
    assert theme.colors.label is None
    assert theme.logos.login == "https://brand.example/login.svg"
    assert settings.primary_hostnames == ("webmail.provider.net",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("theme_secondary", "#12345"),
        ("theme_logo_menu", "https://x.example/a'b.svg"),
        ("primary_hostnames", ("bad host",)),
    ],
)
def test_bad_global_settings_are_refused_at_start(field: str, value: object) -> None:
    with pytest.raises(pydantic.ValidationError):
        GateSettings.model_validate({field: value})
