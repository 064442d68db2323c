"""DNS step: forward and reverse records for the instance's addresses."""

from typing import Any, Dict

from novahooks.nova.event import Address
from tasks import drivers, naming
from tasks.app import app
from tasks.base import StepTask, book


@app.task(base=StepTask, bind=True, name="dns.register", backend_kind="dns")
def register(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    ev = self.parse(event)
    if ev.addresses is None:
        return {"skipped": "addresses not known yet"}
    fqdn = naming.fqdn(ev)
    return self.register(ev, lambda: drivers.dns().register(fqdn, ev.uuid, ev.addresses))


@app.task(base=StepTask, bind=True, name="dns.deregister", backend_kind="dns")
def deregister(self: StepTask, event: Dict[str, Any], undo: bool = False) -> Dict[str, Any]:
    ev = self.parse(event, needs_hostname=False)
    name = naming.fqdn_or_none(ev)
    if name is None:
        return {"skipped": "instance never had a valid DNS name"}
    # What the ledger says this step wrote covers a delete event that lost its addresses.
    made = book().made(ev.uuid).get("dns", {})
    known = {a.address: a for a in ev.addresses or []}
    for address in made.get("addresses", []):
        known.setdefault(address, Address(address, 6 if ":" in address else 4))
    return self.deregister(
        ev, lambda: drivers.dns().deregister(name, ev.uuid, list(known.values())), undo)
