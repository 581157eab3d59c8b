"""Variables an attached machine's agent is started with (``--agent-env KEY=VALUE``).

They carry the operator's network settings to the remote agent, and from it to the builds
it runs (uv): ``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``,
``REQUESTS_CA_BUNDLE``, ``UV_*``, ... They are settings, not secrets, and are stored in the
machine's record; but a proxy URL can carry a user and password (``http://user:pass@proxy``),
so wherever a value is shown or logged its user information is replaced by ``***``
(:func:`redacted`). The scheduler checks them (:func:`problem`) for every client, the client
before sending.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sortie.proto.process_input import ENV_NAME, RESERVED_PREFIX

HIDDEN = "***"
# The line an agent logs once its own settings are checked, before it connects to the broker:
# whoever started it over SSH watches its log for this line or its exit.
SETTINGS_CHECKED = "agent settings checked"
# "scheme://user:pass@host" (also "scheme://token@host"), and "user:pass@host" without one
_WITH_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]+@")
_WITHOUT_SCHEME = re.compile(r"(?P<start>^|[\s,;])[^/@\s:,;]+:[^/@\s,;]+@")


def problem(env: Mapping[str, str]) -> str | None:
    """Why ``env`` cannot be the agent's environment, or None. Never quotes a value."""
    for key, value in env.items():
        if not ENV_NAME.fullmatch(key) or key.startswith(RESERVED_PREFIX):
            return (
                f"--agent-env: variable name {key[:80]!r} is not valid: use letters, digits "
                f"and '_', not starting with a digit; {RESERVED_PREFIX}* names are Sortie's own"
            )
        if "\x00" in value or "\n" in value or "\r" in value:
            return (
                f"--agent-env: the value of {key} contains a NUL byte or a line break, which an "
                "environment variable cannot carry: remove it"
            )
    return None


def redact(value: str) -> str:
    """``value`` with the user information of any URL in it replaced by ``***``."""
    value = _WITH_SCHEME.sub(lambda m: f"{m.group('scheme')}{HIDDEN}@", value)
    return _WITHOUT_SCHEME.sub(lambda m: f"{m.group('start')}{HIDDEN}@", value)


def redacted(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` as it may be shown or logged."""
    return {key: redact(value) for key, value in env.items()}
