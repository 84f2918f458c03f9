"""IngestRun against the emulator: exact storage, byte-aware batches, fail/skip, resume, splits."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_m3ter.client.batches import MAX_BATCH_BYTES
from airflow_provider_m3ter.client.checkpoint import MemoryCheckpointStore
from airflow_provider_m3ter.client.encoding import derive_uid
from airflow_provider_m3ter.client.errors import (
    M3terFinalError,
    M3terPayloadTooLargeError,
    M3terTransientError,
)
from airflow_provider_m3ter.client.ingest import IngestRun, number_rows
from airflow_provider_m3ter.client.ingest_progress import InvalidMeasurementsError
from airflow_provider_m3ter.client.measurements import RowError
from tests.ingest.conftest import usage

NOW = datetime(2024, 5, 20, tzinfo=timezone.utc)


def ingest_run(client: Any, **kwargs: Any) -> IngestRun:
    kwargs.setdefault("namespace", "dag.task")
    kwargs.setdefault("now", lambda: NOW)
    return IngestRun(client, **kwargs)


def stored_by_uid(emulator: Any) -> dict[str, dict]:
    return {m["uid"]: m for m in emulator.measurements()}


def test_measurements_are_stored_exactly_with_derived_uids(m3ter_emulator, client_factory) -> None:
    data = usage(2500)
    data[5]["uid"] = "given-uid-5"
    summary = ingest_run(client_factory()).run_measurements(data, "inline")
    stored = m3ter_emulator.measurements()
    expected = [{"uid": m.get("uid") or derive_uid("dag.task", m), **m} for m in data]
    assert len(stored) == 2500
    assert [{k: s[k] for k in e} for s, e in zip(stored, expected, strict=True)] == expected
    stats = m3ter_emulator.stats()
    assert stats["ingest_requests"] == 3
    assert stats["duplicates_received"] == 0
    assert summary.as_dict() | {"duration_seconds": 0, "fingerprint": ""} == {
        "read": 2500,
        "valid": 2500,
        "invalid": 0,
        "identical": 0,
        "deduplicated": 0,
        "sent": 2500,
        "batches": 3,
        "total_batches": 3,
        "bytes": summary.bytes,
        "requests": 3,
        "splits": 0,
        "retries": 0,
        "throttled": 0,
        "duration_seconds": 0,
        "ts_min": "2024-05-01T00:00:00Z",
        "ts_max": "2024-05-01T00:41:39Z",
        "older_than_dedup_window": 0,
        "dead_letter_path": None,
        "resumed_from": None,
        "fingerprint": "",
        "earlier_other_source": None,
        "totals": summary.totals,  # checked against the data in tests/preflight
    }
    assert summary.bytes > 2500 * 100
    # the same content sent again gets the same uids: nothing new is stored
    ingest_run(client_factory()).run_measurements(data)
    assert m3ter_emulator.stats()["measurements_stored"] == 2500


def test_batches_are_cut_by_bytes_and_stay_under_the_limit(m3ter_emulator, client_factory) -> None:
    # ~2.3 kB per record: the byte limit, not the count, decides the batch size
    data = [
        {**m, "metadata": {"note": "n" * 250}, "other": {f"k{j}": "v" * 200 for j in range(10)}}
        for m in usage(900)
    ]
    seen: list[int] = []
    client = client_factory()
    real_submit = client.submit_measurements

    def recording_submit(body: bytes) -> dict:
        seen.append(len(body))
        return real_submit(body)

    client.submit_measurements = recording_submit  # type: ignore[method-assign]
    summary = ingest_run(client).run_measurements(data)
    assert summary.total_batches == len(seen) == 5
    assert all(size < MAX_BATCH_BYTES for size in seen)
    assert max(seen) > MAX_BATCH_BYTES - 3000
    assert m3ter_emulator.stats()["measurements_stored"] == 900
    assert sum(seen) == summary.bytes


def test_invalid_rows_fail_the_run_before_anything_is_sent(m3ter_emulator, client_factory) -> None:
    data: list[Any] = usage(3000)
    data[10]["ts"] = "2024-05-01"
    data[2000]["measure"] = {"requests": float("nan")}
    data[2999] = "not an object"
    with pytest.raises(InvalidMeasurementsError) as caught:
        ingest_run(client_factory(), max_errors_reported=2).run_measurements(data, "usage.jsonl")
    error = caught.value
    assert error.invalid_rows == 3
    assert error.errors == [
        RowError(11, "ts", error.errors[0].reason, "usage.jsonl"),
        RowError(2001, "measure.requests", "must be a finite number, got nan", "usage.jsonl"),
    ]
    assert str(error).startswith(
        "3 invalid rows in usage.jsonl; nothing was sent (showing the first 2 problems):"
    )
    assert "row 11 (usage.jsonl), field 'ts': ts must be an ISO-8601 date-time" in str(error)
    assert m3ter_emulator.stats()["ingest_requests"] == 0


def test_skip_sends_valid_rows_and_writes_exact_dead_letters(
    m3ter_emulator, client_factory, tmp_path
) -> None:
    data: list[Any] = usage(1500)
    data[0]["account"] = " padded"
    data[700] = {"meter": "api_calls", "ts": "2024-05-01T00:00:00Z", "who": {"user": 7}}
    big = {**usage(1)[0], "other": {f"f{j}": "x" * 5000 for j in range(110)}}
    rows = [*number_rows(data), (1501, None, big), (1502, 9, RowError(1502, "", "not valid JSON", "src", 9))]
    dead = tmp_path / "dead" / "letters.jsonl"
    summary = ingest_run(client_factory(), on_invalid="skip", dead_letter_path=dead).run(rows, "src")
    assert (summary.read, summary.valid, summary.invalid, summary.sent) == (1502, 1498, 4, 1498)
    assert summary.dead_letter_path == str(dead)
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(d["row"], d["line"], d["source"]) for d in letters] == [
        (1, None, "src"),
        (701, None, "src"),
        (1501, None, "src"),
        (1502, 9, "src"),
    ]
    assert letters[0]["errors"] == [
        {"field": "account", "reason": "account must not start or end with whitespace"}
    ]
    assert letters[0]["data"] == data[0]
    assert {e["field"] for e in letters[1]["errors"]} == {"account", "who.user"}
    assert "a request body must stay under 512000 bytes" in letters[2]["errors"][0]["reason"]
    assert letters[3] == {
        "row": 1502,
        "line": 9,
        "source": "src",
        "errors": [{"field": "", "reason": "not valid JSON"}],
        "data": None,
    }
    stored = stored_by_uid(m3ter_emulator)
    assert len(stored) == 1498
    assert derive_uid("dag.task", data[1]) in stored
    assert derive_uid("dag.task", data[0]) not in stored


def test_failed_run_checkpoints_and_the_retry_resumes(m3ter_emulator, client_factory) -> None:
    data = usage(10_000)
    store = MemoryCheckpointStore()
    # the 5th ingest request keeps failing until the client's 3 attempts are spent
    m3ter_emulator.set_faults(target="ingest", sequence=["ok"] * 4 + ["500"] * 3)
    with pytest.raises(M3terTransientError):
        ingest_run(client_factory(max_attempts=3), checkpoint=store).run_measurements(data)
    assert store.state is not None
    assert store.state["batches"] == 4
    assert store.state["measurements"] == 4000
    assert m3ter_emulator.stats()["measurements_stored"] == 4000

    summary = ingest_run(client_factory(), checkpoint=store).run_measurements(data)
    assert summary.resumed_from == {"batches": 4, "measurements": 4000}
    assert (summary.sent, summary.batches, summary.total_batches) == (6000, 6, 10)
    stats = m3ter_emulator.stats()
    assert (stats["measurements_stored"], stats["duplicates_received"]) == (10_000, 0)
    assert store.state is not None
    assert store.state["complete"] is True  # kept: a later try sends nothing
    again = ingest_run(client_factory(), checkpoint=store).run_measurements(data)
    assert (again.sent, again.resumed_from) == (0, {"batches": 10, "measurements": 10_000})
    assert m3ter_emulator.stats()["measurements_received"] == 10_000
    assert set(stored_by_uid(m3ter_emulator)) == {derive_uid("dag.task", m) for m in data}


def test_a_checkpoint_of_other_data_is_ignored(m3ter_emulator, client_factory) -> None:
    store = MemoryCheckpointStore({"fingerprint": "something else", "batches": 3, "measurements": 3000})
    summary = ingest_run(client_factory(), checkpoint=store).run_measurements(usage(3000))
    assert summary.resumed_from is None
    assert summary.sent == 3000
    assert m3ter_emulator.stats()["measurements_stored"] == 3000


@pytest.mark.parametrize("max_in_flight", [1, 2, 4, 8])
def test_concurrent_sends_checkpoint_every_acknowledged_batch(
    m3ter_emulator, client_factory, max_in_flight: int
) -> None:
    data = usage(12_000)
    client = client_factory()
    real_submit = client.submit_measurements
    third_batch_first_uid = derive_uid("dag.task", data[2000]).encode()

    def submit(body: bytes) -> dict:
        if third_batch_first_uid in body:
            raise M3terFinalError(400, "POST", "/measurements", "refused for the test")
        return real_submit(body)

    client.submit_measurements = submit  # type: ignore[method-assign]
    store = MemoryCheckpointStore()
    with pytest.raises(M3terFinalError):
        ingest_run(client, checkpoint=store, max_in_flight=max_in_flight).run_measurements(data)
    assert store.state is not None
    # batches after the failed one were acknowledged too: the checkpoint holds each of them
    stored_uids = set(stored_by_uid(m3ter_emulator))
    acked = {index for start, end in store.state["acked"] for index in range(start, end)}
    stored_batches = {i // 1000 for i, m in enumerate(data) if derive_uid("dag.task", m) in stored_uids}
    assert acked == stored_batches
    assert 2 not in acked
    assert {0, 1} <= acked
    assert len(acked) <= 2 + max_in_flight - 1  # nothing is submitted after the failure
    summary = ingest_run(client_factory(), checkpoint=store, max_in_flight=max_in_flight).run_measurements(
        data
    )
    assert summary.resumed_from == {"batches": len(acked), "measurements": 1000 * len(acked)}
    stats = m3ter_emulator.stats()
    assert (stats["measurements_stored"], stats["duplicates_received"]) == (12_000, 0)


def test_a_checkpoint_with_a_gap_resends_only_the_gap(m3ter_emulator, client_factory) -> None:
    data = usage(5000)
    first = ingest_run(client_factory(), checkpoint=(store := MemoryCheckpointStore()))
    first.run_measurements(data)
    state = dict(store.state or {})
    m3ter_emulator.reset()
    # an earlier try acknowledged batches 0, 1 and 3 (batch 2 was in flight when it died)
    state.update(acked=[[0, 2], [3, 4]], batches=3, measurements=3000, complete=False)
    summary = ingest_run(client_factory(), checkpoint=MemoryCheckpointStore(state)).run_measurements(data)
    assert summary.resumed_from == {"batches": 3, "measurements": 3000}
    assert (summary.sent, summary.batches) == (2000, 2)
    assert sorted(stored_by_uid(m3ter_emulator)) == sorted(
        derive_uid("dag.task", m) for m in data[2000:3000] + data[4000:]
    )


def test_413_halves_batches_until_they_fit(m3ter_emulator, client_factory) -> None:
    client = client_factory()
    real_submit = client.submit_measurements

    def gateway(body: bytes) -> dict:
        # a gateway in front of m3ter that refuses bodies over 40 kB (the emulator has no such limit)
        if len(body) > 40_000:
            raise M3terPayloadTooLargeError(413, "POST", "/measurements", "Request Entity Too Large")
        return real_submit(body)

    client.submit_measurements = gateway  # type: ignore[method-assign]
    summary = ingest_run(client).run_measurements(usage(1000))
    stats = m3ter_emulator.stats()
    assert (stats["measurements_stored"], stats["duplicates_received"]) == (1000, 0)
    assert summary.splits == 7
    assert summary.batches == 1
    assert summary.sent == 1000
    assert stats["ingest_requests"] == 8  # eighths of ~16 kB each


def test_a_403_that_halving_does_not_cure_is_final(m3ter_emulator, client_factory) -> None:
    client = client_factory(org_id="00000000-0000-4000-8000-00000000dead")  # unknown org: 403 everywhere
    sizes: list[int] = []
    real_submit = client.submit_measurements

    def counting_submit(body: bytes) -> dict:
        sizes.append(body.count(b'"uid"'))
        return real_submit(body)

    client.submit_measurements = counting_submit  # type: ignore[method-assign]
    with pytest.raises(M3terFinalError) as caught:
        ingest_run(client).run_measurements(usage(1000))
    assert caught.value.status == 403
    # the batch, then a half, a quarter and an eighth: bounded, then the 403 stands
    assert sizes == [1000, 500, 250, 125]
    ingest = [
        sum(counts.values())
        for route, counts in m3ter_emulator.stats()["requests"].items()
        if route.startswith("POST") and "measurements" in route
    ]
    assert 4 <= sum(ingest) <= 8  # plus at most one token refresh per call
    assert m3ter_emulator.stats()["measurements_stored"] == 0


def test_progress_is_logged_and_old_timestamps_are_warned(client_factory, caplog, tmp_path) -> None:
    ticks = iter(range(10_000))
    run = ingest_run(
        client_factory(),
        spill_dir=str(tmp_path),
        progress_interval=1.0,
        clock=lambda: float(next(ticks)),
        rerun=True,
        now=lambda: datetime(2024, 7, 1, tzinfo=timezone.utc),
    )
    with caplog.at_level("INFO", logger="airflow_provider_m3ter.ingest"):
        summary = run.run_measurements(usage(5000))
    assert summary.older_than_dedup_window == 5000
    text = caplog.text
    assert "read 4096 rows, 0 invalid so far" in text
    assert "sent 1000 of 5000 measurements" in text
    assert "ETA" in text
    warning = [r for r in caplog.records if r.levelname == "WARNING"]
    assert (
        "5000 measurements have a ts older than m3ter's 35-day de-duplication window"
        in warning[0].getMessage()
    )
    assert list(tmp_path.iterdir()) == []  # the spill file is gone


def test_a_resumed_run_warns_about_timestamps_beyond_the_dedup_window(
    m3ter_emulator, client_factory, caplog
) -> None:
    store = MemoryCheckpointStore()
    m3ter_emulator.set_faults(target="ingest", sequence=["ok", "500"])
    with pytest.raises(M3terTransientError):
        ingest_run(client_factory(max_attempts=1), checkpoint=store).run_measurements(usage(2000))
    later = ingest_run(
        client_factory(), checkpoint=store, now=lambda: datetime(2024, 8, 1, tzinfo=timezone.utc)
    )
    with caplog.at_level("INFO", logger="airflow_provider_m3ter.ingest"):
        summary = later.run_measurements(usage(2000))
    assert summary.resumed_from == {"batches": 1, "measurements": 1000}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        "2000 measurements have a ts older" in w and "(this is a retry or rerun)" in w for w in warnings
    )
