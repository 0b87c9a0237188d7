"""The ``kubectl vhost`` command line: options where kubectl users put them."""

from __future__ import annotations

import pytest

from vhost_operator.kubectl.main import _parser, status_command


@pytest.mark.parametrize(
    "argv",
    [
        ["--kubeconfig", "/k", "--context", "c", "--nginx-namespace", "web", "status", "h"],
        ["status", "h", "--kubeconfig", "/k", "--context", "c", "--nginx-namespace", "web"],
        ["--kubeconfig", "/k", "status", "--context", "c", "h", "--nginx-namespace", "web"],
    ],
)
def test_connection_options_before_or_after_the_command(argv: list[str]) -> None:
    arguments = _parser().parse_args(argv)
    assert (arguments.kubeconfig, arguments.context, arguments.nginx_namespace) == (
        "/k",
        "c",
        "web",
    )
    assert arguments.name == "h" and arguments.run is status_command


def test_options_not_given_keep_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VHOST_OPERATOR_NGINX_NAMESPACE", "from-env")
    arguments = _parser().parse_args(["--kubeconfig", "/k", "retry", "h", "--wait"])
    assert (arguments.kubeconfig, arguments.context) == ("/k", None)
    assert arguments.nginx_namespace == "from-env"
    assert arguments.wait is True and arguments.timeout == 300.0
