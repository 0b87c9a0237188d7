"""The README's configuration reference is the one the settings classes generate."""

from __future__ import annotations

from pathlib import Path

from vhost_operator.reference import render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_configuration_reference_matches_the_settings() -> None:
    text = README.read_text()
    assert render(text) == text, "run `make docs` to regenerate README.md's settings tables"
