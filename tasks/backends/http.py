"""The one table from an HTTP answer to a step error, for every driver that speaks HTTP.

NetBox (through pynetbox), Infoblox's WAPI and REST CMDBs all sit behind
``requests``; the retry decision for their answers is the same, so it is
written once here:

    connection refused, timeout    BackendUnavailable (retry)
    401, 403                       AuthFailed (the credentials will not get better)
    429, 5xx                       TransientError (retry)
    other 4xx                      PermanentError (the request itself is wrong)

A driver refines a status only where its backend says more (WAPI's error codes,
a CMDB's 404 on a record that vanished) and otherwise asks :func:`error`.
"""

import contextlib
from typing import Iterator, Optional, Type

import requests

from tasks.errors import (AuthFailed, BackendUnavailable, PermanentError, StepError,
                          TransientError)

#: What ``requests`` raises when no answer came back at all.
UNREACHABLE = (requests.ConnectionError, requests.Timeout)


def failure(status: int) -> Optional[Type[StepError]]:
    """The error class an HTTP status means, None for a success."""
    if status in (401, 403):
        return AuthFailed
    if status == 429 or status >= 500:
        return TransientError
    if status >= 400:
        return PermanentError
    return None


def error(status: int, where: str, detail: str, backend: str,
          credential: str = "token") -> StepError:
    """The step error for a failed answer, worded the same for every backend.

    ``where`` names the server (and the request, where that helps); ``credential``
    says what a 401 or 403 refused, so the operator knows which secret to check.
    """
    cls = failure(status) or PermanentError
    if cls is AuthFailed:
        return AuthFailed("%s refused the %s (HTTP %d): %s" % (where, credential, status, detail),
                          backend=backend)
    return cls("%s answered HTTP %d: %s" % (where, status, detail), backend=backend)


def unreachable(where: str, exc: BaseException, backend: str) -> BackendUnavailable:
    return BackendUnavailable("%s unreachable: %s" % (where, type(exc).__name__),
                              backend=backend)


@contextlib.contextmanager
def reaching(where: str, backend: str) -> Iterator[None]:
    """Turn a request that got no answer into BackendUnavailable naming the server."""
    try:
        yield
    except UNREACHABLE as exc:
        raise unreachable(where, exc, backend) from exc
