"""The naive design, for comparison: every registration done inline, one backend after another.

A synchronous hook would call the same drivers the workers call, in the chain's
order, and Nova would wait for all of them. These functions make exactly the
driver calls the step tasks make (without Celery and without the ledger) and
return how long each backend took, so the bench scripts can time a synchronous
hook and each backend alone with the calls the pipeline really makes.

Needs the worker side (Python >= 3.11 with the ``worker`` extra) and
``NOVAHOOKS_CONFIG`` pointing at running backends.
"""

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from novahooks.event import InstanceEvent, new_event
from novahooks.nova.extract import addresses, instance_fields
from tasks.simulate import Vm, instance, network_info

#: backend -> what the pipeline asks of it per VM created then deleted (the create
#: event's chain registers the directory entry and the planned inventory record, the
#: build chain all five, the delete chain removes them and audits start and end)
CREATE_CALLS = {"ipam": 1, "dns": 1, "directory": 2, "inventory": 2, "audit": 2}
DELETE_CALLS = {"ipam": 1, "dns": 1, "directory": 1, "inventory": 1, "audit": 2}
BACKENDS = ("ipam", "dns", "directory", "inventory", "audit")


def event_of(vm: Vm, kind: str = "build") -> InstanceEvent:
    """The event the build_instance post-hook emits for ``vm`` (delete: the same fields)."""
    inst = instance(vm, "active", nw=network_info(vm))
    return new_event(kind, vm.uuid, vm.hostname, source="bench:inline",
                     addresses=addresses(inst["info_cache"]["network_info"]),
                     **instance_fields(inst))


def _timed(times: Dict[str, float], backend: str, call: Callable[[], Any]) -> None:
    started = time.perf_counter()
    call()
    times[backend] = times.get(backend, 0.0) + time.perf_counter() - started


def _audit(event: InstanceEvent, stage: str) -> None:
    from tasks.audit import record
    record.run(event.to_dict(), stage)


def register(event: InstanceEvent, only: Sequence[str] = BACKENDS) -> Dict[str, float]:
    """The build chain's five registrations inline; backend -> seconds spent."""
    from tasks import drivers, naming
    fqdn = naming.fqdn(event)
    calls = [
        ("ipam", lambda: drivers.ipam().ensure(event.uuid, fqdn, event.addresses)),
        ("dns", lambda: drivers.dns().register(fqdn, event.uuid, event.addresses)),
        ("directory", lambda: drivers.directory().register(event)),
        ("inventory", lambda: drivers.inventory().register(event)),
        ("audit", lambda: _audit(event, "done")),
    ]
    return _run(calls, only)


def _run(calls: Sequence[Tuple[str, Callable[[], Any]]], only: Sequence[str]) -> Dict[str, float]:
    """Run the calls of the backends in ``only``, in order; backend -> seconds spent."""
    times = {}  # type: Dict[str, float]
    for backend, call in calls:
        if backend in only:
            _timed(times, backend, call)
    return times


def deregister(event: InstanceEvent, only: Sequence[str] = BACKENDS) -> Dict[str, float]:
    """The delete chain's removals inline, in its order; backend -> seconds spent."""
    from tasks import drivers, naming
    fqdn = naming.fqdn(event)
    calls = [
        ("audit", lambda: _audit(event, "start")),
        ("inventory", lambda: drivers.inventory().deregister(event)),
        ("directory", lambda: drivers.directory().deregister(event)),
        ("dns", lambda: drivers.dns().deregister(fqdn, event.uuid, event.addresses or [])),
        ("ipam", lambda: drivers.ipam().release(event.uuid)),
        ("audit", lambda: _audit(event, "done")),
    ]
    return _run(calls, only)


def lifecycle(backend: str, vms: Sequence[Vm]) -> List[float]:
    """One backend alone: for each VM the calls the pipeline makes to it on create and
    delete (``CREATE_CALLS``/``DELETE_CALLS``); returns seconds per VM."""
    per_vm = []
    for vm in vms:
        event = event_of(vm)
        started = time.perf_counter()
        for _ in range(CREATE_CALLS[backend] - 1):
            register(event, only=(backend,))
        register(event, only=(backend,))
        deregister(event, only=(backend,))
        per_vm.append(time.perf_counter() - started)
    return per_vm


def main(argv: Optional[List[str]] = None) -> int:
    """Time ``--calls`` synchronous hooks (the five registrations inline); print JSON.

    Run by ``hook_overhead.py`` (which runs under Nova's Python 3.8) with this
    project's interpreter. Without ``--config`` it starts a private stack of its
    own and stops it again; with ``--config`` it uses those running backends and
    removes what it registered (not timed).
    """
    import argparse
    import json
    import sys
    from bench.chaos import chaos_vms
    from bench.common import (at_least, cleanup, exit_on_sigterm, latency, point_at_config,
                              start_stack)
    parser = argparse.ArgumentParser(description=main.__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=at_least(1), default=50)
    parser.add_argument("--config", default=None, help="novahooks.conf of running backends")
    parser.add_argument("--first-octet", type=int, default=210,
                        help="VMs get 10.20.<this>.x addresses (default 210)")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    stack = None
    ok = False
    try:
        if args.config:
            point_at_config(Path(args.config))
        else:
            stack = start_stack("sync-hook")
        # one call first opens the connections (NetBox session, LDAP bind), unless there
        # are too few calls for that to matter
        warm = 1 if args.calls >= 5 else 0
        vms = chaos_vms(args.calls + warm, prefix="sync", first_octet=args.first_octet)
        if warm:
            register(event_of(vms[0]))
        totals, per_backend = [], {}  # type: List[float], Dict[str, List[float]]
        for vm in vms[warm:]:
            times = register(event_of(vm))
            totals.append(sum(times.values()))
            for backend, seconds in times.items():
                per_backend.setdefault(backend, []).append(seconds)
        if args.config:
            for vm in vms:
                deregister(event_of(vm, "delete"))
        ok = True
    finally:
        if stack is not None:
            stack.stop()
            cleanup(stack.workdir, ok)
    print(json.dumps({"calls": args.calls, "hook": latency(totals),
                      "backends": {b: latency(s) for b, s in per_backend.items()},
                      "python": sys.version.split()[0]}))
    return 0


if __name__ == "__main__":  # python -m bench.inline, from the project directory
    raise SystemExit(main())
