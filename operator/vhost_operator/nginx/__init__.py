"""nginx rendering: pure, no I/O.

Turns a validated :class:`SiteConfig` into the text of nginx ``server`` blocks. Writing the text
anywhere (ConfigMaps, files) and reloading nginx belong to other layers.
"""

from vhost_operator.nginx.render import (
    NO_SITE_NAME,
    PER_HANDSHAKE_VARIABLE,
    REDIRECT_VARIABLE,
    SERVER_NAMES_HASH_BUCKET_SIZE,
    SERVER_NAMES_HASH_MAX_SIZE,
    SHARED_HTTP_NAME,
    FinalLayout,
    RecognisedConfig,
    SiteConfig,
    config_hash,
    http_definitions,
    recognise,
    render_bootstrap,
    render_final,
    shared_http_names,
)

__all__ = [
    "NO_SITE_NAME",
    "PER_HANDSHAKE_VARIABLE",
    "REDIRECT_VARIABLE",
    "SERVER_NAMES_HASH_BUCKET_SIZE",
    "SERVER_NAMES_HASH_MAX_SIZE",
    "SHARED_HTTP_NAME",
    "FinalLayout",
    "RecognisedConfig",
    "SiteConfig",
    "config_hash",
    "http_definitions",
    "recognise",
    "render_bootstrap",
    "render_final",
    "shared_http_names",
]
