"""A quicker ``__init__`` for the frozen dataclasses every run makes.

A frozen dataclass's generated ``__init__`` sets each field with
``object.__setattr__(self, name, value)``, looked up and called by name; a class with
``__slots__`` can set the same slot through the slot's own descriptor, which is about
half the cost. A run makes a header and a result, 28 fields between them, so this is
a microsecond of every run. The class stays frozen: assignment still raises
:class:`dataclasses.FrozenInstanceError`, and equality, hashing and ``repr`` are the
dataclass's own.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["quick_init"]

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass an ``__init__`` that sets its slots directly,
    with the same parameters, defaults and default factories as the generated one."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__, which this would skip")
    namespace: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    arguments: list[str] = []
    body: list[str] = []
    keyword_only = False
    for index, field in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
        if not field.init:
            raise TypeError(f"{cls.__name__}.{field.name} is not set by __init__")
        name = field.name
        if field.kw_only and not keyword_only:
            arguments.append("*")
            keyword_only = True
        namespace[f"_set{index}"] = cls.__dict__[name].__set__
        if field.default is not dataclasses.MISSING:
            namespace[f"_default{index}"] = field.default
            arguments.append(f"{name}=_default{index}")
        elif field.default_factory is not dataclasses.MISSING:
            namespace[f"_factory{index}"] = field.default_factory
            arguments.append(f"{name}=_MISSING")
            body.append(f"    if {name} is _MISSING: {name} = _factory{index}()")
        else:
            arguments.append(name)
        body.append(f"    _set{index}(self, {name})")
    source = f"def __init__(self, {', '.join(arguments)}):\n" + "\n".join(body or ["    pass"])
    exec(source, namespace)  # built from the class's own field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
