"""The tenancy gate: who may sign in through which hostname, and each hostname's theme.

An HTTP service next to the operator (``vhost-operator tenancy-gate``) that the mail web app, or
nginx's ``auth_request``, asks at login time. Its layers, from the bottom:

- ``names``, ``gate``, ``themes``: PURE functions and models. No I/O, no clock, no Kubernetes;
  everything they decide is unit-tested directly.
- ``directory``: the in-memory state (hostname -> host entry), changed only by watch events; the
  only thing read per request, so a login never costs an API call.
- ``metrics``: the Prometheus counters of the answers (by reason, never by host or user) and
  the directory's size, in a registry per app.
- ``server``: the aiohttp application, the HTTP boundary (parsing, status codes, headers). It
  reads the directory and calls the pure layer; it never talks to Kubernetes.
- ``settings``: ``GateSettings`` from ``VHOST_GATE_*`` environment variables.
- ``service``: wiring. Connects to the API server, feeds the directory from a list-then-watch of
  VirtualHosts (``vhost_operator.kube.watching``) and runs the server.
"""
