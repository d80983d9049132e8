"""What the whole suite shares: an engine in memory with the registry a module gives."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from blocks import BlockRegistry
from engine import Engine


@pytest.fixture
def registry() -> BlockRegistry:
    """The block types the ``engine`` fixture's documents may use; a module that needs
    blocks of its own overrides this fixture."""
    return BlockRegistry()


@pytest.fixture
async def engine(registry: BlockRegistry) -> AsyncIterator[Engine]:
    """A running engine with the in-memory store."""
    async with Engine(registry=registry) as running:
        yield running
