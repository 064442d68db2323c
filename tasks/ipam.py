"""IPAM step: record the addresses Neutron assigned, tagged with the instance UUID."""

from typing import Any, Dict

from tasks import drivers
from tasks.app import app
from tasks.base import StepTask, book
from tasks.drift import REPAIR


@app.task(base=StepTask, bind=True, name="ipam.reserve", backend_kind="ipam")
def reserve(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    ev, decision = self.admit(event)
    if ev.addresses is None or decision.fqdn is None:
        return {"skipped": "addresses not known yet"}
    fqdn = decision.fqdn
    # The ledger is read under the step's lock (inside the action): what the last run made;
    # a first run marks its note pending (records of a run that died before its note are
    # read, not made twice, when a later event's addresses differ). A reconcile repairs
    # what someone changed behind the ledger: it reads the backend.
    return self.register(ev, lambda: drivers.ipam().ensure_with(
        ev.uuid, fqdn, ev.addresses,
        None if ev.source == REPAIR else book().made_claiming(ev.uuid, "ipam").get("ipam", {})))


@app.task(base=StepTask, bind=True, name="ipam.release", backend_kind="ipam")
def release(self: StepTask, event: Dict[str, Any], undo: bool = False) -> Dict[str, Any]:
    ev = self.parse(event, needs_hostname=False)
    return self.deregister(ev, lambda: drivers.ipam().release_with(
        ev.uuid, book().made(ev.uuid).get("ipam")), undo)
