"""The provisioning chain: ordered, idempotent steps that take a VirtualHost to Ready.

``chain`` runs steps and records them; ``decisions`` says whether a change calls for a run;
``renewal`` scans for due certificates and ``renewal_info`` keeps the CA's suggested renewal
windows (ACME Renewal Information) current. Steps
reach the outside world only through the interfaces they are given, so the runner and the
decisions are tested without a cluster.
"""
