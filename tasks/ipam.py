"""IPAM step: record the addresses Neutron assigned, tagged with the instance UUID."""

from typing import Any, Dict

from tasks import drivers
from tasks.app import app
from tasks.base import StepTask


@app.task(base=StepTask, bind=True, name="ipam.reserve", backend_kind="ipam")
def reserve(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    ev, decision = self.admit(event)
    if ev.addresses is None or decision.fqdn is None:
        return {"skipped": "addresses not known yet"}
    fqdn = decision.fqdn
    return self.register(ev, lambda: drivers.ipam().ensure(ev.uuid, fqdn, ev.addresses))


@app.task(base=StepTask, bind=True, name="ipam.release", backend_kind="ipam")
def release(self: StepTask, event: Dict[str, Any], undo: bool = False) -> Dict[str, Any]:
    ev = self.parse(event, needs_hostname=False)
    return self.deregister(ev, lambda: drivers.ipam().release(ev.uuid), undo)
