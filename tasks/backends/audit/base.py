"""The audit contract: append one record; never rewrite one."""

import abc
from typing import Any, Dict


class AuditDriver(abc.ABC):
    def __init__(self, settings: Any) -> None:
        self.settings = settings

    @abc.abstractmethod
    def record(self, entry: Dict[str, Any]) -> None:
        """Persist one audit entry (JSON-safe dict) or raise a StepError."""
