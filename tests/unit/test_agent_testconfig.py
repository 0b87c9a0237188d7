"""nginx's main config narrowed to a batch's sites (``vhost_operator.agent.testconfig``).

Whether nginx reads the narrowed config as meant is checked with a real nginx in
``tests/integration/test_nginx_agent.py``; here, the text."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from vhost_operator.agent.testconfig import CannotNarrow, narrowed_config

MAIN = PurePosixPath("/etc/nginx/nginx.conf")
SITES = PurePosixPath("/srv/agent/sites-enabled/*.conf")
BATCH = [
    PurePosixPath("/srv/agent/sites-enabled/_vhost-operator.conf"),
    PurePosixPath("/srv/agent/sites-enabled/a.example.com.conf"),
]


def test_the_sites_include_becomes_the_batchs_includes_in_order() -> None:
    main = (
        "events {}\nhttp {\n    server { listen 80; }\n"
        "    include /srv/agent/sites-enabled/*.conf;\n}\n"
    )
    assert narrowed_config(main, MAIN, SITES, BATCH) == (
        "events {}\nhttp {\n    server { listen 80; }\n"
        '    include "/srv/agent/sites-enabled/_vhost-operator.conf"; '
        'include "/srv/agent/sites-enabled/a.example.com.conf";\n}\n'
    )


def test_no_site_at_all_leaves_an_http_block_without_sites() -> None:
    main = "http { include /srv/agent/sites-enabled/*.conf; }"
    assert narrowed_config(main, MAIN, SITES, []) == "http {  }"


def test_relative_includes_are_made_absolute_against_the_main_configs_directory() -> None:
    """The copy lives elsewhere: nginx would resolve ``mime.types`` against the copy's directory."""
    main = (
        "include modules-enabled/*.conf;\n"
        "http { include mime.types; include '../agent/x.conf'; include /abs/y.conf;\n"
        "  include ../../srv/agent/sites-enabled/*.conf; }\n"
    )
    narrowed = narrowed_config(main, MAIN, SITES, BATCH[:1])
    assert narrowed == (
        'include "/etc/nginx/modules-enabled/*.conf";\n'
        'http { include "/etc/nginx/mime.types"; include "/etc/agent/x.conf"; '
        "include /abs/y.conf;\n"
        '  include "/srv/agent/sites-enabled/_vhost-operator.conf"; }\n'
    )


@pytest.mark.parametrize(
    "main",
    [
        pytest.param("http { include /srv/other/*.conf; }", id="not included"),
        pytest.param(
            "http { include /srv/agent/sites-enabled/*.conf; }\n"
            "http { include /srv/agent/sites-enabled/*.conf; }",
            id="included twice",
        ),
        pytest.param(
            "http {\n  # include /srv/agent/sites-enabled/*.conf;\n}", id="only in a comment"
        ),
        pytest.param(
            'http { log_format x "include /srv/agent/sites-enabled/*.conf;"; }', id="quoted"
        ),
        pytest.param("http { include /srv/agent/sites-enabled/*; }", id="another glob"),
    ],
)
def test_a_main_config_that_does_not_include_the_sites_once_cannot_be_narrowed(
    main: str,
) -> None:
    with pytest.raises(CannotNarrow, match=r"includes /srv/agent/sites-enabled/\*\.conf \d times"):
        narrowed_config(main, MAIN, SITES, BATCH)


def test_words_are_read_as_nginx_reads_them() -> None:
    """Quotes, escapes, ``${variables}`` and comments do not end a statement early, and a quoted
    ``include`` counts as the same."""
    main = (
        "http {\n"
        '    map $host ${x}y { default "a;b}"; }  # a comment with include x; and {\n'
        "    log_format main '$remote_addr \\' ;';\n"
        '    include "/srv/agent/sites-enabled/*.conf" ;\n'
        "}\n"
    )
    narrowed = narrowed_config(main, MAIN, SITES, [])
    assert narrowed == main.replace('include "/srv/agent/sites-enabled/*.conf" ;', "")


def test_a_path_with_quotes_is_escaped_in_the_copy() -> None:
    main = "http { include /srv/agent/sites-enabled/*.conf; }"
    odd = [PurePosixPath('/srv/a"b\\c.conf')]
    assert narrowed_config(main, MAIN, SITES, odd) == 'http { include "/srv/a\\"b\\\\c.conf"; }'
