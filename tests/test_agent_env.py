"""The rules for an attached machine's agent variables: names, values, and what is shown."""

from __future__ import annotations

import pytest

from sortie.proto.agent_env import problem, redact, redacted

SHOWN = [
    ("http://proxy.corp:3128", "http://proxy.corp:3128"),
    ("http://alice:s3cret@proxy.corp:3128", "http://***@proxy.corp:3128"),
    ("https://token@proxy.corp", "https://***@proxy.corp"),
    ("socks5h://u:p%40ss@10.0.0.1:1080/", "socks5h://***@10.0.0.1:1080/"),
    ("alice:s3cret@proxy.corp:3128", "***@proxy.corp:3128"),
    ("localhost,127.0.0.1,.corp", "localhost,127.0.0.1,.corp"),
    ("/etc/ssl/certs/corp-ca.pem", "/etc/ssl/certs/corp-ca.pem"),
    ("https://a:b@one,https://c:d@two", "https://***@one,https://***@two"),
]


@pytest.mark.parametrize(("value", "shown"), SHOWN)
def test_user_information_in_urls_is_never_shown(value: str, shown: str) -> None:
    assert redact(value) == shown


def test_redacted_keeps_names_and_hides_passwords() -> None:
    env = {"HTTPS_PROXY": "http://alice:s3cret@proxy:3128", "NO_PROXY": "localhost"}
    assert redacted(env) == {"HTTPS_PROXY": "http://***@proxy:3128", "NO_PROXY": "localhost"}


def test_good_settings_pass() -> None:
    env = {"HTTPS_PROXY": "http://a:b@p:1", "SSL_CERT_FILE": "/x.pem", "UV_INDEX_URL": "https://i"}
    assert problem(env) is None


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"1BAD": "x"}, "variable name '1BAD' is not valid"),
        ({"HTTPS-PROXY": "x"}, "variable name 'HTTPS-PROXY' is not valid"),
        ({"SORTIE_URL": "x"}, "SORTIE_* names are Sortie's own"),
        (
            {"HTTPS_PROXY": "http://a:pw@p\n"},
            "the value of HTTPS_PROXY contains a NUL byte or a line",
        ),
        ({"X": "a\x00b"}, "the value of X contains"),
    ],
)
def test_bad_settings_are_refused_saying_why_without_the_value(
    env: dict[str, str], says: str
) -> None:
    why = problem(env)
    assert why is not None and says in why and why.startswith("--agent-env: ")
    assert "pw" not in why


def test_sdk_attach_configuration_carries_agent_env_and_refuses_bad_names() -> None:
    from sortie.client.sdk import RemoteCompute

    env = {"HTTPS_PROXY": "http://a:pw@proxy:3128", "NO_PROXY": "localhost"}
    config = RemoteCompute.attach_configuration(
        address="10.0.0.7", username="alice", password="x", agent_env=env
    )
    assert config.to_request("box").vm.agent_env == env
    bad = RemoteCompute.attach_configuration(
        address="10.0.0.7", username="alice", password="x", agent_env={"SORTIE_X": "1"}
    )
    with pytest.raises(ValueError, match="SORTIE_\\* names are Sortie's own"):
        bad.to_request("box")


def test_the_scheduler_refuses_bad_agent_env_for_every_client() -> None:
    from sortie.proto import messages as m
    from sortie.scheduler import core
    from sortie.scheduler.model import SchedulerState
    from tests.scheduler.test_vms_core import LOGIN, attach, reply_of

    s = SchedulerState()
    bad = m.VmConfig(address="h", ssh=LOGIN, agent_env={"SORTIE_URL": "nats://x"})
    reply = reply_of(attach(s, vm=bad))
    assert isinstance(reply, m.ErrorReply) and reply.code == "bad_request"
    assert "SORTIE_* names are Sortie's own" in reply.message
    assert s.vms == {}
    good = m.VmConfig(address="h", ssh=LOGIN, agent_env={"HTTPS_PROXY": "http://a:b@p:1"})
    cmds = attach(s, vm=good)
    reply = reply_of(cmds)
    assert isinstance(reply, m.VmReply)
    # the record (read by every client) keeps the value as shown; the attach gets it whole
    assert s.vms["lab-box"].vm.agent_env == {"HTTPS_PROXY": "http://***@p:1"}
    assert reply.vm.vm.agent_env == {"HTTPS_PROXY": "http://***@p:1"}
    (start,) = [c for c in cmds if isinstance(c, core.AttachVm)]
    assert start.vm.agent_env == {"HTTPS_PROXY": "http://a:b@p:1"}
