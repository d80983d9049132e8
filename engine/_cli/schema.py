"""``flowwarden schema``: the JSON Schema of flow documents, for editors."""

from __future__ import annotations

import argparse
from typing import Any

from .common import OK, dumps, load_registry, out

__all__ = ["add_schema_command"]


def add_schema_command(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    schema = commands.add_parser(
        "schema",
        parents=parents,
        help="print the JSON Schema of flow documents",
        description="Print a JSON Schema (draft 2020-12) of flow documents, with the "
        "parameters of every installed block type, for editors to complete and check "
        "documents: flowwarden schema > flowwarden.schema.json, then put "
        "'# yaml-language-server: $schema=flowwarden.schema.json' at the top of a document.",
        epilog="Exit codes: 0.",
    )
    schema.set_defaults(command=_schema)


def _schema(args: argparse.Namespace) -> int:
    from .._model.schema import document_schema  # not loaded by the other commands

    out(dumps(document_schema(load_registry())))
    return OK
