"""kopf handlers: thin translations of watch events into calls of plain, typed functions.

Importing this package registers the handlers with kopf's default registry.
"""

from vhost_operator.handlers import lifecycle, virtualhosts

__all__ = ["lifecycle", "virtualhosts"]
