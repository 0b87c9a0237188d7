"""nginx rendering: pure, no I/O.

Turns a validated :class:`SiteConfig` into the text of nginx ``server`` blocks. Writing the text
anywhere (ConfigMaps, files) and reloading nginx belong to other layers.
"""

from vhost_operator.nginx.render import (
    PER_HANDSHAKE_VARIABLE,
    REDIRECT_VARIABLE,
    SERVER_NAMES_HASH_BUCKET_SIZE,
    SERVER_NAMES_HASH_MAX_SIZE,
    FinalLayout,
    SiteConfig,
    config_hash,
    http_definitions,
    render_bootstrap,
    render_final,
    rendered_site,
)

__all__ = [
    "PER_HANDSHAKE_VARIABLE",
    "REDIRECT_VARIABLE",
    "SERVER_NAMES_HASH_BUCKET_SIZE",
    "SERVER_NAMES_HASH_MAX_SIZE",
    "FinalLayout",
    "SiteConfig",
    "config_hash",
    "http_definitions",
    "render_bootstrap",
    "render_final",
    "rendered_site",
]
