"""Directory step: the host (or computer) entry, keyed by the instance UUID."""

from typing import Any, Dict

from tasks import drivers
from tasks.app import app
from tasks.base import StepTask


@app.task(base=StepTask, bind=True, name="ldap.register", backend_kind="directory")
def register(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    return drivers.directory().register(self.parse(event))


@app.task(base=StepTask, bind=True, name="ldap.deregister", backend_kind="directory")
def deregister(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    return drivers.directory().deregister(self.parse(event, needs_hostname=False))
