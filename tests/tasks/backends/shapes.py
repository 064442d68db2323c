"""Whether a driver's result has the shape its kind's contract declares.

Each kind's contract (``tasks/backends/<kind>/base.py``) declares its verbs' results as
TypedDicts, so every driver of a kind answers alike and what reads a result (the ledger's
notes, the audit record, ``status``, reconcile) reads every driver the same way. The
contract test classes check each result against its declaration: every required key, no
key the declaration leaves out, each value of its declared type.
"""

import typing
from typing import Any, List


def problems(value: Any, declared: Any, where: str = "result") -> List[str]:
    """What in ``value`` does not match ``declared`` (a type or TypedDict), each naming its key."""
    if declared is Any:
        return []
    if hasattr(declared, "__required_keys__"):
        if not isinstance(value, dict):
            return ["%s: %r is not a dict" % (where, value)]
        hints = typing.get_type_hints(declared)
        found = ["%s: no %r" % (where, key) for key in sorted(declared.__required_keys__)
                 if key not in value]
        found += ["%s: %r is not declared by %s" % (where, key, declared.__name__)
                  for key in sorted(set(value) - set(hints))]
        for key in sorted(set(value) & set(hints)):
            found += problems(value[key], hints[key], "%s[%r]" % (where, key))
        return found
    origin, args = typing.get_origin(declared), typing.get_args(declared)
    if origin is typing.Union:
        options = [problems(value, option, where) for option in args]
        return [] if any(not found for found in options) else min(options, key=len)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return ["%s: %r is not a list" % (where, value)]
        return [p for i, item in enumerate(value)
                for p in problems(item, args[0] if args else Any, "%s[%d]" % (where, i))]
    if origin is dict:
        if not isinstance(value, dict):
            return ["%s: %r is not a dict" % (where, value)]
        key_type, value_type = args or (Any, Any)
        return [p for key, item in value.items()
                for p in problems(key, key_type, "%s key" % where)
                + problems(item, value_type, "%s[%r]" % (where, key))]
    if declared is type(None):
        return [] if value is None else ["%s: %r is not None" % (where, value)]
    if declared in (int, float) and isinstance(value, bool):
        return ["%s: %r is a bool, not %s" % (where, value, declared.__name__)]
    if declared is float and isinstance(value, int):
        return []
    if not isinstance(value, declared):
        return ["%s: %r is not %s" % (where, value, getattr(declared, "__name__", declared))]
    return []


def assert_shape(value: Any, declared: Any) -> Any:
    """``value``, once it matches ``declared``; fails naming every key that does not."""
    found = problems(value, declared)
    assert not found, "%s does not match %s: %s" % (value, declared.__name__, "; ".join(found))
    return value
