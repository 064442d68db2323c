"""Directory step: the host (or computer) entry, keyed by the instance UUID."""

from typing import Any, Dict

from tasks import drivers
from tasks.app import app
from tasks.base import StepTask


@app.task(base=StepTask, bind=True, name="ldap.register", backend_kind="directory")
def register(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    ev, _ = self.admit(event)
    return self.register(ev, lambda: drivers.directory().register(ev))


@app.task(base=StepTask, bind=True, name="ldap.deregister", backend_kind="directory")
def deregister(self: StepTask, event: Dict[str, Any], undo: bool = False) -> Dict[str, Any]:
    ev = self.parse(event, needs_hostname=False)
    return self.deregister(ev, lambda: drivers.directory().deregister(ev), undo)
