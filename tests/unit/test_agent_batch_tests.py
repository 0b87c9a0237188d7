"""Which config the agent asks ``nginx -t`` to test (``agent.BatchTestingWorkspace``), with a
stand-in for nginx that records the configs and answers as told; the agent's files are real.
What a real nginx makes of the narrowed config: tests/integration/test_nginx_agent.py."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from vhost_operator.agent.agent import BATCH_TEST_CONFIG, BatchTestingWorkspace
from vhost_operator.agent.metrics import AgentStats
from vhost_operator.agent.nginx import ConfigRejected, NginxControl


class RecordingNginx(NginxControl):
    """``nginx -t`` that records the text of each config it is given, and refuses the narrowed
    or the whole one when told to."""

    def __init__(self, conf: Path) -> None:
        super().__init__("nginx", conf, conf.parent / "nginx.pid")
        self.tested: list[str] = []
        """``whole``, or the narrowed config's text."""
        self.refuse_narrowed = False
        self.refuse_whole = False

    async def test(self, conf: Path | None = None) -> None:
        if conf is None:
            self.tested.append("whole")
            if self.refuse_whole:
                raise ConfigRejected("[emerg] the whole config is refused")
            return
        self.tested.append(conf.read_text())
        if self.refuse_narrowed:
            raise ConfigRejected("[emerg] the narrowed config is refused")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "agent"
    for name in ("sites-available", "sites-enabled"):
        (root / name).mkdir(parents=True)
    (root / "sites-enabled" / "_vhost-operator.conf").write_text("# definitions\n")
    for hostname in ("a.example.com", "b.example.com", "c.example.com"):
        (root / "sites-available" / f"{hostname}.conf").write_text(f"# {hostname}\n")
        os.symlink(
            f"../sites-available/{hostname}.conf", root / "sites-enabled" / f"{hostname}.conf"
        )
    return root


def workspace(
    root: Path, main: str, touched: set[str]
) -> tuple[BatchTestingWorkspace, RecordingNginx]:
    conf = root.parent / "nginx.conf"
    conf.write_text(main)
    nginx = RecordingNginx(conf)
    return BatchTestingWorkspace(root, nginx, AgentStats(), touched=touched), nginx


def main_config(root: Path) -> str:
    return f"http {{\n    include {root}/sites-enabled/*.conf;\n}}\n"


def test_a_batch_is_tested_with_the_definitions_and_its_enabled_sites_only(root: Path) -> None:
    """c.example.com was written but is disabled (no link): nginx would not load it either.
    The shared HTTPS servers, with every site listed in them, are always included."""
    (root / "sites-enabled" / "c.example.com.conf").unlink()
    batch, nginx = workspace(root, main_config(root), {"c.example.com", "b.example.com"})
    assert asyncio.run(batch.test()) is None
    enabled = root / "sites-enabled"
    assert nginx.tested == [
        f'http {{\n    include "{enabled}/_vhost-operator.conf"; '
        f'include "{enabled}/_vhost-shared-*.conf"; '
        f'include "{enabled}/b.example.com.conf";\n}}\n'
    ], "one test, of the narrowed config, in the order of the glob"
    assert (root / BATCH_TEST_CONFIG).read_text() == nginx.tested[0]
    assert batch.usable


def test_a_refused_batch_is_judged_by_the_whole_config(root: Path) -> None:
    batch, nginx = workspace(root, main_config(root), {"a.example.com"})
    nginx.refuse_narrowed = nginx.refuse_whole = True
    assert asyncio.run(batch.test()) == "[emerg] the whole config is refused"
    assert nginx.tested[1:] == ["whole"]
    assert batch.usable, "the two agree: the narrowing holds"


def test_narrowing_is_given_up_when_only_the_narrowed_config_fails(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A main config with a relative path the copy cannot resolve, say: the whole config is the
    verdict, and from then on the only test."""
    batch, nginx = workspace(root, main_config(root), {"a.example.com"})
    nginx.refuse_narrowed = True
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(batch.test()) is None
    assert "testing the whole config from now on" in caplog.text
    assert not batch.usable
    assert asyncio.run(batch.test()) is None
    assert nginx.tested[1:] == ["whole", "whole"]


def test_a_main_config_that_cannot_be_narrowed_is_tested_whole(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    batch, nginx = workspace(root, "http { include /elsewhere/*.conf; }", {"a.example.com"})
    with caplog.at_level(logging.INFO):
        assert asyncio.run(batch.test()) is None
    assert nginx.tested == ["whole"]
    assert "testing nginx's whole config before every reload" in caplog.text
    assert not batch.usable
