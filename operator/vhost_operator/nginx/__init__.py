"""nginx rendering: pure, no I/O.

Turns a validated :class:`SiteConfig` into the text of nginx ``server`` blocks. Writing the text
anywhere (ConfigMaps, files) and reloading nginx belong to other layers.
"""

from vhost_operator.nginx.render import (
    HTTP_DEFINITIONS,
    PER_HANDSHAKE_VARIABLE,
    SERVER_NAMES_HASH_BUCKET_SIZE,
    SiteConfig,
    config_hash,
    render_bootstrap,
    render_final,
    rendered_site,
)

__all__ = [
    "HTTP_DEFINITIONS",
    "PER_HANDSHAKE_VARIABLE",
    "SERVER_NAMES_HASH_BUCKET_SIZE",
    "SiteConfig",
    "config_hash",
    "render_bootstrap",
    "render_final",
    "rendered_site",
]
