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


def _all_succeeded(run: dict[str, Any], deployment: Deployment, tries: int = 1) -> None:
    """Every task succeeded, each in ``tries`` tries plus one per Airflow 3.3.2 defer race it met."""
    assert run["state"] == "success", _states(run)
    assert set(_states(run).values()) == {"success"}, _states(run)
    races = deployment.defer_races(run["dag_id"], run["dag_run_id"])
    if races:
        say(f"{run['dag_id']} {run['dag_run_id']}: retried after Airflow's defer race: {dict(races)}")
    used = {task: ti["try_number"] for task, ti in run["tasks"].items()}
    assert used == {task: tries + races[task.split("[")[0]] for task in used}, (used, races)


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _by_namespace(measurements: list[dict[str, Any]]) -> Counter[str]:
    """How many stored measurements carry the uid derived from their own content, per namespace."""
    counts: Counter[str] = Counter()
    for m in measurements:
        owner = next((ns for ns in NAMESPACES if derive_uid(ns, m) == m["uid"]), "not derived")
        counts[owner] += 1
    return counts


def _xcom(deployment: Deployment, dag_id: str, run_id: str, task_id: str) -> Any:
    return deployment.api(
        "GET",
        f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        "?deserialize=true&stringify=false",
    )["value"]


def _own_resends_since(deployment: Deployment, since: str, namespace: str) -> int:
    """DuplicateUid events since ``since`` whose measurement is derived in ``namespace`` (read from m3ter)."""
    from airflow_provider_m3ter.client.core import M3terClient
    from airflow_provider_m3ter.client.settings import ClientSettings

    emu = deployment.emulator
    settings = ClientSettings(
        org_id=emu.org_id,
        access_key_id=emu.access_key_id,
        api_secret=emu.api_secret,
        config_url=emu.config_url,
        ingest_url=emu.ingest_url,
    )
    count = 0
    with M3terClient(settings) as client:
        for event in client.paginate("events", params={"eventName": "ingest.validation.failure"}):
            detail = event["m3terEvent"]
            if _parse(event["eventTime"]) < _parse(since) or detail["failureType"] != "DuplicateUid":
                continue
            count += derive_uid(namespace, detail["measurement"]) == detail["uid"]
    return count


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
    _all_succeeded(run, deployment)

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
        _all_succeeded(run, deployment)
    RUNS["backfill"] = run = deployment.wait_run("example_m3ter_backfill", backfill, timeout=600)
    _all_succeeded(run, deployment)
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
    """Issue 11, item 2: Airflow 3's default manual run has no data interval; the examples pick one.

    Both manual runs run at once and (unless the day turned between) load the day their scheduled
    runs loaded: every row is resent, m3ter de-duplicates it, and the events check of
    example_m3ter_ingest_events recognises exactly its own 12 resends and leaves
    example_m3ter_ingest's resends (another load in the same organization) out.
    """
    emu = deployment.emulator
    before = emu.stats()
    stored_before = {m["uid"]: m for m in emu.measurements()}
    runs = {
        dag_id: deployment.trigger(dag_id)
        for dag_id in ("example_m3ter_ingest", "example_m3ter_ingest_events")
    }
    finished = {dag_id: deployment.wait_run(dag_id, run_id) for dag_id, run_id in runs.items()}
    new_rows: dict[str, int] = {}
    for dag_id, run in finished.items():
        _all_succeeded(run, deployment)
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
        if dag_id == "example_m3ter_ingest_events":
            report = _xcom(deployment, dag_id, run["dag_run_id"], "check_ingest_events")
            say(f"{dag_id}: events check {report}")
            assert report["failures"] == 0, report
            assert report["resends"] == (12 if same_day else 0), report
    after = emu.stats()
    stored_after = {m["uid"]: m for m in emu.measurements()}
    added = [m for uid, m in stored_after.items() if uid not in stored_before]
    assert len(added) == sum(new_rows.values())
    # what m3ter held stays exactly as it was (a resend never changes a stored measurement)
    assert {uid: stored_after[uid] for uid in stored_before} == stored_before
    # every row of both runs was sent: new ones stored, resends of the same day de-duplicated
    sent = after["measurements_received"] - before["measurements_received"]
    assert sent == 144 + 12
    assert after["duplicates_received"] - before["duplicates_received"] == sent - len(added)
    assert after["rate_limited"] == before["rate_limited"]


def test_a_rerun_of_a_finished_day_succeeds(deployment: Deployment) -> None:
    """Issue 11, item 3: rerunning a finished day succeeds and never bills twice, in both shapes.

    1. Clearing the finished run (the same task instances, try 2): the ingest's checkpoint says an
       earlier try delivered every batch, so it sends nothing; m3ter's contents do not change.
    2. A new run for the same day (a manual run with a logical date in it: its own task instances,
       no checkpoint): every row is resent under the same uids, m3ter de-duplicates all 12, and
       the events check counts exactly those 12 as resends, none as failures.
    """
    emu = deployment.emulator
    dag_id = "example_m3ter_ingest_events"
    namespace = "example_m3ter_ingest_events.ingest_api_calls"
    scheduled = RUNS[dag_id]
    run_id = scheduled["dag_run_id"]

    # 1. clear the finished scheduled run
    before = emu.stats()
    stored_before = emu.measurements()
    cleared = deployment.api(
        "POST",
        f"dags/{dag_id}/clearTaskInstances",
        {"dag_run_id": run_id, "only_failed": False, "reset_dag_runs": True, "dry_run": False},
    )
    assert {ti["task_id"] for ti in cleared["task_instances"]} >= {"ingest_api_calls", "check_ingest_events"}
    run = deployment.wait_run(dag_id, run_id)
    _all_succeeded(run, deployment, tries=2)
    summary = _xcom(deployment, dag_id, run_id, "ingest_api_calls")
    assert summary["sent"] == 0, summary
    assert summary["resumed_from"] == {"batches": 1, "measurements": 12}, summary
    after = emu.stats()
    assert after["measurements_received"] == before["measurements_received"]
    assert after["duplicates_received"] == before["duplicates_received"]
    assert emu.measurements() == stored_before
    report = _xcom(deployment, dag_id, run_id, "check_ingest_events")
    assert report["failures"] == 0, report
    # its window (from the run's start) may hold the earlier manual run's resends: exactly those
    assert report["resends"] == _own_resends_since(deployment, report["since"], namespace), report

    # 2. a new run for the same day: logical date = the end of the scheduled run's interval
    day_end = scheduled["data_interval_end"]
    before = emu.stats()
    rerun_id = deployment.trigger(dag_id, logical_date=day_end)
    rerun = deployment.wait_run(dag_id, rerun_id)
    _all_succeeded(rerun, deployment)
    interval = (rerun["data_interval_start"], rerun["data_interval_end"])
    assert tuple(map(_parse, interval)) == (_parse(scheduled["data_interval_start"]), _parse(day_end))
    summary = _xcom(deployment, dag_id, rerun_id, "ingest_api_calls")
    assert (summary["sent"], summary["resumed_from"]) == (12, None), summary
    after = emu.stats()
    assert after["measurements_received"] - before["measurements_received"] == 12
    assert after["duplicates_received"] - before["duplicates_received"] == 12
    assert emu.measurements() == stored_before  # nothing billed twice, nothing changed
    report = _xcom(deployment, dag_id, rerun_id, "check_ingest_events")
    assert (report["failures"], report["resends"]) == (0, 12), report


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


def _pool_run(deployment: Deployment, run_id: str) -> list[dict[str, Any]]:
    return [
        deployment.api(
            "GET",
            f"dags/m3ter_pool_pacing/dagRuns/{run_id}/taskInstances/send/xcomEntries/return_value"
            f"?map_index={index}&deserialize=true&stringify=false",
        )["value"]
        for index in range(4)
    ]


def test_pool_slots_share_the_organizations_limit(deployment: Deployment) -> None:
    """Issue 11, item 7: four tasks of a 4-slot pool, overlapping in time, keep m3ter's 50 requests/s
    per organization together: no 429, and at least 90 % of the limit in their busiest second.

    Config API calls (the organization's 50/s binds there; ingest from one host is bound by its
    per-IP window of about 16.7/s first). The baseline, the same tasks each pacing at the whole
    limit, meets 429s: what pool sharing prevents.
    """
    emu = deployment.emulator
    deployment.api("POST", "pools", {"name": "m3ter_ingest", "slots": 4}, ok=(200, 201, 409))
    deployment.unpause("m3ter_pool_pacing")
    before = emu.stats()
    run_id = deployment.trigger("m3ter_pool_pacing", conf={"pool_slots_total": 4, "requests": 500})
    run = deployment.wait_run("m3ter_pool_pacing", run_id, timeout=300)
    _all_succeeded(run, deployment)
    after = emu.stats()
    tasks = _pool_run(deployment, run_id)
    assert [task["share"] for task in tasks] == [0.25] * 4
    assert [len(task["answered"]) for task in tasks] == [500] * 4
    # the four tasks ran at the same time: their busy spans share at least 80 % of the shortest
    spans = [(task["answered"][0], task["answered"][-1]) for task in tasks]
    common = min(end for _, end in spans) - max(start for start, _ in spans)
    shortest = min(end - start for start, end in spans)
    say(f"pool pacing: spans {[round(e - s, 1) for s, e in spans]} s, common {common:.1f} s")
    assert common >= 0.8 * shortest, spans
    answered = sorted(t for task in tasks for t in task["answered"])
    peak = max(sum(1 for t in answered[i : i + 60] if t < start + 1.0) for i, start in enumerate(answered))
    limited = {k: after["rate_limited"][k] - before["rate_limited"][k] for k in after["rate_limited"]}
    rate = len(answered) / (answered[-1] - answered[0])
    say(f"pool pacing: {len(answered)} requests, {rate:.1f}/s, peak {peak} in a second, 429s {limited}")
    assert limited == {"org": 0, "ingest_ip": 0, "config_ip": 0}
    assert [task["throttled"] for task in tasks] == [0] * 4
    assert peak >= 45, f"peak {peak} requests/s is under 90 % of m3ter's 50/s"

    # the baseline: the same tasks each pacing at the whole limit exceed it together
    # (their clients retry the 429s; whether every request then fits its retry budget is not the point)
    run_id = deployment.trigger("m3ter_pool_pacing", conf={"pool_slots_total": None, "requests": 60})
    state = deployment.wait_run("m3ter_pool_pacing", run_id, timeout=300)["state"]
    baseline = emu.stats()["rate_limited"]["org"] - after["rate_limited"]["org"]
    say(f"pool pacing baseline (no sharing): {baseline} x 429, run {state}")
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
