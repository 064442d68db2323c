"""The part of novahooks that runs inside Nova's own processes.

Everything under this package, plus ``novahooks.settings`` which it reads,
imports only the Python standard library and keeps to Python 3.6 syntax: it is
installed into Nova's environment (Ussuri pins kombu 4.6.8, redis 3.4.1 and has
no Celery) and runs on Nova's green threads. ``tests/nova/test_boundary.py``
checks that under Python 3.8.
"""
