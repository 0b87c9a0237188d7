"""vhost-operator: a branded public hostname for every mail domain.

Layers, from the outside in (a module may import only from layers below its own):

- ``cli``, ``handlers``: entry points. kopf handlers translate events into calls of plain,
  typed functions and hold no logic of their own.
- ``provisioning``: the chain of steps that takes a VirtualHost from Pending to Ready.
- ``kube``: the only package that talks to the Kubernetes API; maps API errors onto ``errors``.
- ``resources``, ``settings``, ``errors``: pure data and rules. No I/O happens there.
"""

__version__ = "0.1.0"
