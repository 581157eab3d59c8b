from pathlib import Path

from proto.schema import render


def test_protocol_doc_is_current() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
    assert doc.read_text() == render(), "regenerate: python -m proto.schema > docs/protocol.md"
