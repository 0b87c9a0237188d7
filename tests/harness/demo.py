"""``make demo``: a local control plane, the operator, the examples applied, ``kubectl get vh``.

Runs until Ctrl-C (or for ``--seconds N``), then stops every process it started.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time

from tests.harness.clusters import install_crds
from tests.harness.controlplane import REPO, LocalControlPlane
from tests.harness.operator import OperatorProcess
from tests.harness.waiting import phase_of, wait_for


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    arguments = parser.parse_args()
    workdir = REPO / ".demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    print("starting etcd + kube-apiserver (built from Go modules on first use)...", flush=True)
    plane = LocalControlPlane(workdir).start()
    operator = None
    try:
        install_crds(plane)
        operator = OperatorProcess(plane.kubeconfig, workdir, {}).start()
        print(f"operator running; log: {operator.log_path}", flush=True)
        print(plane.kubectl("apply", "-f", str(REPO / "examples")).stdout, flush=True)
        for name in ("mail-example-com", "webmail-example-net"):
            wait_for(plane, "vh", name, lambda o: phase_of(o) is not None, what="a phase")
        print(plane.kubectl("get", "vh").stdout, flush=True)
        print(
            f"Try it:  export KUBECONFIG={plane.kubeconfig}; export PATH={plane.bin}:$PATH; "
            "kubectl get vh\nStop:    Ctrl-C",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        deadline = None if arguments.seconds is None else time.monotonic() + arguments.seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping...", flush=True)
        if operator is not None:
            operator.stop()
        plane.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
