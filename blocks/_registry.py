"""The registry: which block types a document may use, by name."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Iterator, Mapping

from ._builtins import BUILTINS
from ._contract import ENTRY_POINT_GROUP, BlockDefinition

__all__ = ["BlockRegistry"]


class BlockRegistry:
    """The block types a document may use, by name. Built-ins are always included.

    Registries are values handed to ``Engine(registry=...)``; nothing is global.
    """

    def __init__(self, definitions: Iterable[BlockDefinition] = (), *, builtins: bool = True):
        self._definitions: dict[str, BlockDefinition] = {}
        for definition in (*(BUILTINS if builtins else ()), *definitions):
            self._add(definition)

    def _add(self, definition: BlockDefinition) -> None:
        if not isinstance(definition, BlockDefinition):
            raise TypeError(f"not a block definition: {definition!r}")
        if definition.name in self._definitions:
            raise ValueError(f"block type {definition.name!r} is registered twice")
        if definition.kind == "action" and definition.run is None:
            raise ValueError(f"block type {definition.name!r} has no run function")
        self._definitions[definition.name] = definition

    @classmethod
    def from_entry_points(cls, extra: Iterable[BlockDefinition] = ()) -> BlockRegistry:
        """Built-ins, the blocks packages publish under ``flowwarden.blocks``, and ``extra``."""
        found: list[BlockDefinition] = []
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            loaded = entry.load()
            found.extend(loaded if isinstance(loaded, list | tuple) else [loaded])
        return cls([*found, *extra])

    def with_blocks(self, *definitions: BlockDefinition) -> BlockRegistry:
        """A new registry holding this one's blocks and ``definitions``."""
        return BlockRegistry([*self._definitions.values(), *definitions], builtins=False)

    def get(self, name: str) -> BlockDefinition | None:
        return self._definitions.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._definitions

    def __iter__(self) -> Iterator[str]:
        return iter(self._definitions)

    def __len__(self) -> int:
        return len(self._definitions)

    @property
    def definitions(self) -> Mapping[str, BlockDefinition]:
        return dict(self._definitions)
