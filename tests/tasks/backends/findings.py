"""A contract test a driver fails because of a real defect, kept visible: ``xfail(strict)``.

``finding(Contract.test_x, reason)`` in a driver's contract subclass marks that one
test for that one driver: strict, so the day the driver is fixed the test says so.
"""

import functools
from typing import Any, Callable

import pytest


def finding(test: Callable[..., Any], reason: str) -> Callable[..., Any]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> Any:
        return test(*args, **kwargs)
    return pytest.mark.xfail(strict=True, reason="finding: " + reason)(run)
