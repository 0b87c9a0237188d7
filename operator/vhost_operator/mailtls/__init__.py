"""The mail TLS agent (``vhost-operator mail-tls-agent``): a sidecar next to Postfix and/or
Dovecot that gives each of them every host's certificate for the names it carries (SNI), the
way the nginx agent gives nginx its sites.

Layers, from pure to I/O:

- ``desired``: raw TLS Secret dicts → which certificate serves which names (pure).
- ``render``: those hosts → the files of one generation for Postfix (``tls_server_sni_maps``
  source) and Dovecot (``local_name`` blocks), and the report (pure).
- ``generations``: a generation written to disk, made current by one symlink, pruned
  (filesystem I/O).
- ``services``: build, check and reload Postfix (``postmap -F``, ``postfix check``,
  ``postfix reload``) and Dovecot (``doveconf -n``, ``doveadm reload``) (process I/O).
- ``agent``: the watch → fold a burst → per service: write, check, switch, reload → report loop
  (Kubernetes I/O via ``kube.mailtls``).
- ``settings``: ``VHOST_MAILTLS_*``.
"""
