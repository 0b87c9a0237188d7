"""vhost-operator: a branded public hostname for every mail domain.

One package, four processes: the operator (``vhost-operator run``), the nginx agent
(``nginx-agent``, a sidecar of nginx), the tenancy gate (``tenancy-gate``) and the mail TLS
agent (``mail-tls-agent``, a sidecar of Postfix/Dovecot).

Layers, from the outside in. A module imports only from layers below its own, and the siblings
of one layer marked "independent" not from each other. ``make lint`` checks this and the rules
after it with import-linter (``[tool.importlinter]`` in pyproject.toml); a new top-level module
must be given a layer there.

1. ``__main__`` (``python -m vhost_operator``), ``reference`` (``make docs``), ``kubectl``
   (``kubectl vhost``, the administrator's plugin): entry points.
2. ``cli``: the command line; imports only the module of the process it starts.
3. ``wiring``: the operator process. Builds the API client, the ACME account and the steps
   from the settings, once, and runs kopf with them.
4. ``handlers``: kopf handlers. They translate events into calls of plain, typed functions and
   hold no logic of their own.
5. ``catalog`` (the operator's in-memory view of every host and claim, fed by watches) and
   ``admission`` (the webhook's rules and its configuration's webhooks, pure, and its TLS
   material).
6. The kinds of work, independent: ``provisioning`` (the chain of steps that takes a
   VirtualHost from Pending to Ready, renewal, MailDomain linking, the MailServing condition),
   ``agent`` (the nginx agent), ``tenancy`` (the tenancy gate) and ``mailtls`` (the mail TLS
   agent).
7. The edges, independent: ``kube`` (the only package that talks to the Kubernetes API; maps
   its errors onto ``errors``), ``acme`` (the only one that talks to a certificate authority),
   ``nginx`` (config rendering, pure), ``probes`` (what nginx really serves), ``memory``
   (freed memory back to the OS), ``metrics`` (Prometheus), ``bursts`` (folding a burst of
   changes into one batch) and ``sidecar`` (the agents' endpoint, commands and process life).
8. Data and rules, independent, no I/O: ``resources`` (our resources' models, hostnames,
   conditions, derived names, watch events), ``certs`` (keys, CSRs, certificates),
   ``settings``, ``errors``.

Further rules: only ``kube`` imports ``kubernetes``, only ``acme`` imports ``acme`` and
``josepy``. The pure modules (layer 8, ``nginx``, ``admission.rules`` and ``configuration``,
``kubectl.report``, the gate's ``names``, ``themes``, ``gate`` and ``directory``, the nginx
agent's ``desired``, ``plan`` and ``apply``, the mail TLS agent's ``desired`` and ``render``)
import none of ``kube``, ``acme``, kopf or aiohttp, not even through another module. The agents
and the gate import neither ``provisioning``, ``handlers``, kopf nor ACME code.
"""

__version__ = "0.1.0"
