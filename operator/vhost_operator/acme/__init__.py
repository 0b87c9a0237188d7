"""ACME: the only package that speaks to a certificate authority.

- ``keys``: private keys, CSRs and certificate inspection (pure, no I/O).
- ``challenges``: the HTTP-01 responder nginx forwards to, and the pre-validation self-check.
- ``client``: :class:`AcmeClient`, which registers the account and issues certificates, and
  the error tree every failure is mapped onto (drawn in ``client``'s docstring).

Nothing outside this package imports ``acme``, ``josepy`` or ``requests``; callers use the names
below.
"""

from vhost_operator.acme.challenges import (
    CHALLENGE_PATH,
    ChallengeResponder,
    ChallengeStore,
    SelfCheckFailed,
    SelfCheckReason,
    self_check,
    self_checker,
)
from vhost_operator.acme.client import (
    AcmeClient,
    AcmeConfig,
    AcmeError,
    AcmeRefused,
    AcmeRetryLater,
    AcmeUnavailable,
    ChallengeFailed,
    ChallengeHook,
    IssuedCertificate,
    OrderHook,
)
from vhost_operator.acme.keys import (
    CertificateInfo,
    KeyMaterialError,
    certificate_matches_key,
    csr_pem,
    inspect_certificate,
    new_private_key_pem,
    renewal_time,
)

__all__ = [
    "CHALLENGE_PATH",
    "AcmeClient",
    "AcmeConfig",
    "AcmeError",
    "AcmeRefused",
    "AcmeRetryLater",
    "AcmeUnavailable",
    "CertificateInfo",
    "ChallengeFailed",
    "ChallengeHook",
    "ChallengeResponder",
    "ChallengeStore",
    "IssuedCertificate",
    "KeyMaterialError",
    "OrderHook",
    "SelfCheckFailed",
    "SelfCheckReason",
    "certificate_matches_key",
    "csr_pem",
    "inspect_certificate",
    "new_private_key_pem",
    "renewal_time",
    "self_check",
    "self_checker",
]
