"""Issue 11, item 3: a rerun's de-duplicated resends are not failures; a real uid conflict still is.

Real HTTP against the emulator: the measurements go through the ingest client with derived uids
(as the ingest operator sends them), m3ter's asynchronous validation reports every resend as
``DuplicateUid``, and the events check decides.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_m3ter.client.core import M3terClient
from airflow_provider_m3ter.client.encoding import derive_uid
from airflow_provider_m3ter.client.events import check_ingest_events
from airflow_provider_m3ter.client.ingest import IngestRun
from airflow_provider_m3ter.client.settings import ClientSettings

NAMESPACE = "example_m3ter_ingest_events.ingest_api_calls"


def _client(emulator) -> M3terClient:
    return M3terClient(
        ClientSettings(
            org_id=emulator.org_id,
            access_key_id=emulator.access_key_id,
            api_secret=emulator.api_secret,
            config_url=emulator.config_url,
            ingest_url=emulator.ingest_url,
        )
    )


def _day(day: datetime) -> list[dict]:
    return [
        {
            "meter": "api_calls",
            "account": account,
            "ts": (day + timedelta(hours=6 * step)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "measure": {"requests": 100 + step, "errors": index},
        }
        for step in range(4)
        for index, account in enumerate(("acme", "globex", "initech"))
    ]


def _load(client: M3terClient, rows: list[dict]) -> None:
    IngestRun(client, namespace=NAMESPACE).run_measurements([dict(row) for row in rows])


@pytest.fixture
def loaded_day(m3ter_emulator):
    with _client(m3ter_emulator) as client:
        client.request(
            "POST",
            "meters",
            json={
                "code": "api_calls",
                "name": "API calls",
                "dataFields": [
                    {"category": "MEASURE", "code": code, "name": code, "unit": "1"}
                    for code in ("requests", "errors")
                ],
                "derivedFields": [],
            },
        )
        rows = _day(datetime(2024, 5, 1, 1, tzinfo=timezone.utc))
        _load(client, rows)
        m3ter_emulator.validate_now()
        yield m3ter_emulator, client, rows


def _since_now() -> datetime:
    time.sleep(0.02)
    since = datetime.now(timezone.utc)
    time.sleep(0.02)
    return since


def test_a_rerun_of_a_loaded_day_passes_the_check(loaded_day) -> None:
    emulator, client, rows = loaded_day
    since = _since_now()
    _load(client, rows)  # the rerun: the same rows, so the same derived uids
    emulator.validate_now()
    assert emulator.stats()["duplicates_received"] == 12
    # the old rule: every DuplicateUid counts (what failed the rerun with "DuplicateUid: 12")
    old = check_ingest_events(client, since=since, settle_until=0)
    assert old.state == "failed"
    assert old.detail["by_type"] == {"DuplicateUid": 12}
    result = check_ingest_events(client, since=since, settle_until=0, uid_namespaces=[NAMESPACE])
    assert result.state == "succeeded", result.message
    assert result.detail["failures"] == 0
    assert result.detail["resends"] == 12
    assert "12 resent measurement(s)" in result.message
    assert len(emulator.measurements()) == 12  # stored once


def test_the_same_uid_with_other_content_still_fails(loaded_day) -> None:
    emulator, client, rows = loaded_day
    since = _since_now()
    original = rows[0]
    uid = derive_uid(NAMESPACE, original)
    # someone sends a different measurement under an existing uid: a real conflict
    client.submit_measurements([{**original, "uid": uid, "measure": {"requests": 999, "errors": 0}}])
    emulator.validate_now()
    result = check_ingest_events(client, since=since, settle_until=0, uid_namespaces=[NAMESPACE])
    assert result.state == "failed"
    assert result.detail["by_type"] == {"DuplicateUid": 1}
    assert result.detail["examples"][0]["uid"] == uid
    assert result.detail["resends"] == 0


def test_a_resend_in_another_namespace_is_not_taken_for_ours(loaded_day) -> None:
    emulator, client, rows = loaded_day
    since = _since_now()
    _load(client, rows)
    emulator.validate_now()
    result = check_ingest_events(client, since=since, settle_until=0, uid_namespaces=["other.task"])
    assert result.state == "failed"
    assert result.detail["by_type"] == {"DuplicateUid": 12}


def test_an_explicit_uid_resent_is_a_failure_it_cannot_prove_otherwise(loaded_day) -> None:
    emulator, client, _rows = loaded_day
    row = {"uid": "my-own-uid-1", "meter": "api_calls", "account": "acme", "ts": "2024-05-01T01:00:00Z"}
    row["measure"] = {"requests": 1, "errors": 0}
    client.submit_measurements([row])
    since = _since_now()
    client.submit_measurements([row])
    emulator.validate_now()
    result = check_ingest_events(client, since=since, settle_until=0, uid_namespaces=[NAMESPACE])
    assert result.state == "failed"
    assert result.detail["by_type"] == {"DuplicateUid": 1}


# -- another load in the same organization (the deployment test's failure: a manual run of
# -- example_m3ter_ingest_events failed with "DuplicateUid: 144", example_m3ter_ingest's resends) --

OTHER = "example_m3ter_ingest.ingest_api_usage"


def _other_load(client: M3terClient) -> list[dict]:
    """Another DAG's rows: the same meter and accounts, hourly, in its own uid namespace."""
    rows = [
        {**row, "ts": row["ts"].replace(":00:00Z", ":30:00Z"), "measure": {"requests": 7, "errors": 0}}
        for row in _day(datetime(2024, 5, 1, 1, tzinfo=timezone.utc))
    ]
    IngestRun(client, namespace=OTHER).run_measurements([dict(row) for row in rows])
    return rows


def test_a_rerun_next_to_another_loads_rerun_passes_with_other_loads_ignored(loaded_day) -> None:
    emulator, client, rows = loaded_day
    other_rows = _other_load(client)
    emulator.validate_now()
    since = _since_now()
    _load(client, rows)  # our rerun
    IngestRun(client, namespace=OTHER).run_measurements([dict(row) for row in other_rows])  # theirs
    emulator.validate_now()
    # what failed the deployment: the other DAG's 12 resends are not provably ours
    counted = check_ingest_events(client, since=since, settle_until=0, uid_namespaces=[NAMESPACE])
    assert counted.state == "failed"
    assert counted.detail["by_type"] == {"DuplicateUid": 12}
    assert counted.detail["resends"] == 12
    result = check_ingest_events(
        client, since=since, settle_until=0, uid_namespaces=[NAMESPACE], other_loads="ignore"
    )
    assert result.state == "succeeded", result.message
    assert (result.detail["failures"], result.detail["resends"], result.detail["other_loads"]) == (0, 12, 12)
    assert "12 event(s) of other loads' measurements left out" in result.message
    assert len(emulator.measurements()) == 24  # each stored once


def test_other_loads_ignored_still_fails_on_our_own_rejected_measurement(loaded_day) -> None:
    emulator, client, rows = loaded_day
    _other_load(client)
    since = _since_now()
    # ours, derived in our namespace, but the meter has no field "latency": UndefinedField
    bad = {**rows[0], "ts": "2024-05-02T01:00:00Z", "measure": {"requests": 1, "errors": 0, "latency": 3}}
    _load(client, [bad])
    _load(client, rows)
    emulator.validate_now()
    result = check_ingest_events(
        client, since=since, settle_until=0, uid_namespaces=[NAMESPACE], other_loads="ignore"
    )
    assert result.state == "failed"
    assert result.detail["by_type"] == {"UndefinedField": 1}
    assert result.detail["examples"][0]["uid"] == derive_uid(NAMESPACE, bad)
    assert result.detail["resends"] == 12


def test_other_loads_ignored_with_uids_a_conflict_of_our_own_uids_fails(loaded_day) -> None:
    """A load that sends its own uids lists them: a resend with other content is a real conflict."""
    emulator, client, _rows = loaded_day
    row = {"uid": "my-own-uid-2", "meter": "api_calls", "account": "acme", "ts": "2024-05-01T02:00:00Z"}
    row["measure"] = {"requests": 1, "errors": 0}
    client.submit_measurements([row])
    emulator.validate_now()
    since = _since_now()
    client.submit_measurements([{**row, "measure": {"requests": 2, "errors": 0}}])  # changed content
    emulator.validate_now()
    result = check_ingest_events(
        client,
        since=since,
        settle_until=0,
        uids=["my-own-uid-2"],
        uid_namespaces=[NAMESPACE],
        other_loads="ignore",
    )
    assert result.state == "failed"
    assert result.detail["by_type"] == {"DuplicateUid": 1}
    assert result.detail["other_loads"] == 0


def test_other_loads_ignored_never_drops_an_event_without_the_measurement(loaded_day) -> None:
    from airflow_provider_m3ter.client.events import is_other_load, summarize_validation_failure

    event = {"m3terEvent": {"failureType": "DuplicateUid", "uid": derive_uid(OTHER, {"a": 1})}}
    assert not is_other_load(event, summarize_validation_failure(event), [NAMESPACE])
    with_measurement = {"m3terEvent": {**event["m3terEvent"], "measurement": {"a": 1}}}
    summary = summarize_validation_failure(with_measurement)
    assert is_other_load(with_measurement, summary, [NAMESPACE])
    assert not is_other_load(with_measurement, summary, [NAMESPACE, OTHER])
    assert not is_other_load(with_measurement, summary, [])
    # a measurement carrying another uid than the event's proves nothing
    mixed = {"m3terEvent": {**event["m3terEvent"], "measurement": {"a": 1, "uid": "x"}}}
    assert not is_other_load(mixed, summarize_validation_failure(mixed), [NAMESPACE])


def test_other_loads_ignore_needs_something_to_tell_loads_apart(loaded_day) -> None:
    _emulator, client, _rows = loaded_day
    with pytest.raises(ValueError, match="needs uid_namespaces"):
        check_ingest_events(client, since=_since_now(), settle_until=0, other_loads="ignore")
    with pytest.raises(ValueError, match="'fail' or 'ignore'"):
        check_ingest_events(client, since=_since_now(), settle_until=0, other_loads="skip")  # type: ignore[arg-type]
