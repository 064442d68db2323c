"""DNS step: forward and reverse records for the instance's addresses."""

from typing import Any, Dict

from tasks import drivers, naming
from tasks.app import app
from tasks.base import StepTask


@app.task(base=StepTask, bind=True, name="dns.register", backend_kind="dns")
def register(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    ev = self.parse(event)
    if ev.addresses is None:
        return {"skipped": "addresses not known yet"}
    return drivers.dns().register(naming.fqdn(ev), ev.uuid, ev.addresses)


@app.task(base=StepTask, bind=True, name="dns.deregister", backend_kind="dns")
def deregister(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    ev = self.parse(event, needs_hostname=False)
    name = naming.fqdn_or_none(ev)
    if name is None:
        return {"skipped": "instance never had a valid DNS name"}
    return drivers.dns().deregister(name, ev.uuid, ev.addresses or [])
