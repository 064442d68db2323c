"""The driver fixtures every contract class asks for, made once for every real driver.

A contract (``*_contract.py``) asks for ``<kind>`` (the driver under test),
``<kind>_bad_credentials`` (the same with a secret its server refuses) and
``<kind>_unreachable`` (the same pointed at a closed port). They differ between drivers
only in how a driver is configured and which settings make it wrong, so a test class
says just that: ``class TestX(driver_fixtures("dns", from_stack("dns", X), ...), DnsContract)``.
The memory drivers' counterpart is ``memory_fixtures`` in test_memory.py.
"""

from typing import Any, Callable, Dict, Optional

import pytest

from novahooks.settings import load_settings

#: (request, **overrides) -> a driver configured with those settings changed.
Build = Callable[..., Any]
#: request -> the overrides of one variant.
Overrides = Callable[[Any], Dict[str, Any]]


def driver_fixtures(kind: str, build: Build, wrong: Overrides, closed: Overrides,
                    reader: Optional[Callable[[Any], Any]] = None) -> type:
    """A mixin of the contract's driver fixtures for ``kind``; ``reader(request)``, when
    given, is its ``<kind>_reader`` too."""

    class Fixtures(object):
        @pytest.fixture(name=kind)
        def under_test(self, request: Any) -> Any:
            return build(request)

        @pytest.fixture(name=kind + "_bad_credentials")
        def bad_credentials(self, request: Any) -> Any:
            return build(request, **wrong(request))

        @pytest.fixture(name=kind + "_unreachable")
        def unreachable(self, request: Any) -> Any:
            return build(request, **closed(request))

        if reader is not None:
            @pytest.fixture(name=kind + "_reader")
            def backend_reader(self, request: Any) -> Any:
                return reader(request)

    return Fixtures


def from_stack(kind: str, driver: type) -> Build:
    """Build ``driver`` from the session stack's configuration file, the overrides given as
    the environment (``NOVAHOOKS_<KIND>_<KEY>``) that alone it reads."""
    def build(request: Any, **environ: str) -> Any:
        stack = request.getfixturevalue("stack")
        return driver(getattr(load_settings(str(stack.config_path), environ), kind))
    return build


def env(kind: str, **values: str) -> Dict[str, str]:
    """``NOVAHOOKS_<KIND>_<KEY>`` overrides, for :func:`from_stack`."""
    return {"NOVAHOOKS_%s_%s" % (kind.upper(), key.upper()): value
            for key, value in values.items()}
