"""ACME: the only package that speaks to a certificate authority.

- ``client``: :class:`~vhost_operator.acme.client.AcmeClient`, which registers the account,
  issues certificates (with an ACME profile the directory lists, and ``replaces``) and fetches
  a certificate's renewal information (RFC 9773); the real ``CertificateAuthority`` of
  ``provisioning.certificates``.
- ``orders``: one issuance (resume or create the order, HTTP-01, finalize, check the chain), and
  the hook and result types of ``AcmeClient.issue``.
- ``transport``: how one request reaches the CA (nonce retries, ``Retry-After``) and runs in a
  worker thread, its failure mapped and a CA's pause kept.
- ``connections``: the client's pool of connections to the CA (its CA bundle, its proxy), and
  one request over it straight through ``urllib3``, answered and failing as ``requests`` would.
- ``errors``: the error tree every failure is mapped onto (drawn in its docstring), the mapping
  from ``acme``, ``josepy`` and ``requests``, and the stable message text.
- ``config``: :class:`~vhost_operator.acme.config.AcmeConfig`, which CA and how to talk to it.
- ``challenges``: the HTTP-01 responder nginx forwards to, and the pre-validation self-check.
- ``fake``: an in-memory CA with the calls the certificate step makes (its
  ``CertificateAuthority`` protocol in ``provisioning.certificates``), for unit tests.

Keys, CSRs and certificate inspection are pure and live in ``vhost_operator.certs``.

Nothing outside this package imports ``acme``, ``josepy`` or ``requests`` (an import-linter
contract). Importing this package loads nothing: callers import the module they need, so only
a process that issues certificates pays for the ACME library.
"""
