"""Find the configured driver of each kind through its entry-point group.

Entry points let a site add its own backend without forking: a package that
declares ``novahooks.dns = mydns = mypkg:MyDns`` is selected with
``[dns] driver = mydns``. A name that no installed package provides fails at
first use with the group and the name in the message.
"""

import functools
from typing import Any, List

from stevedore import driver as stevedore_driver
from stevedore.exception import NoMatches

from tasks.config import settings
from tasks.errors import Misconfigured


def load(kind: str, name: str, section: Any) -> Any:
    namespace = "novahooks.%s" % kind
    try:
        manager = stevedore_driver.DriverManager(
            namespace=namespace, name=name, invoke_on_load=True, invoke_args=(section,),
            on_load_failure_callback=_reraise)
    except NoMatches:
        raise Misconfigured("no %s driver named %r is installed (entry-point group %s)"
                            % (kind, name, namespace)) from None
    return manager.driver


@functools.lru_cache(maxsize=None)
def driver_class(kind: str, name: str) -> Any:
    """The configured driver's class, not instantiated: for checks that need no backend."""
    from importlib.metadata import entry_points
    namespace = "novahooks.%s" % kind
    for entry in entry_points(group=namespace):
        if entry.name == name:
            return entry.load()
    raise Misconfigured("no %s driver named %r is installed (entry-point group %s)"
                        % (kind, name, namespace))


def _reraise(manager: Any, entrypoint: Any, exc: BaseException) -> None:
    raise exc


@functools.lru_cache(maxsize=None)
def configured(kind: str) -> Any:
    """The driver ``[<kind>] driver`` names, loaded once per process as the settings are."""
    section = getattr(settings(), kind)
    driver = load(kind, section.driver, section)
    if kind == "dns":
        driver.reverse_prefixes = settings().naming.reverse_prefixes()
    return driver


ipam = functools.partial(configured, "ipam")
dns = functools.partial(configured, "dns")
directory = functools.partial(configured, "directory")
inventory = functools.partial(configured, "inventory")


@functools.lru_cache(maxsize=None)
def audit() -> List[Any]:
    section = settings().audit
    return [load("audit", name, section) for name in section.drivers]
