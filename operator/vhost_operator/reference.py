"""The configuration reference, generated from the settings classes' field docstrings.

``python -m vhost_operator.reference`` rewrites the tables in README.md; a test fails when the
README and the settings disagree, so a new or renamed setting cannot go undocumented.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from vhost_operator.agent.settings import AgentSettings
from vhost_operator.mailtls.settings import MailTlsSettings
from vhost_operator.settings import Settings
from vhost_operator.tenancy.settings import GateSettings

SECTIONS: dict[str, type[BaseSettings]] = {
    "operator": Settings,
    "nginx-agent": AgentSettings,
    "tenancy-gate": GateSettings,
    "mail-tls-agent": MailTlsSettings,
}


def _default(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.default is PydanticUndefined or field.default is None:
        return "unset"
    value = field.default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list):
        return f"`{json.dumps(list(value))}`"
    if isinstance(value, float) and value < 1:
        return f"`{value:.4g}`"
    return f"`{value}`"


def _description(text: str | None) -> str:
    # First paragraph, on one line; pipes would end the table cell.
    first = (text or "").split("\n\n", 1)[0]
    return " ".join(first.split()).replace("|", "\\|")


def table(settings_class: type[BaseSettings]) -> str:
    prefix = settings_class.model_config.get("env_prefix", "")
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in settings_class.model_fields.items():
        variable = f"`{prefix}{name.upper()}`"
        rows.append(
            f"| {variable} | {_default(settings_class, name)} | {_description(field.description)} |"
        )
    return "\n".join(rows)


def _markers(section: str) -> tuple[str, str]:
    return f"<!-- settings:{section} -->", f"<!-- /settings:{section} -->"


def render(readme: str) -> str:
    """``readme`` with every settings table replaced by the generated one."""
    for section, settings_class in SECTIONS.items():
        start, end = _markers(section)
        found = re.search(re.escape(start) + r".*?" + re.escape(end), readme, re.DOTALL)
        if found is None:
            raise ValueError(f"README has no {start} ... {end} section")
        generated = f"{start}\n{table(settings_class)}\n{end}"
        readme = readme[: found.start()] + generated + readme[found.end() :]
    return readme


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
