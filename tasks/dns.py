"""DNS step: forward and reverse records for the instance's addresses."""

from typing import Any, Dict, List

from novahooks.event import Address
from tasks import drivers, naming
from tasks.app import app
from tasks.base import StepTask, book


@app.task(base=StepTask, bind=True, name="dns.register", backend_kind="dns")
def register(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    ev, decision = self.admit(event)
    if ev.addresses is None or decision.fqdn is None:
        return {"skipped": "addresses not known yet"}
    fqdn, addresses = decision.fqdn, ev.addresses
    return self.register(ev, lambda: _register(ev.uuid, fqdn, addresses))


def _register(instance_uuid: str, fqdn: str, addresses: List[Address]) -> Dict[str, Any]:
    """A renamed VM (instance.update) first gives back what its old name held."""
    made = book().made(instance_uuid).get("dns", {})
    old = made.get("fqdn")
    if old and old != fqdn:
        drivers.dns().deregister(old, instance_uuid, [
            Address(a, 6 if ":" in a else 4) for a in made.get("addresses", [])])
    return drivers.dns().register(fqdn, instance_uuid, addresses)


@app.task(base=StepTask, bind=True, name="dns.deregister", backend_kind="dns")
def deregister(self: StepTask, event: Dict[str, Any], undo: bool = False) -> Dict[str, Any]:
    ev = self.parse(event, needs_hostname=False)
    # What the ledger says this step wrote covers a delete event that lost its addresses,
    # and a naming rule changed since: the name removed is the name registered.
    made = book().made(ev.uuid).get("dns", {})
    name = made.get("fqdn") or naming.fqdn_or_none(ev)
    if name is None:
        return {"skipped": "instance never had a valid DNS name"}
    known = {a.address: a for a in ev.addresses or []}
    for address in made.get("addresses", []):
        known.setdefault(address, Address(address, 6 if ":" in address else 4))
    return self.deregister(
        ev, lambda: drivers.dns().deregister(name, ev.uuid, list(known.values())), undo)
