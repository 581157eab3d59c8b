"""Other services talk to Sortie over NATS: valid requests work, garbage changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from sortie.bus.blobs import put_blob, sha256_bytes
from sortie.bus.connection import BusAuth, connect, open_bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from tests.e2e.conftest import Installation


async def test_submit_with_one_json_request(installation: Installation) -> None:
    bus = await open_bus(
        installation.url, "other-service", auth=BusAuth(creds=installation.client_creds)
    )
    try:
        script = b"print('from another service')\n"
        sha = sha256_bytes(script)
        await put_blob(bus.blobs, sha, script)
        manifest = codec.encode(
            m.Manifest(files=[m.FileEntry(path="s.py", size=len(script), mode=0o644, sha256=sha)])
        )
        snap = sha256_bytes(manifest)
        await put_blob(bus.blobs, snap, manifest)
        # plain JSON written by hand, as a service in any language would
        request = {
            "type": "submit",
            "spec": {"experiment": "svc", "script": "s.py", "snapshot_id": snap},
        }
        reply = await bus.nc.request(subjects.API_SUBMIT, json.dumps(request).encode(), timeout=10)
        body = json.loads(reply.data)
        assert body["type"] == "submit_accepted" and body["run_id"].startswith("svc_")
    finally:
        await bus.close()


async def test_malformed_and_undecodable_messages_get_errors_and_change_nothing(
    installation: Installation, tmp_path: Path
) -> None:
    # full rights: garbage on every subject, as if anything could get onto the bus
    nc = await connect(
        installation.url, "garbage", auth=BusAuth(creds=installation.scheduler_creds)
    )
    try:
        runs_before = installation.json("run", "list")
        cases = [
            b"{not json",
            b"\xff\xfe\x00garbage",
            json.dumps({"type": "submit"}).encode(),
            json.dumps(
                {"type": "submit", "spec": {"experiment": "x", "script": 5, "snapshot_id": "a"}}
            ).encode(),
            json.dumps(
                {
                    "type": "submit",
                    "spec": {"experiment": "x", "script": "a.py", "snapshot_id": "0" * 64},
                }
            ).encode(),
        ]
        for payload in cases:
            reply = await nc.request(subjects.API_SUBMIT, payload, timeout=10)
            body = json.loads(reply.data)
            assert body["type"] == "error", payload
            assert body["code"] in ("bad_request", "snapshot_missing"), body
            assert body["message"]
        reply = await nc.request(subjects.API_CANCEL, b"[]", timeout=10)
        assert json.loads(reply.data)["code"] == "bad_request"
        reply = await nc.request(
            subjects.API_CANCEL,
            json.dumps({"type": "cancel", "run_id": "a.b"}).encode(),
            timeout=10,
        )
        assert json.loads(reply.data)["code"] == "bad_request"
        # garbage on subjects that have no reply: heartbeats, reports, agent commands, logs
        js = nc.jetstream()
        await nc.publish(subjects.heartbeat("intruder"), b"\x00\x01")
        await nc.publish(subjects.heartbeat("intruder"), json.dumps({"type": "heartbeat"}).encode())
        await js.publish(subjects.report("intruder"), b"not a report")
        await nc.publish(subjects.agent_commands(installation_agent(installation)), b"{]")
        await js.publish(subjects.logs("nobody_1_x", "nobody"), b"\xff")
        await nc.flush()
        # everything still answers and nothing was created
        targets = await nc.request(
            subjects.API_TARGETS, codec.encode(m.TargetsRequest()), timeout=10
        )
        assert [t["name"] for t in json.loads(targets.data)["targets"]] == ["local"]
        assert installation.json("run", "list") == runs_before
        (tmp_path / "ok.py").write_text("print('still fine')\n")
        proc = installation.cli("run", "submit", str(tmp_path), "--script", "ok.py", "--wait")
        assert proc.returncode == 0 and "still fine" in proc.stdout
    finally:
        await nc.close()


def installation_agent(installation: Installation) -> str:
    from sortie.agents.config import default_agent_id

    return default_agent_id("local")
