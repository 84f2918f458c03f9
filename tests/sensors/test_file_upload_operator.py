"""M3terFileUploadOperator against the emulator: upload, wait, defer, resume and refuse bad input.

These call ``execute`` directly (no Airflow process) with a context holding an in-memory stand-in
for ``task_state_store`` (same ``get``/``set`` calls); the real store and a real worker crash are
exercised in ``test_upload_crash.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import pytest

from airflow_provider_m3ter.client.encoding import derive_uid
from airflow_provider_m3ter.compat import AirflowException, AirflowFailException, TaskDeferred
from airflow_provider_m3ter.exceptions import M3terCheckFailure
from airflow_provider_m3ter.operators.file_upload import UPLOAD_STATE_KEY, M3terFileUploadOperator
from airflow_provider_m3ter.triggers.jobs import M3terFileUploadJobTrigger

URL_ROUTE = "POST /organizations/{orgId}/fileuploads/measurements/generateUploadUrl"
PUT_ROUTE = "PUT /_upload/{token}"


class MemoryStore:
    """The ``get``/``set`` surface of ``context["task_state_store"]``, kept in memory."""

    def __init__(self) -> None:
        self.values: dict = {}
        self.history: list = []

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value, *, retention=None):
        self.values[key] = json.loads(json.dumps(value))  # only JSON survives, as in the real store
        self.history.append(value["phase"])


class TaskInstance:
    map_index = -1

    def __init__(self) -> None:
        self.xcom: dict = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value


def _context(store=None) -> dict:
    return {"task_state_store": store if store is not None else MemoryStore(), "ti": TaskInstance()}


def _rows(n: int, meter: str = "api_calls") -> list[dict]:
    return [
        {
            "meter": meter,
            "account": f"acct-{i % 3}",
            "ts": f"2024-05-01T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
            "measure": {"requests": i},
        }
        for i in range(n)
    ]


@pytest.fixture
def emulator(m3ter_emulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", m3ter_emulator.connection_json())
    m3ter_emulator.set_job_mode("time", 0.2)
    return m3ter_emulator


def _operator(path, **kwargs) -> M3terFileUploadOperator:
    settings = {"uid_namespace": "ns", "poll_interval": 0.1, "deferrable": False, **kwargs}
    operator = M3terFileUploadOperator(task_id="upload", source_path=str(path), **settings)
    operator.sleep = lambda seconds: time.sleep(min(seconds, 0.1))
    return operator


def _count(emulator, route: str, status: str = "200") -> int:
    return emulator.stats()["requests"].get(route, {}).get(status, 0)


def test_upload_waits_for_the_job_and_records_both_phases(emulator, tmp_path):
    path = tmp_path / "may.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(json.dumps(row) for row in _rows(1500)))
    store = MemoryStore()
    context = _context(store)
    summary = _operator(path).execute(context)
    assert summary["status"] == "succeeded"
    assert (summary["measurements"], summary["totalRows"], summary["failedRows"]) == (1500, 1500, 0)
    assert summary["resumed"] is False
    assert store.history == ["url_issued", "uploaded"]
    assert store.values[UPLOAD_STATE_KEY]["job_id"] == summary["job_id"]
    assert context["ti"].xcom["m3ter_console_url"].endswith(f"/data/file-uploads/{summary['job_id']}")
    stored = emulator.measurements()
    assert len(stored) == 1500
    assert stored[0]["uid"] == derive_uid("ns", _rows(1)[0])


def test_csv_with_a_mapping_like_the_ingest_operator(emulator, tmp_path):
    path = tmp_path / "usage.csv"
    path.write_text("customer,hour,calls\nacme,2024-05-01T00:00:00Z,3\nglobex,2024-05-01T01:00:00Z,4\n")
    operator = _operator(
        path, mapping={"customer": "account", "hour": "ts", "calls": "measure.requests"}, meter="api_calls"
    )
    summary = operator.execute(_context())
    assert summary["measurements"] == 2
    assert {(m["account"], m["measure"]["requests"]) for m in emulator.measurements()} == {
        ("acme", 3),
        ("globex", 4),
    }


def test_deferrable_upload_defers_to_the_file_upload_trigger(emulator, tmp_path, monkeypatch):
    emulator.set_job_mode("manual")
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in _rows(10)))
    operator = _operator(path, deferrable=True)
    context = _context()
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, M3terFileUploadJobTrigger)
    summary = deferred.value.kwargs["summary"]
    assert trigger.job_id == summary["job_id"]
    json.dumps(trigger.serialize()[1])
    json.dumps(deferred.value.kwargs)
    emulator.advance_job(summary["job_id"], status="succeeded")

    async def first_event():
        return await anext(trigger.run())

    event = asyncio.run(first_event()).payload
    result = operator.execute_complete(context, event, summary=summary)
    assert (result["status"], result["measurements"], result["job_id"]) == (
        "succeeded",
        10,
        summary["job_id"],
    )


@pytest.mark.parametrize("store", ["none", "empty"])
def test_a_deferred_upload_resumed_with_the_event_alone_returns_the_same_xcom(emulator, tmp_path, store):
    """``airflow dags test`` (every Airflow 3 line) resumes with the trigger's event only, and Airflow
    < 3.3 has no task_state_store: the XCom must not depend on either."""
    emulator.set_job_mode("manual")
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in _rows(10)))
    operator = _operator(path, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(_context())
    summary = deferred.value.kwargs["summary"]
    emulator.advance_job(summary["job_id"], status="succeeded")

    async def first_event():
        return await anext(deferred.value.trigger.run())

    # what the triggerer stores and hands back is JSON
    event = json.loads(json.dumps(asyncio.run(first_event()).payload))
    context = _context(MemoryStore() if store == "empty" else None)
    if store == "none":
        context["task_state_store"] = None
    alone = operator.execute_complete(context, event)
    with_kwargs = operator.execute_complete(_context(), event, summary=summary)
    assert alone == with_kwargs
    assert (alone["status"], alone["measurements"], alone["job_id"], alone["resumed"]) == (
        "succeeded",
        10,
        summary["job_id"],
        False,
    )
    assert {"file_name", "rejected", "content_length", "totalRows", "failedRows"} <= alone.keys()


def test_invalid_rows_fail_before_anything_is_sent(emulator, tmp_path):
    path = tmp_path / "bad.jsonl"
    rows = _rows(3)
    rows[1]["ts"] = "yesterday"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    with pytest.raises(
        AirflowFailException,
        match=r"1 invalid row\(s\), nothing uploaded: row 2 \(.*bad.jsonl, line 2\), field 'ts'",
    ):
        _operator(path).execute(_context())
    assert _count(emulator, URL_ROUTE) == 0
    summary = _operator(path, on_invalid="skip").execute(_context())
    assert (summary["measurements"], summary["rejected"]) == (2, 1)


def test_a_missing_file_is_a_clear_failure(emulator, tmp_path):
    with pytest.raises(AirflowFailException, match=r"source file not found: .*nowhere\.jsonl"):
        _operator(tmp_path / "nowhere.jsonl").execute(_context())


def test_a_transient_put_failure_starts_over_with_a_fresh_url(emulator, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in _rows(5)))
    emulator.set_faults(sequence=["502"], path_regex=r"^/_upload/")
    store = MemoryStore()
    summary = _operator(path).execute(_context(store))
    assert summary["status"] == "succeeded"
    assert _count(emulator, URL_ROUTE) == 2
    assert _count(emulator, PUT_ROUTE) == 1
    assert store.history == ["url_issued", "url_issued", "uploaded"]


def test_a_retry_reconnects_to_a_job_that_received_its_file(emulator, tmp_path):
    emulator.set_job_mode("manual")
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in _rows(5)))
    store = MemoryStore()
    with pytest.raises(AirflowException, match="did not finish within"):
        _operator(path, wait_timeout=0.3).execute(_context(store))
    job_id = store.values[UPLOAD_STATE_KEY]["job_id"]
    emulator.advance_job(job_id, status="succeeded")
    summary = _operator(path).execute(_context(store))
    assert (summary["job_id"], summary["resumed"], summary["measurements"]) == (job_id, True, 5)
    assert (_count(emulator, URL_ROUTE), _count(emulator, PUT_ROUTE)) == (1, 1)


def test_a_retry_uploads_again_when_the_file_never_arrived(emulator, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in _rows(5)))
    emulator.set_faults(rate=1.0, kinds=["500"], path_regex=r"^/_upload/")
    store = MemoryStore()
    with pytest.raises(AirflowException):
        _operator(path, upload_attempts=1).execute(_context(store))
    abandoned = store.values[UPLOAD_STATE_KEY]["job_id"]
    assert store.values[UPLOAD_STATE_KEY]["phase"] == "url_issued"
    emulator.clear_faults()
    summary = _operator(path).execute(_context(store))
    assert summary["job_id"] != abandoned
    assert summary["resumed"] is False
    assert emulator.job(abandoned)["status"] == "notUploaded"


def test_failed_rows_fail_the_task_and_a_retry_uploads_again(emulator, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in _rows(4)))
    emulator.set_job_outcome("fileupload", "failed")
    store = MemoryStore()
    with pytest.raises(M3terCheckFailure, match="ended with status failed"):
        _operator(path).execute(_context(store))
    first = store.values[UPLOAD_STATE_KEY]["job_id"]
    emulator.set_job_outcome("fileupload", "succeeded")
    summary = _operator(path).execute(_context(store))
    assert summary["job_id"] != first
    assert summary["status"] == "succeeded"


def test_no_task_state_store_still_uploads(emulator, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_text(json.dumps(_rows(1)[0]))
    context = _context()
    context["task_state_store"] = None
    assert _operator(path).execute(context)["status"] == "succeeded"


def test_constructor_rejects_bad_arguments_without_io():
    with pytest.raises(ValueError, match="on_invalid must be 'fail' or 'skip'"):
        M3terFileUploadOperator(task_id="t", source_path="x", on_invalid="ignore")
    with pytest.raises(ValueError, match="must be positive"):
        M3terFileUploadOperator(task_id="t", source_path="x", poll_interval=0)
