"""What can go wrong in a step, sorted by what the worker should do about it.

    StepError
    ├── TransientError          retry with backoff and jitter; the event is kept
    │   └── BackendUnavailable  connection refused, timeout, 5xx, SERVFAIL
    └── PermanentError          stop the chain, audit, keep as dead letter
        ├── InvalidEvent        a field of the event is wrong (names the field)
        ├── OutOfScope          an address or name no configured zone/prefix covers
        ├── Conflict            the backend holds the name/address for another instance
        ├── AuthFailed          wrong credentials, bad TSIG key, refused
        └── Misconfigured       the driver's settings cannot work

Each driver translates its library's exceptions into these at one boundary,
so task code never imports ldap3, dnspython or pynetbox.
"""


class StepError(Exception):
    """Base of every error a step reports."""

    transient = False

    def __init__(self, message: str, backend: str = "") -> None:
        super().__init__(message)
        self.backend = backend

    def __str__(self) -> str:
        text = super().__str__()
        return "%s: %s" % (self.backend, text) if self.backend else text


class TransientError(StepError):
    transient = True


class BackendUnavailable(TransientError):
    pass


class PermanentError(StepError):
    pass


class InvalidEvent(PermanentError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__("invalid %s: %s" % (field, problem))
        self.field = field


class OutOfScope(PermanentError):
    pass


class Conflict(PermanentError):
    pass


class AuthFailed(PermanentError):
    pass


class Misconfigured(PermanentError):
    pass
