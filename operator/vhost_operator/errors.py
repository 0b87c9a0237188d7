"""The operator's exceptions, mapped from library errors at the boundary that meets them.

Our exception hierarchy::

    VhostOperatorError
    ├── InvalidResourceError    the object's spec breaks a rule; retrying cannot help
    ├── ForeignObjectError      an object at one of a host's names belongs to another host
    ├── TransientApiError       the API server was busy, timed out or had a conflict; retry soon
    └── ApiError                the API server refused the request for good
"""


class VhostOperatorError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidResourceError(VhostOperatorError):
    """The resource's spec breaks a rule; retrying cannot help until the user edits it."""


class ForeignObjectError(VhostOperatorError):
    """An object at one of a host's derived names belongs to another host: the operator
    neither overwrites nor deletes it."""


class TransientApiError(VhostOperatorError):
    """The Kubernetes API failed in a way that a retry may fix (conflict, timeout, 5xx, 429)."""


class ApiError(VhostOperatorError):
    """The Kubernetes API refused the request (forbidden, invalid, not found)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
