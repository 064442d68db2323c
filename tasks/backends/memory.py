"""In-memory backends: what the memory drivers of every kind write to, one process's worth.

Each kind's memory driver (``tasks/backends/<kind>/memory.py``, selected with
``driver = memory``) keeps the rules of that kind's real drivers (ownership,
conflicts, exact address sets, idempotence, an absent delete is success)
against a :class:`Backend` kept here, so that what sits above the drivers
(steps, their middleware, reconcile) is tested without servers.

A backend is named by the section's ``url`` (``[audit] path``) as
``memory://<name>`` (default ``memory://``) and made on first use. Tests treat
it as they would treat a real server: seed it as an admin would (prefixes,
zones, a person's record), read what it holds, take it down (``up = False``:
every call is then BackendUnavailable) or make it demand a secret (``secret``:
a driver whose section holds another one gets AuthFailed).
"""

import contextlib
import threading
from typing import Any, Dict, Iterator, Optional, Tuple, Type, TypeVar

from tasks.backends.base import Driver
from tasks.errors import AuthFailed, BackendUnavailable, Misconfigured

SCHEME = "memory://"


class Backend(object):
    def __init__(self, name: str) -> None:
        self.name = name
        #: One driver call at a time, as a server serialises writes to one record.
        self.lock = threading.RLock()
        self.up = True
        self.secret: Optional[str] = None

    def reach(self, secret: str) -> None:
        if not self.up:
            raise BackendUnavailable("%s unreachable: it is down" % self.name)
        if self.secret is not None and secret != self.secret:
            raise AuthFailed("%s refused the credentials" % self.name)


B = TypeVar("B", bound=Backend)
_backends: Dict[Tuple[type, str], Backend] = {}
_backends_lock = threading.Lock()


def backend(cls: Type[B], name: str = SCHEME) -> B:
    """The backend of this class and name, made empty on first use."""
    with _backends_lock:
        found = _backends.get((cls, name))
        if found is None:
            found = _backends[(cls, name)] = cls(name)
    assert isinstance(found, cls)
    return found


def forget_all() -> None:
    """Drop every backend (a test's fresh start)."""
    with _backends_lock:
        _backends.clear()


class MemoryDriver(Driver):
    """A driver bound to one in-memory backend; subclasses name its class and secret."""

    BACKEND: Type[Backend] = Backend
    #: The section's field holding the credential the backend may demand ("" for none).
    SECRET = ""
    #: For messages and StepError.backend, as the real drivers of the kind name it.
    KIND = ""
    #: The section's field naming the backend (``memory://<name>``).
    LOCATION = "url"

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        name = getattr(settings, self.LOCATION, None) or SCHEME
        if not name.startswith(SCHEME):
            raise Misconfigured("[%s] %s %r: the memory driver takes %s<name>"
                                % (self.KIND, self.LOCATION, name, SCHEME), backend=self.KIND)
        self.name = name
        self.backend = backend(self.BACKEND, name)

    def _secret(self) -> str:
        value: Any = getattr(self.settings, self.SECRET, None) if self.SECRET else None
        return str(value.reveal() if hasattr(value, "reveal") else value or "")

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """The backend, reached with this driver's credentials, held for one call."""
        with self.backend.lock:
            try:
                self.backend.reach(self._secret())
            except (AuthFailed, BackendUnavailable) as exc:
                raise type(exc)(str(exc), backend=self.KIND) from None
            yield self.backend

    def check(self) -> str:
        with self.session():
            return "in-memory %s backend %s answered, credentials accepted" % (self.KIND,
                                                                              self.name)
