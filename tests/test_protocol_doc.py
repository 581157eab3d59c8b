from pathlib import Path

from sortie.proto.schema import render


def test_protocol_doc_is_current() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
    regenerate = "regenerate: python -m sortie.proto.schema > docs/protocol.md"
    assert doc.read_text() == render(), regenerate
