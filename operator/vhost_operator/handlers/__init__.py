"""kopf handlers: thin translations of watch events into calls of plain, typed functions.

Importing this package registers the handlers with kopf's default registry; the admission
handlers only when :func:`enable_admission` is called (kopf refuses to start with admission
handlers but no webhook server).
"""

import importlib

from vhost_operator.handlers import lifecycle, maildomains, observability, renewal, virtualhosts

__all__ = [
    "enable_admission",
    "lifecycle",
    "maildomains",
    "observability",
    "renewal",
    "virtualhosts",
]


def enable_admission() -> None:
    importlib.import_module("vhost_operator.handlers.admission")
