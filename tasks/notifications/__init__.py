"""The notification path's worker side: the listener, its store, ``explain``."""
