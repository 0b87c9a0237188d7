"""ACME: the only package that speaks to a certificate authority.

- ``client``: :class:`~vhost_operator.acme.client.AcmeClient`, which registers the account and
  issues certificates, and the error tree every failure is mapped onto (drawn in its docstring).
- ``challenges``: the HTTP-01 responder nginx forwards to, and the pre-validation self-check.
- ``fake``: an in-memory CA with the two calls the certificate step makes (its
  ``CertificateAuthority`` protocol in ``provisioning.certificates``), for unit tests.

Keys, CSRs and certificate inspection are pure and live in ``vhost_operator.certs``.

Nothing outside this package imports ``acme``, ``josepy`` or ``requests`` (an import-linter
contract). Importing this package loads nothing: callers import the module they need, so only
a process that issues certificates pays for the ACME library.
"""
