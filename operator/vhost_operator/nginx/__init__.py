"""nginx rendering: pure, no I/O.

Turns a validated :class:`SiteConfig` into the text of nginx ``server`` blocks. Writing the text
anywhere (ConfigMaps, files) and reloading nginx belong to other layers.
"""

from vhost_operator.nginx.render import (
    CERTIFICATE_NAME_VARIABLE,
    NO_SITE_NAME,
    PER_HANDSHAKE_VARIABLE,
    REDIRECT_VARIABLE,
    SERVER_NAMES_HASH_BUCKET_SIZE,
    SERVER_NAMES_HASH_MAX_SIZE,
    SHARED_HTTP_NAME,
    SHARED_HTTPS_NAME_PREFIX,
    FinalLayout,
    RecognisedConfig,
    SharedHttpsServer,
    SiteConfig,
    config_hash,
    http_definitions,
    recognise,
    render_bootstrap,
    render_final,
    render_shared_https_server,
    shared_http_names,
    shared_https_map,
)

__all__ = [
    "CERTIFICATE_NAME_VARIABLE",
    "NO_SITE_NAME",
    "PER_HANDSHAKE_VARIABLE",
    "REDIRECT_VARIABLE",
    "SERVER_NAMES_HASH_BUCKET_SIZE",
    "SERVER_NAMES_HASH_MAX_SIZE",
    "SHARED_HTTPS_NAME_PREFIX",
    "SHARED_HTTP_NAME",
    "FinalLayout",
    "RecognisedConfig",
    "SharedHttpsServer",
    "SiteConfig",
    "config_hash",
    "http_definitions",
    "recognise",
    "render_bootstrap",
    "render_final",
    "render_shared_https_server",
    "shared_http_names",
    "shared_https_map",
]
