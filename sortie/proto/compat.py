"""Reading what Sortie 0.1.0 sent, where msgspec's own rules are not enough.

Everything 0.1.0 stored decodes with today's types directly: the cluster variants are tagged
by 0.1.0's own ``provider`` field and values, and fields that moved into a variant or went
away are ignored (``tests/data/v0.1.0`` holds captured values; a test decodes each). One
setting changed level: a 0.1.0 ``ComputeAttach`` carries ``trust_new_host_key`` beside
``vm``, not in ``vm.ssh`` with the other SSH settings. A plain decode would drop it, so the
request is read a second time for that one field and the value is moved where it now lives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from sortie.proto import messages as m


class _AttachV010(msgspec.Struct):
    """The one field of a 0.1.0 attach request that today's ``ComputeAttach`` has no place for."""

    trust_new_host_key: bool = False


_attach_v010 = msgspec.json.Decoder(_AttachV010)


def upgrade_compute_request(msg: Any, data: bytes) -> Any:
    """``msg`` (decoded from ``data``) with a 0.1.0 attach's trust setting in ``vm.ssh``."""
    if not isinstance(msg, m.ComputeAttach) or msg.vm.ssh.trust_new_host_key:
        return msg
    if not _attach_v010.decode(data).trust_new_host_key:
        return msg
    ssh = msgspec.structs.replace(msg.vm.ssh, trust_new_host_key=True)
    return msgspec.structs.replace(msg, vm=msgspec.structs.replace(msg.vm, ssh=ssh))


# message type (or union alias) -> its step after decoding
UPGRADES: dict[Any, Callable[[Any, bytes], Any]] = {
    m.ComputeRequest: upgrade_compute_request,
    m.ComputeAttach: upgrade_compute_request,
}
