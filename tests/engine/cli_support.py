"""The CLI tests' helpers: run ``flowwarden`` in this process, write workspace files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine._cli import main


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path
