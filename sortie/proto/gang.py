"""Where a run's current attempt is: the one rule the scheduler and the client both read.

A multi-node run stores its gang (rank 0 first). Records written before gangs existed carry
only ``agent_id``/``agent_incarnation``: such a run is a gang of one. Kept here, on the
contract's floor, so that the scheduler (which decides with it) and the client (which shows
it) cannot drift apart.
"""

from __future__ import annotations

from sortie.proto import messages as m


def members(rec: m.RunRecord) -> list[m.GangMember]:
    """The run's gang; a single-node run (and a record from before gangs) is a gang of one."""
    if rec.gang:
        return list(rec.gang)
    if rec.agent_id is not None and rec.agent_incarnation is not None:
        return [
            m.GangMember(
                rank=0, agent_id=rec.agent_id, incarnation=rec.agent_incarnation, state=rec.state
            )
        ]
    return []


def agent_ids(rec: m.RunRecord) -> list[str]:
    """The agents the run's current attempt is on, by rank."""
    return [member.agent_id for member in members(rec)]
