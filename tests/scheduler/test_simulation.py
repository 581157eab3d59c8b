"""A thousand simulated agents and a fake clock around the real decision code."""

from __future__ import annotations

from tests.sim import Sim, make_agents


def test_thousand_agents_every_run_completes_exactly_once_without_oversubscription() -> None:
    sim = Sim(agents=make_agents(1000, seed=1), seed=1)
    sim.step()  # agents register
    sim.submit(5000)
    for _ in range(200):  # bounded: 100 fake seconds
        sim.step()
        if sim.pending() == 0:
            break
    assert sim.pending() == 0, f"{sim.pending()} runs never finished"
    assert len(sim.completions) == 5000
    assert set(sim.completions.values()) == {1}


def test_lost_agents_runs_are_requeued_and_still_complete_once() -> None:
    sim = Sim(agents=make_agents(200, seed=2), seed=2, duration=(5.0, 10.0))
    sim.step()
    sim.submit(1500)
    for _ in range(4):
        sim.step()
    for agent in sim.agents[:50]:  # a quarter of the machines vanish mid-run
        agent.alive = False
    for _ in range(400):
        sim.step()
        if sim.pending() == 0:
            break
    assert sim.pending() == 0
    assert len(sim.completions) == 1500 and set(sim.completions.values()) == {1}
    requeued = [r for r, attempt in sim.completed_attempt.items() if attempt > 1]
    assert len(requeued) >= 10, "runs on the vanished agents should have completed as attempt 2+"


def test_same_seed_same_outcome() -> None:
    def run(seed: int) -> list[tuple[str, str | None]]:
        sim = Sim(agents=make_agents(50, seed=seed), seed=seed)
        sim.step()
        sim.submit(300)
        sim.step()
        return sorted((r.run_id, r.agent_id) for r in sim.state.runs.values())

    assert run(7) == run(7)
