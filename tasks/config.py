"""The worker's settings, read once per process."""

import functools

from novahooks.settings import Settings, load_settings


@functools.lru_cache(maxsize=1)
def settings() -> Settings:
    return load_settings()
