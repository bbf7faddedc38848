"""The follow-up reads its incidents once and shares the rows: what each part derives
from them must be what its own query would have read (SLA and escalation build the
same objects from either; these two are the ones that filter or compute)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from daemon.models import incident_key
from daemon.store import Store
from daemon.store import incidents as incident_store
from daemon.store import problems as problem_store
from daemon.store import runbooks as run_store
from daemon.store.tables import cis, incidents, problem_incidents, problems
from tests.conftest import FakeClock
from tests.integration.test_correlation_scenarios import CHAIN, World, alert, ci, svc

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _incident(title: str, **values: Any) -> dict[str, Any]:
    return {"title": title, "status": "triggered", "severity": "error",
            "group_key": f"g:{title}", "created_at": NOW, **values}


async def test_problem_candidates_from_the_shared_rows_are_those_of_the_query(
    store: Store
) -> None:
    async with store.write() as conn:
        ids = [(await conn.execute(sa.insert(incidents).returning(incidents.c.id),
                                   [row])).scalar_one() for row in [
            _incident("candidate", root_cause_ci="db", alert_name="DbDown"),
            _incident("another", root_cause_ci="db", alert_name="DbDown", status="resolved"),
            _incident("no root cause", alert_name="DbDown"),
            _incident("no alert name", root_cause_ci="db"),
            _incident("linked", root_cause_ci="db", alert_name="DbDown"),
        ]]
        merged = (await conn.execute(sa.insert(incidents).returning(incidents.c.id), [
            _incident("merged", root_cause_ci="db", alert_name="DbDown",
                      merged_into=ids[0])])).scalar_one()
        problem = (await conn.execute(sa.insert(problems).returning(problems.c.id), [{
            "title": "p", "status": "open", "created_by": "t", "created_at": NOW,
            "updated_at": NOW}])).scalar_one()
        await conn.execute(sa.insert(problem_incidents), [
            {"problem_id": problem, "incident_id": ids[4], "linked_at": NOW}])
        everything = [*ids, merged]
        rows = await incident_store.rows_by_id(conn, everything)
        shared = await problem_store.unlinked_candidates_of(conn, rows.values())
        queried = await problem_store.unlinked_candidates(conn, everything)
    assert shared == queried
    assert [c.id for c in shared] == ids[:2]


async def test_the_final_states_of_a_batch_are_those_read_after_it(
    store: Store, clock: FakeClock
) -> None:
    """The ingest takes its final states from the follow-up's one read, made before
    the follow-up's parts ran: nothing in them may change an incident."""
    world = World(store, clock, *CHAIN, svc("svc-pay", "pay"), ci("pay", "db", service="svc-pay"))
    async with store.write() as conn:  # the primary service is looked up in the stored CMDB
        await conn.execute(sa.insert(cis), [
            {"id": c.id, "name": c.name, "type": c.type, "service": c.service,
             "criticality": c.criticality, "attributes": {}, "updated_at": NOW}
            for c in world.holder.current.cis.values()])
    await world.send(alert("web-5xx", "web"), alert("lonely", None, group="am:u"))
    clock.advance(20)
    seen = []
    for batch in ([alert("app-errors", "app"), alert("pay-errors", "pay")],
                  [alert("db-down", "db"), alert("web-5xx", "web", status="resolved")],
                  [alert("lonely", None, group="am:u", status="resolved")]):
        async with store.write() as conn:
            result = await world.pipeline.process(conn, batch)
            after = await incident_store.get_states(conn, result.final)
        assert result.final
        assert result.final == after
        seen += after.values()
        clock.advance(20)
    # The comparison covered what is derived, not only what is stored.
    assert {s.service for s in seen} >= {"svc-shop", None}
    assert {s.status.value for s in seen} >= {"triggered", "resolved"}


async def test_runs_made_in_the_follow_up_see_the_shared_rows_and_the_guards(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    """As the daemon wires it: runs made inside `FollowUp.after` render the incident from
    the rows it read once, and the guards (read only when a runbook matches) still hold."""
    from tests.integration.test_runbook_engine import Lab
    from tests.integration.test_runbook_engine import alert as rb_alert

    lab = Lab(store, clock, tmp_path, """
        runbooks:
          - name: fix
            match: {alerts: ['alertname="DbDown"']}
            params: {key: "{{ incident.key }}", prio: "{{ incident.priority }}"}
            steps: [{name: say, type: notify, message: "hi"}]
    """)
    lab.followup.automation = lab.triggers.create_runs

    async def ingest(*batch: Any) -> tuple[Any, list[Any]]:
        """The batch's result and every run so far, newest first."""
        clock.advance(1)
        async with store.write() as conn:
            result = await lab.pipeline.process(conn, batch)
            runs = await run_store.list_runs(conn, status=None, incident_id=None,
                                             runbook=None, limit=10, before_id=None)
        return result, runs

    result, runs = await ingest(rb_alert("Other", "web-1"))  # matches nothing: no run
    assert result.effects.runs == 0 and runs == []
    result, [run] = await ingest(rb_alert("DbDown", "db-1"))
    state = result.final[run.incident_id]
    assert result.effects.runs == 1 and run.status == "queued"
    assert run.params == {"key": incident_key(state.id),
                          "prio": state.priority.value if state.priority else "None"}
    async with store.write() as conn:
        await run_store.set_disabled(conn, "*", disabled=True, reason="review", now=clock.now())
    result, [skipped, _] = await ingest(rb_alert("DbDown", "db-2"))
    assert result.effects.runs == 1 and skipped.status == "skipped"
    assert skipped.error == "all runbooks are disabled (kill switch): review"
