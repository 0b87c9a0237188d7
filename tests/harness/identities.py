"""Acting as a ServiceAccount: a kubeconfig with a token the API server issued for it.

``kubectl create token`` asks the API server's TokenRequest API, which signs with the same key
it verifies with (``--service-account-signing-key-file``): the token authenticates exactly like
the one kubelet mounts into a pod, so RBAC sees ``system:serviceaccount:<ns>:<name>`` with its
groups. No impersonation: nothing of the admin's identity is involved once the token exists.

The kubeconfig names no namespace, like the in-cluster configuration of a pod's Kubernetes
client: kopf then files Events about cluster-scoped objects in ``default``, as it does in a pod.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.harness.clusters import Cluster


def service_account_kubeconfig(
    cluster: Cluster, namespace: str, name: str, path: Path, *, duration: str = "2h"
) -> Path:
    """Write a kubeconfig for ServiceAccount ``namespace/name`` to ``path`` and return it."""
    token = cluster.kubectl(
        "create", "token", name, "--namespace", namespace, f"--duration={duration}"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in admin["contexts"]}
    cluster_name = contexts[admin["current-context"]]["cluster"]
    server = next(c for c in admin["clusters"] if c["name"] == cluster_name)
    user = f"system:serviceaccount:{namespace}:{name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [server],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def kubectl_as(
    cluster: Cluster, kubeconfig: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The cluster's kubectl with another kubeconfig: the last ``--kubeconfig`` flag wins."""
    return cluster.kubectl(f"--kubeconfig={kubeconfig}", *args, check=check)


def can_i(cluster: Cluster, kubeconfig: Path, *args: str) -> bool:
    """``kubectl auth can-i`` as the kubeconfig's identity: ``yes`` exits 0, ``no`` exits 1."""
    answer = kubectl_as(cluster, kubeconfig, "auth", "can-i", *args, check=False)
    if answer.returncode not in (0, 1):
        raise AssertionError(f"kubectl auth can-i {' '.join(args)} failed: {answer.stderr}")
    return answer.returncode == 0
