"""Inventory step: the VM record with flavor, project, addresses and status."""

from typing import Any, Dict

from tasks import drivers
from tasks.app import app
from tasks.base import StepTask
from tasks.errors import InvalidEvent


def _register(task: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    ev, _ = task.admit(event)
    if ev.flavor is None or ev.flavor.vcpus is None or ev.flavor.memory_mb is None:
        raise InvalidEvent("flavor", "unknown flavor (vcpus and memory_mb are required)")
    return task.register(ev, lambda: drivers.inventory().register(ev))


@app.task(base=StepTask, bind=True, name="inventory.register", backend_kind="inventory")
def register(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    return _register(self, event)


@app.task(base=StepTask, bind=True, name="inventory.update", backend_kind="inventory")
def update(self: StepTask, event: Dict[str, Any]) -> Dict[str, Any]:
    return _register(self, event)


@app.task(base=StepTask, bind=True, name="inventory.deregister", backend_kind="inventory")
def deregister(self: StepTask, event: Dict[str, Any], undo: bool = False) -> Dict[str, Any]:
    ev = self.parse(event, needs_hostname=False)
    return self.deregister(ev, lambda: drivers.inventory().deregister(ev), undo)
