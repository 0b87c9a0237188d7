"""Removing what a test node leaves on the machine: processes, mounts, iptables chains, the pod
bridge, cgroups. Every function is safe to call twice, or when nothing of a node exists.

Each removes only what a node made: its processes and mounts are found by its work directory,
its iptables chains by the prefixes kubelet, kube-proxy and the CNI plugins use (podman on
these machines uses netavark, whose chains are ``NETAVARK_*``), its cgroups by kubelet's
``kubepods`` root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

CHAIN_PREFIXES = ("KUBE-", "CNI-", "VHOST-NODE-")
"""kubelet and kube-proxy (KUBE-*), the bridge and portmap plugins (CNI-*), the harness's own."""
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """A cleanup command: failures are expected (nothing to remove) and logged, never raised."""
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if completed.returncode != 0:
        log.debug("%s: %s", shlex.join(argv), completed.stderr.strip())
    return completed


# -- processes ------------------------------------------------------------------------------


def pids_with_argument(fragment: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        if any(fragment.encode() in argument for argument in argv):
            pids.append(int(entry.name))
    return pids


def _kubepods_cgroups() -> list[Path]:
    """Every kubepods cgroup directory, deepest first, in every hierarchy."""
    found: list[Path] = []
    if not CGROUP_ROOT.is_dir():
        return found
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / KUBEPODS
        if top.is_dir():
            found += [Path(d) for d, _, _ in os.walk(top, topdown=False)]
    return found


def pids_in_kubepods() -> set[int]:
    pids: set[int] = set()
    for cgroup in _kubepods_cgroups():
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (cgroup / "cgroup.procs").read_text().split()}
    return pids


def kill_leftovers(workdir: Path) -> list[int]:
    """SIGKILL what outlived its parent: containerd shims (their arguments name the node's
    socket, under ``workdir``), daemons of a crashed run, and container processes still in
    kubelet's cgroups. Returns the pids killed."""
    pids = set(pids_with_argument(str(workdir))) | pids_in_kubepods()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    return sorted(pids)


# -- mounts ---------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040...).
    return field.encode().decode("unicode_escape")


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory).rstrip("/")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return points


def unmount_all(directory: Path) -> None:
    """Unmount everything under ``directory`` (kubelet's volumes and its bind mount of its own
    root, containerd's rootfs, shm and netns mounts), deepest first, lazily if busy."""
    for _ in range(5):
        points = sorted(set(mounts_under(directory)), key=lambda p: p.count("/"), reverse=True)
        if not points:
            return
        for point in points:
            if run("umount", point).returncode != 0:
                run("umount", "--lazy", point)


# -- iptables -------------------------------------------------------------------------------


def _ours(chain: str) -> bool:
    return chain.startswith(CHAIN_PREFIXES)


def our_rules(listing: str) -> tuple[list[list[str]], list[str]]:
    """From ``iptables -S`` output: the rules to delete (jumps into our chains from chains that
    are not ours, as ``-D`` arguments) and our chains (to flush, then delete)."""
    rules = [shlex.split(line) for line in listing.splitlines()]
    chains = [rule[1] for rule in rules if rule[:1] == ["-N"] and _ours(rule[1])]
    jumps = [
        rule[1:]
        for rule in rules
        if rule[:1] == ["-A"] and not _ours(rule[1]) and any(_ours(arg) for arg in rule[2:])
    ]
    return jumps, chains


def _remove_chains(binary: str, table: str) -> None:
    listed = run(binary, "-w", "-t", table, "-S")
    if listed.returncode != 0:
        return
    jumps, chains = our_rules(listed.stdout)
    for rule in jumps:
        run(binary, "-w", "-t", table, "-D", *rule)
    for chain in chains:
        run(binary, "-w", "-t", table, "-F", chain)
    for chain in chains:
        run(binary, "-w", "-t", table, "-X", chain)


def remove_iptables_chains() -> None:
    for binary in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            _remove_chains(binary, table)


def count_iptables_chains() -> int:
    """Rules or chains of ours still in any table: 0 after a clean teardown."""
    count = 0
    for binary in ("iptables-save", "ip6tables-save"):
        saved = run(binary).stdout
        count += sum(1 for line in saved.splitlines() if any(p in line for p in CHAIN_PREFIXES))
    return count


# -- links, cgroups, files ------------------------------------------------------------------


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def delete_link(name: str) -> None:
    """Deleting the bridge also removes its addresses and the routes through it."""
    if link_exists(name):
        run("ip", "link", "delete", name)


def remove_kubepods_cgroups() -> None:
    for cgroup in _kubepods_cgroups():
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def remaining_kubepods_cgroups() -> list[Path]:
    return _kubepods_cgroups()


def remove_links_into(directory: Path, links: Iterable[Path]) -> None:
    """Remove symlinks that point into ``directory`` (kubelet's /var/log/containers entries)."""
    for link in links:
        with contextlib.suppress(OSError):
            if link.is_symlink() and str(os.readlink(link)).startswith(str(directory)):
                link.unlink()


def remove_empty_directories(directories: Iterable[Path]) -> None:
    """rmdir, in order: a directory something else has put files in stays."""
    for directory in directories:
        with contextlib.suppress(OSError):
            directory.rmdir()
