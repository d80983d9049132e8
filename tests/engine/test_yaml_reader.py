"""YAML is read with libyaml's parser when PyYAML has it, and nothing a reader sees
changes: the same values, the same line and column for every key and value, and for a
text that does not parse, the pure parser's message at the pure parser's position."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import InvalidFlow
from engine._model import limits
from engine._model.document import read_document

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    path
    for folder in ("examples", "tests/data")
    for path in (ROOT / folder).rglob("*")
    if path.suffix in (".yaml", ".yml", ".json")
)
TEXTS = [
    "flow: café\nstart: a\nblocks:\n  a: {type: set, values: {mot: 'déjà vu', 😀: ü}}\n",
    "flow: crlf\r\nstart: a\r\nblocks:\r\n  a:\r\n    type: return\r\n    value: [1, 2]\r\n",
    "\ufeffflow: bom\nstart: a\n",
    "text: |\n  one\n  two\nfolded: >\n  three\n  four\nafter: {k: v}\n",
    "base: &b {a: 1, b: [x, y]}\nmerged: {<<: *b, c: 2}\nlist: [*b, *b]\n",
    '{"flow": "json", "blocks": {"a": {"type": "set", "values": {"k": "é"}}}}',
    "- plain\n- 'single'\n- \"double \\u00e9\"\n- ? complex\n  : key\n",
    "when: 2001-12-14\nhex: 0x1F\nbig: 1_000\ninf: .inf\nnull: ~\nyes: yes\n",
    "",
    "# a comment only\n",
]
REFUSED = [
    "a: b: c",  # libyaml: "mapping values are not allowed in this context"
    "a: [1, 2",  # libyaml: another message, at another position
    "a:\n\tb: 1\n",
    "a: \x07",
    "a: " + "[" * 70 + "]" * 70,
    "a: &x [*x]",
    "a: 2001-13-45",
]

needs_libyaml = pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")


def read(text: str, *, pure: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """What the bounded reader makes of ``text``: values and marks, or the refusal."""
    with monkeypatch.context() as patch:
        if pure:
            patch.setattr(limits, "_LibYAMLLoader", None)
        try:
            return "read", (limits.load_yaml_marked(text), limits.load_yaml(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = (mark.line, mark.column) if mark is not None else None
            return "refused", (type(exc).__name__, str(exc), where)


@needs_libyaml
def test_the_reader_uses_libyaml_when_pyyaml_has_it() -> None:
    assert limits._LibYAMLLoader is not None


@needs_libyaml
@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_every_document_reads_the_same_with_either_parser(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = path.read_text(encoding="utf-8")
    assert read(text, pure=False, monkeypatch=monkeypatch) == read(
        text, pure=True, monkeypatch=monkeypatch
    )


@needs_libyaml
@pytest.mark.parametrize(
    ("text", "outcome"),
    [(text, "read") for text in TEXTS] + [(text, "refused") for text in REFUSED],
)
def test_either_parser_reads_the_same_values_and_marks_or_refuses_alike(
    text: str, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a refused text must say what the pure parser says: its message and position
    fast = read(text, pure=False, monkeypatch=monkeypatch)
    assert fast[0] == outcome
    assert fast == read(text, pure=True, monkeypatch=monkeypatch)


def test_a_problem_of_a_document_keeps_its_line_and_column() -> None:
    text = "flow: marks\nstart: a\nblocks:\n  a:\n    type: set\n    values: {k: 'é'}\n"
    _, marks = read_document(text)
    assert marks is not None
    assert marks[("blocks", "a", "values", "k")] == ((6, 14), (6, 17))
    with pytest.raises(InvalidFlow) as refused:
        read_document("flow: x\nstart: a: b\n")
    problem = refused.value.problems[0]
    assert (problem.line, problem.column) == (2, 9)
    assert problem.message.endswith("mapping values are not allowed here")  # the pure wording
