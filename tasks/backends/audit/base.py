"""The audit contract: append one record; never rewrite one."""

import abc
from typing import Any, Dict


class AuditDriver(abc.ABC):
    def __init__(self, settings: Any) -> None:
        self.settings = settings

    @abc.abstractmethod
    def record(self, entry: Dict[str, Any]) -> None:
        """Persist one audit entry (JSON-safe dict) or raise a StepError."""

    @abc.abstractmethod
    def check(self) -> str:
        """Reach the backend with the configured credentials; say what answered.

        Raises a StepError naming the problem (unreachable, refused, misconfigured).
        """
