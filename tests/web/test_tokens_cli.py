"""`sortie auth web-token` against a real `sortie up` with authentication on (the default):
minting prints the token once and stores only its hash; listing never shows a token;
revoking deletes it; clients cannot mint; bad input is refused with exit 2 and nothing stored.
"""

from __future__ import annotations

import hashlib
import json
import re

import msgspec
import pytest

from sortie.bus.connection import BusAuth, open_bus
from sortie.bus.kv import kv_items
from sortie.proto import subjects
from tests.e2e.conftest import Installation
from tests.e2e.conftest import installation as installation  # the fixture, shared

TOKEN = re.compile(r"sortie_web_[A-Za-z0-9_-]{43}")


def mint(inst: Installation, *args: str) -> dict[str, object]:
    out = inst.cli("auth", "web-token", *args, "-o", "json", check=True)
    found: dict[str, object] = json.loads(out.stdout)
    return found


def listed(inst: Installation) -> list[dict[str, object]]:
    out = inst.cli("auth", "web-token", "--list", "-o", "json", check=True)
    found: list[dict[str, object]] = json.loads(out.stdout)
    return found


async def stored(inst: Installation) -> dict[str, bytes]:
    bus = await open_bus(inst.url, "test", auth=BusAuth(creds=inst.scheduler_creds))
    try:
        kv = await bus.js.key_value(subjects.KV_WEB_TOKENS)
        return {e.key: e.value or b"" for e in await kv_items(kv)}
    finally:
        await bus.close()


async def test_a_minted_token_is_printed_once_and_stored_as_its_hash_only(
    installation: Installation,
) -> None:
    out = installation.cli("auth", "web-token", "--label", "alice", check=True)
    token, note = out.stdout.splitlines()
    assert token.startswith("sortie_web_") and len(token) > 40
    assert "'alice'" in note and "shown only this once" in note
    digest = hashlib.sha256(token.encode()).hexdigest()
    records = await stored(installation)
    assert digest in records
    assert token.encode() not in records[digest]
    record = msgspec.json.decode(records[digest])
    assert record["label"] == "alice" and record["read_only"] is False
    assert 29 * 86400 < record["expires_at"] - record["issued_at"] <= 30 * 86400
    # listed by its ID (the start of its hash), never the token
    text = installation.cli("auth", "web-token", "--list", check=True).stdout
    assert digest[:12] in text and "alice" in text and token not in text
    assert "ID" in text.splitlines()[0] and "valid" in text


def test_read_only_ttl_and_json_output(installation: Installation) -> None:
    minted = mint(installation, "--read-only", "--label", "viewer", "--ttl", "2h")
    assert str(minted["token"]).startswith("sortie_web_")
    about = minted["about"]
    assert isinstance(about, dict)
    assert about["label"] == "viewer" and about["access"] == "read-only"
    assert (
        about["state"] == "valid"
        and about["id"] == hashlib.sha256(str(minted["token"]).encode()).hexdigest()[:12]
    )
    entries = [e for e in listed(installation) if e["id"] == about["id"]]
    assert entries == [about]
    assert str(minted["token"]) not in json.dumps(listed(installation))


def test_revoking_by_label_and_by_id(installation: Installation) -> None:
    first = mint(installation, "--label", "ci-job")
    second = mint(installation, "--label", "ci-job")
    third = mint(installation, "--label", "keeper")
    out = installation.cli("auth", "web-token", "--revoke", "ci-job", check=True)
    assert out.stdout.startswith("Revoked 2 dashboard tokens")
    ids = {e["id"] for e in listed(installation)}
    for gone in (first, second):
        assert isinstance(gone["about"], dict) and gone["about"]["id"] not in ids
    keeper = third["about"]
    assert isinstance(keeper, dict) and keeper["id"] in ids
    revoked = json.loads(
        installation.cli(
            "auth", "web-token", "--revoke", str(keeper["id"]), "-o", "json", check=True
        ).stdout
    )
    assert [r["id"] for r in revoked] == [keeper["id"]]
    assert keeper["id"] not in {e["id"] for e in listed(installation)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--ttl", "soon"), "is not a lifetime: give seconds or a number with s, m, h or d"),
        (("--ttl", "5"), "at least a minute"),
        (("--label", ""), "a token's label is 1 to 64 printable characters"),
        (("--list", "--read-only"), "--read-only and --label go with minting"),
        (("--revoke", "nobody-has-this"), "no dashboard token is labelled 'nobody-has-this'"),
        (("--revoke", "abc"), "no dashboard token is labelled 'abc'"),
    ],
)
def test_bad_input_is_refused_and_stores_nothing(
    installation: Installation, args: tuple[str, ...], message: str
) -> None:
    before = listed(installation)
    out = installation.cli("auth", "web-token", *args)
    assert out.returncode == 2, out
    assert message in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert listed(installation) == before


def test_a_client_cannot_mint_only_the_installation_can(
    installation: Installation,
) -> None:
    before = listed(installation)  # clients may list: the dashboard reads the hashes
    out = installation.cli(
        "--creds",
        str(installation.client_creds),
        "auth",
        "web-token",
        "--label",
        "intruder",
        timeout=60,
    )
    assert out.returncode == 2, out
    assert "needs the installation's scheduler credentials" in out.stderr
    assert not TOKEN.search(out.stdout + out.stderr)
    assert listed(installation) == before
