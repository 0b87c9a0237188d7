"""``kubectl vhost``: the administrator's command line (installed as ``kubectl-vhost``).

``report`` turns VirtualHosts and the nginx agent's reports into text (pure: no I/O, the clock
passed in); ``main`` is the command, thin, with its API calls in ``kube.admin``.
"""
