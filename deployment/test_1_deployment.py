"""The provider as users run it: the wheel under a real scheduler, dag-processor, triggerer, api-server.

Issue 11's deployment test. Every example DAG runs through Airflow's REST API (scheduled, manual
without a logical date, a rerun of a finished day, two runs at once) against the emulator with
m3ter's rate limits on; the emulator's exact contents, the triggerer's part and the logs are
checked. Run with ``make deploy-test`` (not part of ``make test``).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_m3ter.client.encoding import derive_uid
from deployment.harness import Deployment, say

DEFERRING = {  # tasks of the examples that must wait (deferred) in every run
    "example_m3ter_ingest_events": ["check_ingest_events"],
    "example_m3ter_backfill": ["upload_month", "check_ingest_events"],
}
NAMESPACES = {
    "example_m3ter_meters.ingest_usage",
    "example_m3ter_ingest_events.ingest_api_calls",
    "example_m3ter_ingest.ingest_api_usage",
    "example_m3ter_ingest.ingest_data_transfer",
    "example_m3ter_backfill.api_calls.2024-05",
}
RUNS: dict[str, dict[str, Any]] = {}  # scheduled runs, kept for the later tests


def _states(run: dict[str, Any]) -> dict[str, str]:
    return {task: ti["state"] for task, ti in run["tasks"].items()}


def _all_succeeded(run: dict[str, Any]) -> None:
    assert run["state"] == "success", _states(run)
    assert set(_states(run).values()) == {"success"}, _states(run)


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _by_namespace(measurements: list[dict[str, Any]]) -> Counter[str]:
    """How many stored measurements carry the uid derived from their own content, per namespace."""
    counts: Counter[str] = Counter()
    for m in measurements:
        owner = next((ns for ns in NAMESPACES if derive_uid(ns, m) == m["uid"]), "not derived")
        counts[owner] += 1
    return counts


def _expected_window(run_after: datetime, hour: int) -> tuple[datetime, datetime]:
    """The examples' rule for a run without a data interval: the last complete day before it."""
    end = run_after.astimezone(timezone.utc).replace(hour=hour, minute=0, second=0, microsecond=0)
    if end > run_after:
        end -= timedelta(days=1)
    return end - timedelta(days=1), end


def test_every_example_runs_on_its_schedule_two_at_once(deployment: Deployment) -> None:
    emu = deployment.emulator
    deployment.unpause("example_m3ter_meters")
    (meters,) = deployment.wait_for(lambda: deployment.runs("example_m3ter_meters"), 120, "a scheduled run")
    assert meters["run_type"] == "scheduled"
    RUNS["meters"] = run = deployment.wait_run("example_m3ter_meters", meters["dag_run_id"])
    _all_succeeded(run)

    # two DAGs' scheduled runs at the same time, against one organization with m3ter's limits on
    deployment.unpause("example_m3ter_ingest")
    deployment.unpause("example_m3ter_ingest_events")
    deployment.unpause("example_m3ter_backfill")
    backfill = deployment.trigger("example_m3ter_backfill", conf={"month": "2024-05"})
    for dag_id in ("example_m3ter_ingest", "example_m3ter_ingest_events"):
        (scheduled,) = deployment.wait_for(lambda d=dag_id: deployment.runs(d), 120, f"{dag_id} run")
        assert scheduled["run_type"] == "scheduled"
        RUNS[dag_id] = scheduled
    for dag_id in ("example_m3ter_ingest", "example_m3ter_ingest_events"):
        RUNS[dag_id] = run = deployment.wait_run(dag_id, RUNS[dag_id]["dag_run_id"])
        _all_succeeded(run)
    RUNS["backfill"] = run = deployment.wait_run("example_m3ter_backfill", backfill, timeout=600)
    _all_succeeded(run)
    ingest, events = RUNS["example_m3ter_ingest"], RUNS["example_m3ter_ingest_events"]
    overlap = min(_parse(ingest["end_date"]), _parse(events["end_date"])) - max(
        _parse(ingest["start_date"]), _parse(events["start_date"])
    )
    assert overlap > timedelta(0), "the two scheduled runs did not run at the same time"

    # the emulator's exact contents: each measurement once, under the uid derived from its content
    stored = emu.measurements()
    assert len({m["uid"] for m in stored}) == len(stored)
    assert _by_namespace(stored) == {
        "example_m3ter_meters.ingest_usage": 4,
        "example_m3ter_ingest_events.ingest_api_calls": 12,  # 4 six-hour steps x 3 customers
        "example_m3ter_ingest.ingest_api_usage": 72,  # 24 hours x 3 customers
        "example_m3ter_ingest.ingest_data_transfer": 72,
        "example_m3ter_backfill.api_calls.2024-05": 31 * 24 * 3,
    }
    start, end = _parse(events["data_interval_start"]), _parse(events["data_interval_end"])
    event_rows = [
        m for m in stored if derive_uid("example_m3ter_ingest_events.ingest_api_calls", m) == m["uid"]
    ]
    assert all(start <= _parse(m["ts"]) < end for m in event_rows)
    meters = {m["code"] for m in _meters(deployment)}
    assert {"api_calls", "data_transfer", "storage"} <= meters
    stats = emu.stats()
    assert stats["rate_limited"] == {"org": 0, "ingest_ip": 0, "config_ip": 0}, stats["rate_limited"]


def _meters(deployment: Deployment) -> list[dict[str, Any]]:
    import requests

    emu = deployment.emulator
    reply = requests.get(
        f"{emu.config_url}/organizations/{emu.org_id}/meters",
        headers={"Authorization": f"Bearer {emu.token()}"},
        params={"pageSize": 100},
        timeout=30,
    )
    reply.raise_for_status()
    return list(reply.json()["data"])


def test_manual_runs_without_a_logical_date(deployment: Deployment) -> None:
    """Issue 11, item 2: Airflow 3's default manual run has no data interval; the examples pick one."""
    emu = deployment.emulator
    before = emu.stats()
    stored_before = {m["uid"] for m in emu.measurements()}
    runs = {
        dag_id: deployment.trigger(dag_id)
        for dag_id in ("example_m3ter_ingest", "example_m3ter_ingest_events")
    }
    finished = {dag_id: deployment.wait_run(dag_id, run_id) for dag_id, run_id in runs.items()}
    new_rows: dict[str, int] = {}
    for dag_id, run in finished.items():
        _all_succeeded(run)
        assert run["logical_date"] is None, run
        assert run["data_interval_start"] is None, run
        hour = 0 if dag_id == "example_m3ter_ingest" else 1
        window = _expected_window(_parse(run["run_after"]), hour)
        scheduled = RUNS[dag_id]
        same_day = window == (
            _parse(scheduled["data_interval_start"]),
            _parse(scheduled["data_interval_end"]),
        )
        new_rows[dag_id] = 0 if same_day else (144 if dag_id == "example_m3ter_ingest" else 12)
        say(f"{dag_id}: manual run loads {window[0]:%Y-%m-%d %H:%M} to {window[1]:%Y-%m-%d %H:%M}")
    after = emu.stats()
    added = [m for m in emu.measurements() if m["uid"] not in stored_before]
    assert len(added) == sum(new_rows.values())
    # every row of both runs was sent: new ones stored, resends of the same day de-duplicated
    sent = after["measurements_received"] - before["measurements_received"]
    assert sent == 144 + 12
    assert after["duplicates_received"] - before["duplicates_received"] == sent - len(added)


def test_a_rerun_of_a_finished_day_succeeds(deployment: Deployment) -> None:
    """Issue 11, item 3: the rerun's resends come back as DuplicateUid; the events check passes."""
    emu = deployment.emulator
    before = emu.stats()
    stored_before = len(emu.measurements())
    scheduled = RUNS["example_m3ter_ingest_events"]
    deployment.api(
        "POST",
        "dags/example_m3ter_ingest_events/clearTaskInstances",
        {
            "dag_run_id": scheduled["dag_run_id"],
            "only_failed": False,
            "reset_dag_runs": True,
            "dry_run": False,
        },
    )
    deployment.wait_for(
        lambda: (
            deployment.api("GET", f"dags/example_m3ter_ingest_events/dagRuns/{scheduled['dag_run_id']}")[
                "state"
            ]
            != "success"
        ),
        60,
        "the cleared run to start again",
        interval=0.5,
    )
    run = deployment.wait_run("example_m3ter_ingest_events", scheduled["dag_run_id"])
    _all_succeeded(run)
    assert run["tasks"]["check_ingest_events"]["try_number"] >= 2
    after = emu.stats()
    assert after["duplicates_received"] - before["duplicates_received"] == 12
    assert len(emu.measurements()) == stored_before
    report = deployment.api(
        "GET",
        f"dags/example_m3ter_ingest_events/dagRuns/{scheduled['dag_run_id']}/taskInstances/"
        "check_ingest_events/xcomEntries/return_value?deserialize=true&stringify=false",
    )["value"]
    assert report["failures"] == 0, report
    # 12 of this rerun; the window may also hold the earlier manual run's resends of the same day
    assert report["resends"] >= 12, report


def test_deferrable_waits_ran_in_the_triggerer(deployment: Deployment) -> None:
    """The deferred waits ran as triggers in the triggerer process (its log per task try)."""
    triggerer_jobs = deployment.api("GET", "jobs?job_type=TriggererJob")["jobs"]
    assert triggerer_jobs, "no triggerer job registered"
    triggerer_ids = {str(job["id"]) for job in triggerer_jobs}
    for dag_id, tasks in DEFERRING.items():
        run_id = RUNS["backfill" if dag_id == "example_m3ter_backfill" else dag_id]["dag_run_id"]
        for task_id in tasks:
            folder = deployment.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
            task_log = (folder / "attempt=1.log").read_text()
            assert "Pausing task as DEFERRED" in task_log, f"{dag_id}.{task_id} did not defer"
            trigger_logs = sorted(folder.glob("attempt=1.log.trigger.*.log"))
            assert trigger_logs, f"{dag_id}.{task_id}: no triggerer log"
            for path in trigger_logs:
                assert path.name.split(".")[-2] in triggerer_ids, path.name
                text = path.read_text()
                assert "starting" in text
                assert "Trigger fired event" in text, f"{path}: the trigger never fired"


def test_pool_slots_share_the_organizations_limit(deployment: Deployment) -> None:
    """Issue 11, item 7: four tasks of a 4-slot pool reach >= 90 % of m3ter's 50 requests/s, no 429."""
    emu = deployment.emulator
    deployment.api("POST", "pools", {"name": "m3ter_ingest", "slots": 4}, ok=(200, 201, 409))
    deployment.unpause("m3ter_pool_pacing")
    before = emu.stats()
    run_id = deployment.trigger("m3ter_pool_pacing", conf={"pool_slots_total": 4, "requests": 150})
    run = deployment.wait_run("m3ter_pool_pacing", run_id, timeout=300)
    _all_succeeded(run)
    after = emu.stats()
    answered: list[float] = []
    for index in range(4):
        value = deployment.api(
            "GET",
            f"dags/m3ter_pool_pacing/dagRuns/{run_id}/taskInstances/send/xcomEntries/return_value"
            f"?map_index={index}&deserialize=true&stringify=false",
        )["value"]
        assert value["share"] == 0.25
        answered += value["answered"]
    answered.sort()
    peak = max(sum(1 for t in answered[i:] if t < start + 1.0) for i, start in enumerate(answered))
    limited = {k: after["rate_limited"][k] - before["rate_limited"][k] for k in after["rate_limited"]}
    say(f"pool pacing: {len(answered)} requests, peak {peak} per second, rate-limited {limited}")
    assert limited == {"org": 0, "ingest_ip": 0, "config_ip": 0}
    assert peak >= 45, f"peak {peak} requests/s is under 90 % of m3ter's 50/s"

    # the baseline: the same tasks each pacing at the whole limit exceed it together
    run_id = deployment.trigger("m3ter_pool_pacing", conf={"pool_slots_total": None, "requests": 40})
    deployment.wait_run("m3ter_pool_pacing", run_id, timeout=300)
    baseline = emu.stats()["rate_limited"]["org"] - after["rate_limited"]["org"]
    say(f"pool pacing baseline (no sharing): {baseline} x 429")
    assert baseline > 0


def test_no_secret_in_any_log(deployment: Deployment, tmp_path: Any) -> None:
    snapshot = tmp_path / "emulator-state.json"
    deployment.emulator.snapshot(snapshot)
    tokens = list(json.loads(snapshot.read_text())["tokens"])
    assert tokens, "the emulator issued no token: nothing ran?"
    secrets = {
        "the m3ter API secret": deployment.emulator_secret,
        "the admin password": deployment.admin_password,
        "the JWT secret": deployment.jwt_secret,
        "the Fernet key": deployment.fernet_key,
        **{f"m3ter access token {i}": token for i, token in enumerate(tokens)},
    }
    files = list(deployment.log_files())
    assert len(files) > 10, files
    found = []
    for path in files:
        text = path.read_text(errors="replace")
        found += [f"{name} in {path}" for name, value in secrets.items() if value in text]
    assert found == []
