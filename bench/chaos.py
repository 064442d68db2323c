"""Chaos run: a burst of VMs while worker processes are SIGKILLed, then count every record.

Starts everything it needs itself (private Redis, slapd, BIND, NetBox, one
worker pool per step, the relay; with ``--broker rabbitmq`` a private vhost on
the machine's RabbitMQ as the Celery broker), fires Nova's hooks for N VM
creates through stevedore as Nova 21 does, while every ``--kill-every``
seconds one worker pool (rotating over the queues) is SIGKILLed as a whole
process group, the way a container or the OOM killer takes it, and started
again. After the audit trail shows every chain done (stalled chains are
finished with the ledger's reconcile, as an operator's cron would), it asks
the servers themselves what they hold for each VM: NetBox IP addresses and
virtual machines by custom field ``nova_instance_uuid``, LDAP entries by
``description``, DNS A/AAAA records through dnspython. Then the same for N
deletes and what is left behind. Run with the project's .venv::

    .venv/bin/python bench/chaos.py --events 100 --kill-every 5
    .venv/bin/python bench/chaos.py --events 50 --broker rabbitmq

The last line is ``events=N lost=L duplicated=D max_hook_ms=X`` (lost and
duplicated count records of live VMs after the creates, summed over the
backends; max_hook_ms is the slowest single hook method call, the process's
first one included, which opens the outbox); the lines before it give what the
deletes left behind and how many messages were parked as poison (none is: no
message here kills its worker; the pools are killed from outside). The exit
code is 1 if anything was lost, duplicated, left behind or parked, 2 if the run
could not be set up. ``--json FILE`` writes the numbers for bench/results/.

With Redis, a SIGKILLed worker's reserved messages stay unacknowledged until the
broker's visibility timeout, so the run sets ``[broker] visibility_timeout`` to
``--visibility-timeout`` (default 60 s, above the stack's longest retry
countdown of 30 s). With the product default of 1800 s those messages wait half
an hour, and a chain whose *first* step was among them has no ledger progress
yet, so reconcile cannot see it either until then.
"""

import argparse
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from tasks import simulate  # noqa: E402
from tests.servers.stack import FORWARD_ZONE, POOLS, Processes, Stack  # noqa: E402
from tasks.simulate import Vm, with_uuid  # noqa: E402

BACKENDS = ("netbox_vm", "netbox_ip", "ldap", "dns")


# --------------------------------------------------------------------------- VMs and hooks

def chaos_vms(count: int, prefix: str = "chaos", first_octet: int = 40) -> List[Vm]:
    """`count` Linux VMs with one IPv4 address each, unique hostnames and UUIDs."""
    vms = []
    for i in range(count):
        vm = with_uuid(Vm("x", (("10.20.%d.%d" % (first_octet + i // 250, i % 250 + 2),
                                 "fa:16:3e:7a:%02x:%02x" % (i // 256, i % 256)),)))
        vms.append(vm._replace(hostname="%s-%04d-%s" % (prefix, i, vm.uuid[:6])))
    return vms


class HookTimer(object):
    """Times each hook method call exactly where Nova's HookManager makes it."""

    def __init__(self) -> None:
        self.times = []  # type: List[float]
        self._original = simulate._run

    def _run(self, name: str, phase: str, *args: Any, **kwargs: Any) -> None:
        for ext in simulate._hooks(name).extensions:
            method = getattr(ext.obj, phase, None)
            if method is not None:
                started = time.perf_counter()
                method(*args, **kwargs)
                self.times.append(time.perf_counter() - started)

    def __enter__(self) -> "HookTimer":
        simulate._run = self._run
        return self

    def __exit__(self, *exc: object) -> None:
        simulate._run = self._original

    @property
    def max_ms(self) -> float:
        return max(self.times) * 1000.0 if self.times else 0.0


# --------------------------------------------------------------------------- audit trail

def audit_failures(audit: Path, uuids: Set[str]) -> List[Dict[str, Any]]:
    failed = []
    if audit.exists():
        for line in audit.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("stage") == "failed" and record.get("instance_uuid") in uuids:
                failed.append(record)
    return failed


# --------------------------------------------------------------------------- the servers' view

def count_records(stack: Stack, vms: Sequence[Vm]) -> Dict[str, Dict[str, int]]:
    """uuid -> backend -> how many records the server itself holds for that VM."""
    import dns.message
    import dns.query
    import dns.rdatatype
    import pynetbox
    import ssl
    from ldap3 import Connection, Server, Tls
    from ldap3.utils.conv import escape_filter_chars

    netbox, slapd, bind = stack.netbox, stack.slapd, stack.bind  # type: Any, Any, Any
    counts = {vm.uuid: dict.fromkeys(BACKENDS, 0) for vm in vms}
    api = pynetbox.api(netbox.url, token=netbox.token)
    field = "nova_instance_uuid"
    for backend, endpoint in (("netbox_vm", api.virtualization.virtual_machines),
                              ("netbox_ip", api.ipam.ip_addresses)):
        if len(vms) <= 10:
            records = itertools.chain.from_iterable(
                endpoint.filter(**{"cf_" + field: vm.uuid}) for vm in vms)
        else:
            records = endpoint.all(limit=1000)
        for record in records:
            # checked here too: NetBox silently ignores a filter it does not know
            owner = (record.custom_fields or {}).get(field)
            if owner in counts:
                counts[owner][backend] += 1

    tls = Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=str(slapd.ca_file))
    conn = Connection(Server(slapd.url, tls=tls), slapd.admin_dn, slapd.admin_password,
                      receive_timeout=30)
    conn.open()
    conn.start_tls()
    if not conn.bind():
        raise RuntimeError("LDAP admin bind failed: %s" % conn.result)
    try:
        for vm in vms:
            conn.search(slapd.hosts_base, "(description=%s)" % escape_filter_chars(vm.uuid),
                        attributes=["description"])
            counts[vm.uuid]["ldap"] = len(conn.entries)
    finally:
        conn.unbind()

    for vm in vms:
        fqdn = "%s.%s." % (vm.hostname, FORWARD_ZONE)
        for rdtype in ("A", "AAAA"):
            query = dns.message.make_query(fqdn, rdtype)
            answer = dns.query.tcp(query, "127.0.0.1", port=bind.port, timeout=10)
            counts[vm.uuid]["dns"] += sum(len(rrset) for rrset in answer.answer
                                          if rrset.rdtype == dns.rdatatype.from_text(rdtype))
    return counts


def expected(vm: Vm) -> Dict[str, int]:
    return {"netbox_vm": 1, "netbox_ip": len(vm.addresses), "ldap": 1,
            "dns": len(vm.addresses)}


def compare(vms: Sequence[Vm], counts: Dict[str, Dict[str, int]], live: bool) -> Dict[str, Any]:
    """lost/duplicated per backend for live VMs; leftovers per backend for deleted ones."""
    report: Dict[str, Any] = {
        "lost": dict.fromkeys(BACKENDS, 0), "duplicated": dict.fromkeys(BACKENDS, 0),
        "leftover": dict.fromkeys(BACKENDS, 0), "bad_vms": []}
    for vm in vms:
        held = counts[vm.uuid]
        want = expected(vm) if live else dict.fromkeys(BACKENDS, 0)
        for backend in BACKENDS:
            if not live:
                report["leftover"][backend] += held[backend]
                continue
            report["lost"][backend] += max(0, want[backend] - held[backend])
            report["duplicated"][backend] += max(0, held[backend] - want[backend])
        if held != want:
            report["bad_vms"].append({"hostname": vm.hostname, "uuid": vm.uuid, "held": held,
                                      "expected": want})
    return report


# --------------------------------------------------------------------------- chaos

def kill_pool(proc: Any) -> None:
    """SIGKILL a worker pool's whole process group (master and children) and reap it."""
    try:
        os.killpg(proc.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.proc.wait(10)
    proc._fh.close()


class Killer(threading.Thread):
    """SIGKILLs one worker pool's process group every `every` seconds, then restarts it."""

    def __init__(self, procs: Processes, every: float, queues: Iterable[str] = POOLS) -> None:
        super().__init__(name="chaos-killer", daemon=True)
        self.procs = procs
        self.every = every
        self.queues = itertools.cycle(list(queues))
        self.kills = []  # type: List[str]
        self._stop_event = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            queue = next(self.queues)
            with self.lock:
                kill_pool(self.procs.workers[queue])
                self.procs.start_worker(queue)
                self.kills.append(queue)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)


def drain(stack: Stack, vms: Sequence[Vm], kinds: Sequence[str],
          timeout: float, stalled_after: float, killer: Optional[Killer],
          log: Callable[[str], None], kill_for: Optional[float] = None) -> Dict[str, Any]:
    """Wait for every VM's chains of `kinds`; stop the killer when they are done, after
    `kill_for` seconds or at half the timeout (a pool killed every second may never let a
    burst drain: the killing has to end for convergence to be shown); reconcile chains
    that made no progress for `stalled_after` seconds."""
    uuids = {vm.uuid for vm in vms}
    kill_until = timeout / 2 if kill_for is None else min(kill_for, timeout / 2)
    started = time.monotonic()
    last_count, last_change, reconciled, last_reconcile = -1, started, 0, started
    closed = -1
    while True:
        # progress is any chain closing, not only a VM whose every chain closed: a deep
        # backlog (a loaded machine) is not a stall, and reconciling it would double it
        done = common.audit_done(stack.audit_path, kinds, uuids)
        count = len({key.split(":", 1)[0] for key in done if all(
            "%s:%s" % (key.split(":", 1)[0], kind) in done for kind in kinds)})
        now = time.monotonic()
        if len(done) != closed:
            closed, last_change = len(done), now
        if count != last_count:
            last_count = count
            log("  %d/%d VMs done (%.1f s)" % (count, len(uuids), now - started))
        if count == len(uuids):
            break
        if killer is not None and killer.is_alive() and now - started > kill_until:
            log("  stopping the killer after %.0f s" % (now - started))
            killer.stop()
        if now - last_change > stalled_after and now - last_reconcile > stalled_after and \
                (killer is None or not killer.is_alive()):
            resumed = common.reconcile(stack.config_path, stalled_after)
            mine = [r for r in resumed if r["instance_uuid"] in uuids]
            reconciled += len(mine)
            last_reconcile = now
            if mine:
                log("  reconcile: resumed %d stalled chain(s): %s" % (
                    len(mine), ", ".join("%s@%s" % (r["kind"], r["resumed_at_step"])
                                         for r in mine[:5])))
        if now - started > timeout:
            log("  drain timeout: %d/%d VMs done after %.0f s" % (count, len(uuids), timeout))
            break
        time.sleep(0.5)
    if killer is not None and killer.is_alive():
        killer.stop()
    return {"seconds": time.monotonic() - started, "done": last_count, "reconciled": reconciled}


def phases(stack: Stack, procs: Processes, vms: Sequence[Vm],
           kill_every: float, stalled_after: float, drain_timeout: float,
           log: Callable[[str], None], kill_for: Optional[float] = None) -> Dict[str, Any]:
    """Create then delete every VM while pools are killed; what the servers hold after each.

    The run itself, on servers and processes already started: main() brings its own,
    tests/test_delivery.py runs a short one on the suite's.
    """
    results = {}  # type: Dict[str, Any]
    max_hook_ms = 0.0
    killer = None  # type: Optional[Killer]
    try:
        for phase, fire, kinds in (("create", simulate.create, ("create", "build")),
                                   ("delete", simulate.delete, ("delete",))):
            if kill_every > 0:
                killer = Killer(procs, kill_every)
                killer.start()
            started = time.monotonic()
            with HookTimer() as timer:
                for vm in vms:
                    fire(vm)
            max_hook_ms = max(max_hook_ms, timer.max_ms)
            log("%s: %d hook calls for %d VMs in %.2f s, max hook call %.2f ms"
                % (phase, len(timer.times), len(vms), time.monotonic() - started, timer.max_ms))
            result = drain(stack, vms, kinds, drain_timeout, stalled_after,
                           killer, log, kill_for)
            kills = killer.kills if killer is not None else []
            killer = None
            time.sleep(1.0)  # let a redelivered duplicate of a last step land before counting
            counts = count_records(stack, vms)
            report = compare(vms, counts, live=(phase == "create"))
            failed = audit_failures(stack.audit_path, {vm.uuid for vm in vms})
            results[phase] = dict(result, report=report, kills=len(kills), failed=len(failed))
            log("%s: drained %d/%d in %.1f s, %d worker kills (%s), %d chains reconciled, "
                "%d failed steps audited" % (phase, result["done"], len(vms), result["seconds"],
                                             len(kills), ", ".join(
                                                 "%s %d" % (queue, kills.count(queue))
                                                 for queue in sorted(set(kills))) or "-",
                                             result["reconciled"], len(failed)))
            if phase == "create":
                log("after creates: lost %s duplicated %s"
                    % (json.dumps(report["lost"]), json.dumps(report["duplicated"])))
            else:
                log("after deletes: left behind %s" % json.dumps(report["leftover"]))
            for bad in report["bad_vms"][:10]:
                log("  %s" % json.dumps(bad, sort_keys=True))
            for record in failed[:5]:
                log("  failed: %s %s: %s" % (record.get("hostname"), record.get("step"),
                                             str(record.get("error"))[:200]))
    finally:
        if killer is not None and killer.is_alive():
            killer.stop()
    from tasks.backends.audit.jsonl import verify
    problems = verify(str(stack.audit_path))
    log("audit chain: %s" % ("intact" if not problems else
                             "%d problem(s): %s" % (len(problems), problems[:3])))
    parked = poison_parked(stack.workdir / "logs")
    leftover = sum(results["delete"]["report"]["leftover"].values())
    log("leftover_after_delete=%d" % leftover)
    log("parked_as_poison=%d" % len(parked))
    for line in parked[:5]:
        log("  parked: %s" % line[:300])
    return {"phases": results, "max_hook_ms": max_hook_ms, "audit_problems": len(problems),
            "lost": sum(results["create"]["report"]["lost"].values()),
            "duplicated": sum(results["create"]["report"]["duplicated"].values()),
            "leftover": leftover, "parked": len(parked)}


def poison_parked(logs: Path) -> List[str]:
    """Step log lines of messages parked as poison, from every worker log."""
    lines = []
    for path in sorted(logs.glob("worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "PoisonMessage" in line and '"outcome": "parked"' in line:
                lines.append(line)
    return lines


def write_json(path: Path, args: argparse.Namespace, outcome: Dict[str, Any]) -> None:
    """The run's numbers, for bench/results/."""
    import platform
    record = {"broker": args.broker, "events": args.events, "kill_every": args.kill_every,
              "visibility_timeout": args.visibility_timeout,
              "load_before": getattr(args, "load_before", None),
              "load_after": list(os.getloadavg()), "host": platform.node(),
              "lost": outcome["lost"], "duplicated": outcome["duplicated"],
              "leftover_after_delete": outcome["leftover"], "parked": outcome["parked"],
              "max_hook_ms": round(outcome["max_hook_ms"], 2),
              "phases": {name: {key: value for key, value in phase.items() if key != "report"}
                         for name, phase in outcome["phases"].items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20, help="number of VMs (default 20)")
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    parser.add_argument("--kill-every", type=float, default=5.0,
                        help="seconds between worker kills; 0 disables them (default 5)")
    parser.add_argument("--visibility-timeout", type=int, default=60,
                        help="Redis broker: seconds before a killed worker's unacked task is "
                             "delivered again (must exceed the longest task plus retry "
                             "countdown; default 60)")
    parser.add_argument("--stalled-after", type=float, default=30.0,
                        help="seconds without progress before reconcile (default 30)")
    parser.add_argument("--drain-timeout", type=float, default=None,
                        help="seconds to wait per phase (default 180 + 3 per VM)")
    parser.add_argument("--json", default=None, help="write the numbers to this file")
    parser.add_argument("--keep-workdir", action="store_true")
    args = parser.parse_args(argv)
    args.load_before = list(os.getloadavg())
    log = lambda line: print(line, flush=True)  # noqa: E731
    drain_timeout = args.drain_timeout or 180.0 + 3.0 * args.events

    workdir = Path(tempfile.mkdtemp(prefix="novahooks-chaos-"))
    vhost = None
    broker_url = None
    if args.broker == "rabbitmq":
        try:
            from tests.servers.rabbitmq import private_vhost
            vhost = private_vhost("novahooks-chaos")
        except Exception as exc:  # noqa: BLE001 - any reason RabbitMQ cannot be used
            print("error: --broker rabbitmq is not usable here: %s: %s"
                  % (type(exc).__name__, exc), file=sys.stderr)
            return 2
        broker_url = vhost.url
    log("chaos: broker=%s events=%d kill_every=%s workdir=%s"
        % (args.broker, args.events, args.kill_every or "never", workdir))
    stack = Stack(workdir, progress=lambda line: log("  " + line), broker_url=broker_url)
    procs = None  # type: Optional[Processes]
    code, summary = 2, "events=%d lost=? duplicated=? max_hook_ms=? (run aborted)" % args.events
    try:
        stack.start()
        stack.write_config(broker={"visibility_timeout": str(args.visibility_timeout)},
                           ledger={"stalled_after": str(int(args.stalled_after))})
        os.environ["NOVAHOOKS_CONFIG"] = str(stack.config_path)
        from novahooks.nova import hooks
        hooks.reset_outbox()
        procs = Processes(stack, progress=lambda line: log("  " + line))
        procs.start_workers()
        procs.start_relay()
        outcome = phases(stack, procs, chaos_vms(args.events), args.kill_every,
                         args.stalled_after, drain_timeout, log)
        summary = "events=%d lost=%d duplicated=%d max_hook_ms=%.2f" % (
            args.events, outcome["lost"], outcome["duplicated"], outcome["max_hook_ms"])
        if args.json:
            write_json(Path(args.json), args, outcome)
        code = 1 if outcome["lost"] or outcome["duplicated"] or outcome["leftover"] or \
            outcome["parked"] else 0
    finally:
        if procs is not None:
            procs.stop()
        stack.stop()
        if vhost is not None:
            vhost.stop()
        if args.keep_workdir or code != 0:
            log("logs and audit trail kept in %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    # after everything is stopped, so that nothing can print below it
    print(summary, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
