"""Which iptables rules a test node's teardown removes: only its own, and every jump into them."""

from __future__ import annotations

from tests.harness.node_cleanup import our_rules

# `iptables -t nat -S` of a machine running the node next to podman (netavark) and a rule of
# the administrator's own.
LISTING = """\
-P PREROUTING ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N CNI-HOSTPORT-DNAT
-N CNI-a1b2c3
-N KUBE-SERVICES
-N KUBE-SVC-NPX46M4PTMTKRN6Y
-N NETAVARK-HOSTPORT-DNAT
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT
-A OUTPUT -d 10.1.2.3/32 -j DNAT --to-destination 127.0.0.1:8080
-A POSTROUTING -s 198.18.0.2/32 -m comment --comment "name: \\"vhost-node\\"" -j CNI-a1b2c3
-A KUBE-SERVICES -d 198.18.128.1/32 -p tcp -j KUBE-SVC-NPX46M4PTMTKRN6Y
-A NETAVARK-HOSTPORT-DNAT -p tcp --dport 8080 -j DNAT --to-destination 10.88.0.2:80
"""


def test_only_our_chains_and_the_jumps_into_them_are_removed() -> None:
    jumps, chains = our_rules(LISTING)
    assert chains == [
        "CNI-HOSTPORT-DNAT",
        "CNI-a1b2c3",
        "KUBE-SERVICES",
        "KUBE-SVC-NPX46M4PTMTKRN6Y",
    ]
    assert jumps == [
        ["PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j",
         "KUBE-SERVICES"],
        ["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"],
        ["POSTROUTING", "-s", "198.18.0.2/32", "-m", "comment", "--comment",
         'name: "vhost-node"', "-j", "CNI-a1b2c3"],
    ]  # fmt: skip


def test_nothing_of_ours_means_nothing_to_remove() -> None:
    assert our_rules(
        "-P FORWARD ACCEPT\n-N NETAVARK_FORWARD\n-A FORWARD -j NETAVARK_FORWARD\n"
    ) == (
        [],
        [],
    )
