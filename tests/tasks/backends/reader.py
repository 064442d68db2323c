"""What every contract's reader does: read the backend itself, never through the driver.

A contract test asserts on what the server holds (an admin's search, a DNS query, NetBox's
own API), so a driver that answers well but writes wrongly fails; each kind's reader adds
what else its contract needs of the server (a person's record, a forgotten one).
"""

import abc
from typing import Any, List


class HeldReader(abc.ABC):
    @abc.abstractmethod
    def held(self, instance_uuid: str) -> List[Any]:
        """What the backend holds for the instance, in the shape the kind's contract names."""
