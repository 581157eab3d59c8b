"""The rules every reader of dashboard tokens applies (``proto/web_tokens.py``), by table and
property; and where a dashboard opens without a login (``WebSettings.open``)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sortie.cli.web_tokens import ttl
from sortie.proto import codec
from sortie.proto import web_tokens as wt
from sortie.web.settings import WebSettings

NOW = 1_800_000_000.0


def token(label: str, expires_at: float | None = NOW + 60) -> wt.WebToken:
    return wt.WebToken(label=label, issued_at=NOW - 60, expires_at=expires_at)


@pytest.mark.parametrize(
    ("expires_at", "valid"),
    [(None, True), (NOW + 1, True), (NOW, False), (NOW - 1, False)],
)
def test_a_token_works_until_it_expires(expires_at: float | None, valid: bool) -> None:
    assert wt.is_valid(token("a", expires_at), NOW) is valid


BOOK = {
    "a1b2c3d4e5f6" + "0" * 52: token("ci"),
    "a1b2c3ffffff" + "0" * 52: token("ci"),
    "0123456789ab" + "0" * 52: token("alice"),
}


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("ci", sorted(k for k in BOOK if BOOK[k].label == "ci")),
        ("alice", ["0123456789ab" + "0" * 52]),
        ("0123456789AB", ["0123456789ab" + "0" * 52]),  # IDs are hex: either case
        ("a1b2c3", sorted(k for k in BOOK if k.startswith("a1b2c3"))),
        ("a1b2c", []),  # too short to name a token by its ID
        ("bob", []),
    ],
)
def test_revoke_names_tokens_by_label_or_id(name: str, found: list[str]) -> None:
    assert wt.matching(BOOK, name) == found


def test_the_hash_is_sha256_hex() -> None:
    assert wt.token_hash("sortie_web_x") == hashlib.sha256(b"sortie_web_x").hexdigest()


@given(st.text(max_size=80))
def test_a_label_is_refused_or_stored_as_given(label: str) -> None:
    why = wt.check_label(label)
    if why is None:
        record = wt.WebToken(label=label, issued_at=NOW)
        assert codec.decode(wt.WebToken, codec.encode(record)).label == label
    else:
        assert "1 to 64 printable characters" in why


@pytest.mark.parametrize(
    ("text", "seconds"), [("3600", 3600), ("90m", 5400), ("12h", 43200), ("30d", 2592000)]
)
def test_ttl_takes_seconds_or_units(text: str, seconds: int) -> None:
    assert ttl(text) == seconds


@pytest.mark.parametrize(
    ("host", "open_on_loopback", "is_open"),
    [
        ("127.0.0.1", True, True),
        ("::1", True, True),
        ("localhost", True, True),
        ("0.0.0.0", True, False),  # reachable from other machines: a token, always
        ("192.168.1.5", True, False),
        ("127.0.0.1", False, False),  # `sortie web` alone: a token even on loopback
    ],
)
def test_a_dashboard_opens_without_login_only_for_sortie_up_on_loopback(
    host: str, open_on_loopback: bool, is_open: bool
) -> None:
    assert WebSettings(host=host, open_on_loopback=open_on_loopback).open is is_open
