"""The audit contract: append one record; never rewrite one."""

import abc
from typing import Any, Dict

from tasks.backends.base import Driver


class AuditDriver(Driver):
    @abc.abstractmethod
    def record(self, entry: Dict[str, Any]) -> None:
        """Persist one audit entry (JSON-safe dict) or raise a StepError."""
