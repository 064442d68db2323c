"""``./run demo``: the whole product on real servers, started and stopped here.

Part of the test bench, not of the wheel: it needs the server launchers of
``tests/servers``, which a Nova host has no use for.

Starts Redis, slapd, BIND and NetBox on loopback, a Celery worker pool per
step, the relay and Flower; fires Nova's hooks for Linux and Windows VMs
(IPv4 and IPv6) as Nova 21 would; waits while the chains run; prints what
every backend holds; deletes the VMs; shows that everything is gone; stops
all it started.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from tests.servers.stack import Processes, Stack
from tasks.simulate import Vm, create, delete, with_uuid

DEMO_VMS = (
    Vm("web-1", (("10.20.0.11", "fa:16:3e:00:00:11"), ("2001:db8:20::11", "fa:16:3e:00:00:11"))),
    Vm("db-1", (("10.20.0.12", "fa:16:3e:00:00:12"),), vcpus=4, memory_mb=8192, root_gb=80),
    Vm("win-ad-1", (("10.20.0.21", "fa:16:3e:00:00:21"), ("2001:db8:20::21", "fa:16:3e:00:00:21")),
       os_type="windows", vcpus=2, memory_mb=4096, root_gb=60),
    Vm("win-app-1", (("10.20.0.22", "fa:16:3e:00:00:22"),), os_type="windows", vcpus=2,
       memory_mb=4096, root_gb=60),
)


def demo_vms(count: int) -> List[Vm]:
    vms = list(DEMO_VMS[:count])
    for i in range(len(vms), count):
        octet = 100 + i // 250
        vms.append(Vm("vm-%03d" % i, (("10.20.%d.%d" % (octet, i % 250 + 2),
                                       "fa:16:3e:01:%02x:%02x" % (i // 256, i % 256)),)))
    return [with_uuid(vm) for vm in vms]


def holdings(vm: Vm) -> Dict[str, Any]:
    """Ask every backend directly what it holds for this VM."""
    from tasks import drivers
    from tasks.config import settings
    fqdn = "%s.%s" % (vm.hostname, settings().dns.zone)
    return {
        "dns": drivers.dns().describe(fqdn, vm.uuid, [a for a, _ in vm.addresses]),
        "ldap": drivers.directory().describe(vm.uuid)["entries"],
        "ipam": drivers.ipam().describe(vm.uuid)["addresses"],
        "inventory": drivers.inventory().describe(vm.uuid),
    }


def registered(vm: Vm, held: Dict[str, Any]) -> bool:
    dns = held["dns"]
    return (sorted(dns["A"] + dns["AAAA"]) == sorted(a for a, _ in vm.addresses)
            and all(dns["PTR"].values()) and len(held["ldap"]) == 1
            and len(held["ipam"]) == len(vm.addresses)
            and held["inventory"].get("status") == "active"
            and len(held["inventory"].get("interfaces", [])) > 0)


def gone(vm: Vm, held: Dict[str, Any]) -> bool:
    dns = held["dns"]
    return not (dns["A"] or dns["AAAA"] or any(dns["PTR"].values()) or held["ldap"]
                or held["ipam"] or held["inventory"])


def wait(vms: List[Vm], done: Callable[[Vm, Dict[str, Any]], bool], what: str,
         timeout: float = 180.0) -> Dict[str, Dict[str, Any]]:
    """Poll the backends until every VM is `done`, showing progress on the way."""
    start = time.monotonic()
    tty = sys.stdout.isatty()
    held = {}  # type: Dict[str, Dict[str, Any]]
    while True:
        held = {vm.uuid: holdings(vm) for vm in vms}
        ready = sum(1 for vm in vms if done(vm, held[vm.uuid]))
        elapsed = time.monotonic() - start
        line = "  %s: %d/%d VMs (%.1f s)" % (what, ready, len(vms), elapsed)
        print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
        if ready == len(vms):
            print()
            return held
        if elapsed > timeout:
            print()
            raise RuntimeError("%s: only %d of %d VMs after %.0f s" % (what, ready, len(vms),
                                                                      timeout))
        time.sleep(0.5 if tty else 2.0)


def table(vms: List[Vm], held: Dict[str, Dict[str, Any]]) -> str:
    rows = [("VM", "os", "DNS A/AAAA", "PTR", "LDAP entry", "IPAM (NetBox)", "inventory")]
    for vm in vms:
        h = held[vm.uuid]
        dns = h["dns"]
        inv = h["inventory"]
        rows.append((vm.hostname, vm.os_type, ", ".join(dns["A"] + dns["AAAA"]) or "-",
                     "%d/%d" % (sum(1 for v in dns["PTR"].values() if v), len(dns["PTR"])),
                     (h["ldap"][0].split(",")[0] if h["ldap"] else "-"),
                     ", ".join(h["ipam"]) or "-",
                     ("%s %s vcpu=%s mem=%s if=%s" % (inv["name"], inv["status"], inv["vcpus"],
                                                     inv["memory"], ",".join(inv["interfaces"]))
                      if inv else "-")))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths))
                     for row in rows)


def phase(vms: List[Vm], fire: Callable[[Vm], Any], done: Callable[[Vm, Dict[str, Any]], bool],
          what: str, timing: str) -> None:
    """Fire one hook per VM, wait until every backend shows ``done``, print the table."""
    started = time.monotonic()
    for vm in vms:
        fire(vm)
    held = wait(vms, done, what)
    print((timing + "\n") % (time.monotonic() - started))
    print(table(vms, held))


def run(keep: bool = False, count: int = 4) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="novahooks-demo-"))
    print("novahooks demo in %s" % workdir, flush=True)
    stack = Stack(workdir, progress=lambda line: print("  " + line, flush=True))
    procs = None
    try:
        stack.start()
        os.environ["NOVAHOOKS_CONFIG"] = str(stack.config_path)
        procs = Processes(stack, progress=lambda line: print("  " + line, flush=True))
        procs.start_workers()
        procs.start_relay()
        url = procs.start_flower()
        print("  Flower: %s (user %s, password %s)" % ((url,) + procs.flower_auth), flush=True)
        vms = demo_vms(count)
        print("\nfiring Nova's hooks for %d VMs (create_instance, build_instance, "
              "instance_network_info) ..." % len(vms), flush=True)
        phase(vms, create, registered, "registered in DNS, LDAP, IPAM and inventory",
              "all registered %.2f s after the first hook call")
        for command in ("check", "status"):
            print("\n$ novahooks %s" % command, flush=True)
            subprocess.run([sys.executable, "-m", "novahooks.cli", command], env=stack.env())
        print("\nfiring delete_instance for every VM ...", flush=True)
        phase(vms, delete, gone, "removed from every backend",
              "all removed %.2f s after the first delete hook")
        from tasks.backends.audit.jsonl import verify
        time.sleep(1.0)
        lines = stack.audit_path.read_text().splitlines()
        problems = verify(str(stack.audit_path))
        print("\naudit: %d hash-chained records in %s, chain %s" % (
            len(lines), stack.audit_path, "intact" if not problems else "BROKEN: %s" % problems))
        print("last audit record: %s" % json.dumps(json.loads(lines[-1]), sort_keys=True)[:300])
        if keep:
            print("\n--keep: servers stay up; config %s. Ctrl-C to stop." % stack.config_path)
            while True:
                time.sleep(3600)
        return 0 if not problems else 1
    except KeyboardInterrupt:
        return 130
    finally:
        print("stopping everything the demo started ...", flush=True)
        if procs is not None:
            procs.stop()
        stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="./run demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave servers running at the end")
    parser.add_argument("--count", type=int, default=4, help="number of VMs (default 4)")
    args = parser.parse_args()
    return run(keep=args.keep, count=args.count)


if __name__ == "__main__":
    sys.exit(main())
