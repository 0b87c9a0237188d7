"""``make bench``: start real servers, measure, print one summary table.

Items (see ``bench/README.md``): 1. N VirtualHosts applied at once through the whole product
(the headline, on an API server without an audit log; 10,000 hosts with ``--large``), one
round on an audited API server that attributes API requests to components, then the same N
certificates from two peers (a bare ``acme`` client, certbot) for ratios, and what 10,000
hosts take against the production CA's order limit;
2. webhook latency at a fixed rate; 3. the renewal scan over 10,000 hosts; 4. operator memory at
1,000 and 10,000 hosts; 5. the nginx agent applying 1,000 changes; 6. tenancy gate latency;
7. the API server's CPU per request, for each kind of request a new host brings.

Four local control planes, one after another: one without an audit log for the serving stack
(items 1, 2, 5, 6), an audited one for item 1's attribution round, a fresh audited one for
the 10,000-host items (3, 4), and one for item 7's requests, so no set of objects slows another
down. Every process started
here is stopped on the way out, also on Ctrl-C or an error.

    python -m bench.run                       # the full run (~12 minutes on 2 cores)
    python -m bench.run --large               # and 10,000 hosts through pebble in item 1
    python -m bench.run --quick               # small N everywhere, a couple of minutes
    python -m bench.run --only 1,2 --hosts 50 # some items, other sizes
"""

from __future__ import annotations

import argparse
import functools
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import agent, apicost, gate, peers, provisioning, scale
from bench.cluster import Client, bench_cluster
from bench.measure import Machine, load, reference_seconds
from bench.report import Figure, median_seconds, say, spread, table
from tests.harness.audit import AuditedControlPlane

ITEMS = ("1", "2", "3", "4", "5", "6", "7")


LARGE_ROUND = provisioning.LARGE


def _counts(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def rounds_of(hosts: str, *, large: bool, repeat: int = 1) -> list[int]:
    """Item 1's headline rounds: each of ``--hosts`` ``repeat`` times in a row, then 10,000
    once with ``--large`` (unless listed)."""
    rounds = [count for count in _counts(hosts) for _ in range(repeat)]
    return [*rounds, LARGE_ROUND] if large and LARGE_ROUND not in rounds else rounds


def attribution_size(rounds: Sequence[int], requested: int | None) -> int:
    """Hosts of the attribution round (on an audited plane): as requested, else the largest
    headline round up to 1,000 (requests per host hardly change beyond; 10,000 more hosts on
    an audited plane would double a ``--large`` run's time)."""
    if requested is not None:
        return requested
    return min(max(rounds, default=0), 1000)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", default="100,1000", help="item 1: rounds of N hosts")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="item 1: run each --hosts round this many times (the summary gives the median and "
        "the range; --large's 10,000-host round runs once)",
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help=f"item 1: a round of {LARGE_ROUND:,} hosts after the others (tens of minutes)",
    )
    parser.add_argument(
        "--attribution-hosts",
        type=int,
        default=None,
        help="item 1: hosts of the round on an audited API server that attributes API requests "
        "to components (default: the largest round up to 1000; 0: none)",
    )
    parser.add_argument("--memory-hosts", default="1000,10000", help="item 4: host counts")
    parser.add_argument("--scan-hosts", type=int, default=10_000, help="item 3 in-process")
    parser.add_argument(
        "--agent-sites",
        default="1000",
        help="item 5: rounds of N sites; 1000,10000 adds the optional 10,000-site round",
    )
    parser.add_argument("--webhook-rate", type=float, default=50, help="item 2: requests/s")
    parser.add_argument("--webhook-seconds", type=float, default=10, help="item 2: duration")
    parser.add_argument("--gate-requests", type=int, default=2000, help="item 6: per endpoint")
    parser.add_argument(
        "--request-count", type=int, default=300, help="item 7: requests of each kind"
    )
    parser.add_argument(
        "--request-present",
        type=int,
        default=2000,
        help="item 7: VirtualHosts created before the last measurement (0: none)",
    )
    parser.add_argument(
        "--certbot-max",
        type=int,
        default=100,
        help="item 1: run certbot for rounds up to this N (about 0.7 s per certificate)",
    )
    parser.add_argument("--no-peers", action="store_true", help="item 1 without its peers")
    parser.add_argument("--only", default=",".join(ITEMS), help="comma-separated items to run")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: 20 hosts, 200/1000 for memory, ..."
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs here")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.hosts, arguments.memory_hosts = "20", "200,1000"
        arguments.scan_hosts, arguments.agent_sites = 1000, "100"
        arguments.webhook_seconds, arguments.gate_requests = 3, 300
        arguments.request_count, arguments.request_present = 100, 0
    arguments.rounds = rounds_of(arguments.hosts, large=arguments.large, repeat=arguments.repeat)
    arguments.attribution_hosts = attribution_size(arguments.rounds, arguments.attribution_hosts)
    return arguments


def _interrupt(signum: int, _: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse(argv)
    # SIGTERM (and SIGINT, which a background job ignores otherwise) end the run like Ctrl-C:
    # the finally blocks stop every server this run started.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    only = set(arguments.only.split(","))
    machine = Machine.here()
    workdir = arguments.workdir or Path(tempfile.mkdtemp(prefix="vhost-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"machine: {machine.describe()}; load average {load()}; logs in {workdir}")
    reference = reference_seconds()
    say(f"machine speed: the reference workload took {reference:.3f}s (bench.measure)")
    started = time.monotonic()
    figures: list[Figure] = []
    try:
        if only & {"1", "2", "5", "6"}:
            figures += serving_items(arguments, only, workdir / "serving")
        if only & {"3", "4"}:
            figures += scale_items(arguments, only, workdir / "scale")
        if "7" in only:
            costs = functools.partial(
                apicost.request_costs,
                workdir / "requests",
                arguments.request_count,
                arguments.request_present,
            )
            figures += guarded(apicost.ITEM, costs)
    except KeyboardInterrupt:
        say("interrupted; the figures so far:")
    finally:
        say(f"\n== summary ({time.monotonic() - started:.0f}s) ==")
        say(f"machine: {machine.describe()}; load average at the end {load()}")
        figures.insert(0, machine_speed(reference, reference_seconds()))
        say(table(figures))
    if arguments.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(f.met is not False for f in figures) else 1


def machine_speed(at_start: float, at_end: float) -> Figure:
    """The reference workload's time before and after the run: figures of runs whose
    yardsticks differ are not comparable as they are (``bench.measure.reference_seconds``)."""
    return Figure(
        "0. machine", "reference workload (start / end)", f"{at_start:.3f} / {at_end:.3f} s"
    )


def serving_items(arguments: argparse.Namespace, only: set[str], workdir: Path) -> list[Figure]:
    """Items 1, 2, 5, 6 on a plane without an audit log (the headline), then item 1's
    attribution round on a fresh, audited plane with a stack of its own, then item 1's peers."""
    figures: list[Figure] = []
    say("\nstarting a control plane (etcd, kube-apiserver without an audit log)...")
    with bench_cluster(workdir / "plane", audited=False) as plane:
        client = Client(plane.kubeconfig)
        for count in _counts(arguments.agent_sites) if "5" in only else []:
            figures += guarded(
                f"5. nginx agent, {count} sites",
                functools.partial(
                    agent.agent_burst,
                    plane,
                    client,
                    workdir / f"agent-{count}",
                    count,
                    timeout=max(300, count * 0.1),
                ),
            )
        if only & {"1", "2"}:
            rounds = arguments.rounds if "1" in only else []
            figures += stack_items(
                plane, client, workdir / "stack", rounds, arguments, webhook="2" in only
            )
        if "6" in only:
            figures += guarded(
                "6. tenancy gate",
                lambda: gate.gate_latency(plane, client, workdir / "gate", arguments.gate_requests),
            )
    if "1" in only:
        if arguments.attribution_hosts:
            say(
                f"\nstarting a control plane with an audit log for the attribution round "
                f"({arguments.attribution_hosts} hosts)..."
            )
            with bench_cluster(workdir / "audited-plane", audited=True) as plane:
                client = Client(plane.kubeconfig)
                rounds = [arguments.attribution_hosts]
                stack = workdir / "audited-stack"
                figures += stack_items(plane, client, stack, rounds, arguments, webhook=False)
        figures.append(peers.production_limits())
        if not arguments.no_peers:
            figures += peer_figures(arguments, figures, workdir / "peers")
    return figures


def stack_items(
    plane: AuditedControlPlane,
    client: Client,
    workdir: Path,
    rounds: Sequence[int],
    arguments: argparse.Namespace,
    *,
    webhook: bool,
) -> list[Figure]:
    """Item 1's rounds one after another on one serving stack (each round's hosts deleted
    before the next), then item 2 (the webhook) if asked."""
    figures: list[Figure] = []
    stack = provisioning.ServingStack(plane, workdir)
    try:
        stack.start()
        for number, count in enumerate(rounds):
            name = f"round{number}"
            measure = functools.partial(
                provisioning.provision,
                stack,
                client,
                count,
                round_name=name,
                timeout=provisioning.round_timeout(count),
            )
            figures += guarded(provisioning.round_item(count, audited=plane.audited), measure)
            if number < len(rounds) - 1:
                provisioning.delete_round(client, name, count)
        if not plane.audited:
            figures += spreads(figures, rounds)
        if webhook:
            figures += guarded(
                "2. webhook",
                lambda: provisioning.webhook_latency(
                    stack,
                    client,
                    rate=arguments.webhook_rate,
                    seconds=arguments.webhook_seconds,
                ),
            )
    finally:
        stack.stop()
    return figures


def spreads(figures: Sequence[Figure], rounds: Sequence[int]) -> list[Figure]:
    """The median and range of each headline size that ran more than once, in order."""
    found = (
        spread(
            figures, provisioning.round_item(count, audited=False), provisioning.ready_target(count)
        )
        for count in dict.fromkeys(rounds)
    )
    return [summary for summary in found if summary is not None]


def peer_figures(
    arguments: argparse.Namespace, figures: list[Figure], workdir: Path
) -> list[Figure]:
    """Item 1's peers for each round's N, in the same run; the operator's time as a ratio."""
    results: list[Figure] = []
    for count in dict.fromkeys(arguments.rounds):  # each size once, against its median
        operator = median_seconds(figures, provisioning.round_item(count, audited=False))
        compare = functools.partial(
            peers.compare,
            count,
            operator,
            workdir / str(count),
            with_certbot=count <= arguments.certbot_max,
        )
        results += guarded(f"1. peers, {count} certificates", compare)
    return results


def guarded(item: str, measure: Callable[[], list[Figure]]) -> list[Figure]:
    """One item's figures; an item that fails is reported as failed, and the run goes on."""
    try:
        return measure()
    except Exception as error:
        traceback.print_exc()
        return [Figure(item, "error", f"{type(error).__name__}: {error}"[:80], "", False)]


def scale_items(arguments: argparse.Namespace, only: set[str], workdir: Path) -> list[Figure]:
    figures: list[Figure] = []
    if "3" in only:
        count = arguments.scan_hosts
        figures += scale.scan_in_process(count)
        figures += scale.scan_in_process(count, due=count // 100)[1:]
    say("\nstarting a fresh control plane for the scale items...")
    with bench_cluster(workdir / "plane", audited=True) as plane:
        client = Client(plane.kubeconfig, threads=24)
        run = scale.ScaleRun(plane, client, workdir)
        try:
            run.start_operator()
            for count in _counts(arguments.memory_hosts):
                grow = functools.partial(run.grow_to, count, timeout=max(120, count * 0.06))
                figures += guarded(f"4. operator memory, {count} hosts", grow)
            if "3" in only:
                figures += guarded("3. renewal scan in the operator", run.renewal_scan)
        finally:
            run.stop()
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
