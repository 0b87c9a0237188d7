"""The provisioning chain: ordered, idempotent steps that take a VirtualHost to Ready.

``chain`` runs steps and records them; ``decisions`` says whether a change calls for a run. Steps
reach the outside world only through the interfaces they are given, so the runner and the
decisions are tested without a cluster.
"""
