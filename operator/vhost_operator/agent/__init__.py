"""The nginx agent (``vhost-operator nginx-agent``): a sidecar that mirrors the operator's site
ConfigMaps and TLS Secrets into nginx's directories and reloads nginx safely.

Layers, from pure to I/O:

- ``desired``: one raw ConfigMap (and its Secret) → the site nginx should serve for it (pure).
- ``state``: every ConfigMap's site from batch to batch, kept up to date from the changed
  objects: who serves each name, and what changed since the batch before (pure).
- ``plan``: desired sites vs. what is on disk → file operations per host, and the annotations to
  report (pure).
- ``apply``: apply a batch, test it, roll back and isolate the hosts nginx rejects (logic only;
  the writing and testing are passed in).
- ``testconfig``: nginx's main config narrowed to a batch's sites, to test only what changed
  (pure).
- ``files``: the on-disk layout read and written atomically, with undo (filesystem I/O).
- ``nginx``: ``nginx -t`` and a confirmed reload (process I/O).
- ``agent``: the watch → batch → apply → reload → report loop (Kubernetes I/O via ``kube.sites``).
- ``metrics``: counters, ``/healthz``, ``/readyz`` and ``/metrics``.
"""
