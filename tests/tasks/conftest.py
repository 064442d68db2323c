"""Fixtures the worker-side tests share."""

from pathlib import Path
from typing import Iterator

import pytest

from tests.servers.redis import RedisServer, start_redis


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server of this test's own, stopped after it."""
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()
