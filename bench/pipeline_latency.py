"""Time from a hook call to the VM's last record, for one VM and for a burst.

Starts the real stack (Redis, slapd, BIND, NetBox, one worker pool per step,
the relay), fires Nova's hooks for N VMs through stevedore as Nova 21 does, and
reads the answer from the audit trail: each build chain ends with an audit
record written after every other backend, so record time minus the event's
emission time is hook-call-to-last-record. With ``--dns`` a thread also asks
BIND, sweep after sweep (a zone transfer of the forward and reverse zones), for each
VM's A and PTR records: the time from its hook call to both resolving is hook-to-DNS
(issue 14: DNS should not wait behind NetBox); a sweep's length bounds that figure's
error and is reported. Run with
the project's .venv::

    .venv/bin/python bench/pipeline_latency.py --vms 1 --vms 100
    .venv/bin/python bench/pipeline_latency.py --vms 1000 --dns --no-delete
"""

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import audit_done, latency, machine, save  # noqa: E402
from tests.demo import demo_vms  # noqa: E402
from tests.servers.stack import POOLS, Processes, Stack  # noqa: E402
from tasks.simulate import create, delete  # noqa: E402


class DnsWatch(threading.Thread):
    """Per VM, when its A and PTR records first both resolve at BIND (wall-clock time).

    Each sweep transfers the forward and reverse zones from BIND (AXFR, signed with the
    stack's TSIG key): what BIND serves, for every VM at once, in a fraction of a
    second whatever the number of VMs (asking name by name took up to 6 s a sweep for
    200 VMs, and that much error in every figure).
    """

    def __init__(self, vms: List[Any], timeout: float) -> None:
        super().__init__(daemon=True)
        from tasks.config import settings
        self.settings = settings().dns
        self.zone = self.settings.zone
        self.pending = {vm.uuid: vm for vm in vms}
        self.seen: Dict[str, float] = {}
        self.sweeps: List[float] = []
        self.deadline = time.time() + timeout

    def _records(self) -> Any:
        """(name -> its A and AAAA addresses, address -> its PTR targets) as BIND serves."""
        import dns.name
        import dns.query
        import dns.rdatatype
        import dns.reversename
        import dns.tsigkeyring
        conf = self.settings
        keyring = dns.tsigkeyring.from_text({conf.tsig_key_name: conf.tsig_secret.reveal()})
        forward: Dict[str, set] = {}
        reverse: Dict[str, set] = {}
        for zone in [self.zone] + list(conf.reverse_zones):
            origin = dns.name.from_text(zone)
            for message in dns.query.xfr(conf.server, origin, port=conf.port, keyring=keyring,
                                         keyname=conf.tsig_key_name,
                                         keyalgorithm=conf.tsig_algorithm, lifetime=30):
                for rrset in message.answer:
                    name = rrset.name.derelativize(origin)
                    if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                        forward.setdefault(name.to_text(omit_final_dot=True), set()).update(
                            r.address for r in rrset)
                    elif rrset.rdtype == dns.rdatatype.PTR:
                        reverse.setdefault(dns.reversename.to_address(name), set()).update(
                            r.target.to_text() for r in rrset)
        return forward, reverse

    def _resolves(self, vm: Any, forward: Dict[str, set], reverse: Dict[str, set]) -> bool:
        import ipaddress
        addresses = {str(ipaddress.ip_address(a)) for a, _ in vm.addresses}
        return forward.get("%s.%s" % (vm.hostname, self.zone)) == addresses and \
            all(reverse.get(a) for a in addresses)

    def run(self) -> None:
        while self.pending and time.time() < self.deadline:
            began = time.time()
            try:
                forward, reverse = self._records()
            except Exception:  # noqa: BLE001 - a transfer that failed is asked again
                time.sleep(0.2)
                continue
            now = time.time()
            for uuid, vm in list(self.pending.items()):
                if self._resolves(vm, forward, reverse):
                    self.seen[uuid] = now
                    del self.pending[uuid]
            self.sweeps.append(time.time() - began)
            time.sleep(0.05)


def run_burst(stack: Stack, count: int, offset: int, dns: bool = False,
              remove: bool = True, wait: float = 0, until_dns: bool = False) -> Dict[str, Any]:
    vms = demo_vms(count + offset)[offset:]
    uuids = {vm.uuid for vm in vms}
    wait = wait or 120 + count * 2
    watch: Optional[DnsWatch] = DnsWatch(vms, wait) if dns else None
    if watch is not None:
        watch.start()
    fired_at: Dict[str, float] = {}
    started = time.time()
    for vm in vms:
        fired_at[vm.uuid] = time.time()
        create(vm)
    fired = time.time() - started
    deadline = started + wait
    while True:
        done = audit_done(stack.audit_path, ("build",), uuids)
        if len(done) == count or until_dns and watch is not None and not watch.pending:
            break
        if time.time() >= deadline:
            if watch is None or not done:
                raise SystemExit("only %d of %d VMs finished" % (len(done), count))
            break
        time.sleep(0.2)
    if len(done) < count:
        print("only %d of %d VMs finished: their figures follow" % (len(done), count))
    found = {"vms": count, "finished": len(done), "hooks_fired_s": round(fired, 2),
             "stopped_after_s": round(time.time() - started, 2)}  # type: Dict[str, Any]
    if done:
        latencies = sorted(r["time"] - r["emitted_at"] for r in done.values())
        wall = max(r["time"] for r in done.values()) - started
        print("vms=%d hooks_fired_in=%.2fs first_to_last_record=%.2fs throughput=%.1f vm/s "
              "latency_p50=%.2fs latency_max=%.2fs" % (
                  len(done), fired, wall, len(done) / wall, latencies[len(latencies) // 2],
                  latencies[-1]), flush=True)
        found.update({"wall_s": round(wall, 2), "vm_per_s": len(done) / wall,
                      "last_record": latency(latencies)})
    if watch is not None:
        watch.join(timeout=max(0.0, watch.deadline - time.time()) + 5)
        to_dns = [seen - fired_at[uuid] for uuid, seen in watch.seen.items()]
        found["dns"] = latency(to_dns) if to_dns else {}
        found["dns_resolved"] = len(to_dns)
        found["dns_sweep_max_s"] = round(max(watch.sweeps), 2) if watch.sweeps else None
        if to_dns:
            print("vms=%d hook_to_A_and_PTR p50=%.2fs p99=%.2fs max=%.2fs (%d resolved, "
                  "sweeps up to %.2fs)" % (count, found["dns"]["p50_ms"] / 1000,
                                          found["dns"]["p99_ms"] / 1000,
                                          found["dns"]["max_ms"] / 1000, len(to_dns),
                                          found["dns_sweep_max_s"]), flush=True)
    if not remove:
        return found
    for vm in vms:
        delete(vm)
    deadline = time.time() + 120 + count * 2
    while len(audit_done(stack.audit_path, ("delete",), uuids)) < count and \
            time.time() < deadline:
        time.sleep(0.2)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, action="append", help="burst size (repeatable)")
    parser.add_argument("--dns", action="store_true",
                        help="also time each VM's hook call to A and PTR resolving at BIND")
    parser.add_argument("--no-delete", action="store_true",
                        help="leave each burst's VMs registered (a private stack: saves the "
                             "delete burst's time)")
    parser.add_argument("--wait", type=float, default=0,
                        help="seconds a burst may take (default 120 + 2 per VM); with --dns, "
                             "what finished by then is reported")
    parser.add_argument("--until-dns", action="store_true",
                        help="with --dns, stop waiting once every VM resolved at BIND (the "
                             "chains' last-record figures are then those of the finished)")
    parser.add_argument("--pool", action="append", default=[], metavar="QUEUE=N",
                        help="worker processes of one queue's pool instead of "
                             "tests/servers/stack.py POOLS (repeatable), e.g. dns=4")
    parser.add_argument("--json", default=None,
                        help="results file (default bench/results/pipeline_latency.json)")
    args = parser.parse_args()
    for item in args.pool:
        queue, _, count = item.partition("=")
        if queue not in POOLS or not count.isdigit() or int(count) < 1:
            parser.error("--pool %s: QUEUE=N with QUEUE one of %s" % (item, ", ".join(POOLS)))
        POOLS[queue] = int(count)  # this process's copy: Processes.start_workers reads it
    stack = Stack(Path(tempfile.mkdtemp(prefix="novahooks-bench-")), progress=print).start()
    os.environ["NOVAHOOKS_CONFIG"] = str(stack.config_path)
    procs = Processes(stack, progress=print)
    try:
        procs.start_workers()
        procs.start_relay()
        offset = 0
        bursts = []
        load = machine()
        for count in args.vms or [1, 100]:
            bursts.append(run_burst(stack, count, offset, args.dns, not args.no_delete,
                                    args.wait, args.until_dns))
            offset += count
        save("pipeline_latency", {"machine_before": load, "machine_after": machine(),
                                  "pools": dict(POOLS), "bursts": bursts}, args.json)
    finally:
        procs.stop()
        stack.stop()


if __name__ == "__main__":
    main()
