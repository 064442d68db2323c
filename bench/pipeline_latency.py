"""Time from a hook call to the VM's last record, for one VM and for a burst.

Starts the real stack (Redis, slapd, BIND, NetBox, one worker pool per step,
the relay), fires Nova's hooks for N VMs through stevedore as Nova 21 does, and
reads the answer from the audit trail: each build chain ends with an audit
record written after every other backend, so record time minus the event's
emission time is hook-call-to-last-record. Run with the project's .venv::

    .venv/bin/python bench/pipeline_latency.py --vms 1 --vms 100
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import audit_done  # noqa: E402
from tests.demo import demo_vms  # noqa: E402
from tests.servers.stack import Processes, Stack  # noqa: E402
from tasks.simulate import create, delete  # noqa: E402


def run_burst(stack: Stack, count: int, offset: int) -> List[float]:
    vms = demo_vms(count + offset)[offset:]
    uuids = {vm.uuid for vm in vms}
    started = time.time()
    for vm in vms:
        create(vm)
    fired = time.time() - started
    deadline = time.time() + 120 + count * 2
    while time.time() < deadline:
        done = audit_done(stack.audit_path, ("build",), uuids)
        if len(done) == count:
            break
        time.sleep(0.2)
    else:
        raise SystemExit("only %d of %d VMs finished" % (len(done), count))
    latencies = sorted(r["time"] - r["emitted_at"] for r in done.values())
    wall = max(r["time"] for r in done.values()) - started
    print("vms=%d hooks_fired_in=%.2fs first_to_last_record=%.2fs throughput=%.1f vm/s "
          "latency_p50=%.2fs latency_max=%.2fs" % (
              count, fired, wall, count / wall, latencies[len(latencies) // 2], latencies[-1]),
          flush=True)
    for vm in vms:
        delete(vm)
    deadline = time.time() + 120 + count * 2
    while len(audit_done(stack.audit_path, ("delete",), uuids)) < count and \
            time.time() < deadline:
        time.sleep(0.2)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, action="append", help="burst size (repeatable)")
    args = parser.parse_args()
    stack = Stack(Path(tempfile.mkdtemp(prefix="novahooks-bench-")), progress=print).start()
    os.environ["NOVAHOOKS_CONFIG"] = str(stack.config_path)
    procs = Processes(stack, progress=print)
    try:
        procs.start_workers()
        procs.start_relay()
        offset = 0
        for count in args.vms or [1, 100]:
            run_burst(stack, count, offset)
            offset += count
    finally:
        procs.stop()
        stack.stop()


if __name__ == "__main__":
    main()
