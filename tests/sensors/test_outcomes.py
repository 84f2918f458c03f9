"""The pure outcome rules of client/jobs.py and client/events.py: job statuses, entity conditions,
ingest-event reports."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_provider_m3ter.client.events import (
    evaluate_ingest_events,
    parse_time,
    summarize_validation_failure,
)
from airflow_provider_m3ter.client.jobs import (
    BILL_JOB,
    DATA_EXPORT_JOB,
    FILE_UPLOAD_JOB,
    CheckResult,
    check_entity,
    entity_problems,
    evaluate_job,
    get_entity_kind,
    get_job_kind,
)


@pytest.mark.parametrize(
    ("kind", "status", "state"),
    [
        (FILE_UPLOAD_JOB, "notUploaded", "pending"),
        (FILE_UPLOAD_JOB, "running", "pending"),
        (FILE_UPLOAD_JOB, "succeeded", "succeeded"),
        (FILE_UPLOAD_JOB, "failed", "failed"),
        (BILL_JOB, "PENDING", "pending"),
        (BILL_JOB, "INITIALIZING", "pending"),
        (BILL_JOB, "RUNNING", "pending"),
        (BILL_JOB, "COMPLETE", "succeeded"),
        (BILL_JOB, "CANCELLED", "failed"),
        (DATA_EXPORT_JOB, "PENDING", "pending"),
        (DATA_EXPORT_JOB, "SUCCEEDED", "succeeded"),
        (DATA_EXPORT_JOB, "FAILED", "failed"),
        (DATA_EXPORT_JOB, "SOMETHING_NEW", "pending"),
        (BILL_JOB, "", "pending"),
    ],
)
def test_job_status_decides_the_state(kind, status, state):
    result = evaluate_job(kind, {"id": "j1", "status": status})
    assert result.state == state
    assert result.detail["status"] == (status or None)
    assert result.detail["kind"] == kind.name
    assert "j1" in result.message


def test_failed_rows_count_only_when_asked():
    job = {"id": "j", "status": "succeeded", "totalRows": 10, "processedRows": 10, "failedRows": 3}
    lenient = evaluate_job("fileupload", job)
    strict = evaluate_job("fileupload", job, fail_on_failed_rows=True)
    assert lenient.state == "succeeded"
    assert "3 of 10 rows failed" in lenient.message
    assert strict.state == "failed"
    assert "3 of 10 rows failed" in strict.message
    assert strict.detail["failedRows"] == 3
    clean = evaluate_job("fileupload", {**job, "failedRows": 0}, fail_on_failed_rows=True)
    assert clean.state == "succeeded"


def test_kind_lookup_and_id_validation_name_the_problem():
    with pytest.raises(ValueError, match="unknown m3ter job kind 'statement'"):
        get_job_kind("statement")
    with pytest.raises(ValueError, match="unknown m3ter entity kind 'pricing'"):
        get_entity_kind("pricing")
    with pytest.raises(ValueError, match="bill job id must be"):
        BILL_JOB.url_path("../meters")
    job_id = "0f0e0d0c-0b0a-4908-8706-050403020100"
    assert BILL_JOB.url_path(job_id) == f"billjobs/{job_id}"


def test_check_result_round_trips_and_rejects_unknown_states():
    result = CheckResult("failed", "bad", {"id": "x", "n": [1, 2]})
    assert CheckResult.from_dict(result.to_dict()) == result
    assert result.done
    assert not CheckResult("pending", "").done
    with pytest.raises(ValueError, match="state must be one of"):
        CheckResult("done", "")  # type: ignore[arg-type]


METER = {
    "id": "m-1",
    "code": "api_calls",
    "version": 3,
    "dataFields": [{"category": "MEASURE", "code": "requests", "unit": "1"}],
    "derivedFields": [{"category": "MEASURE", "code": "cost_units", "calculation": "requests * 2"}],
    "customFields": {"region": "eu", "tier": 2},
}


def test_meter_conditions_read_data_and_derived_fields():
    assert entity_problems("meter", METER, required_fields=["measure.requests", "cost_units"]) == []
    problems = entity_problems("meter", METER, required_fields=["who.user", "measure.missing"])
    assert problems == ["no data or derived field 'who.user'", "no data or derived field 'measure.missing'"]
    # the category must match when given
    assert entity_problems("meter", METER, required_fields=["cost.requests"]) != []


def test_version_and_where_conditions():
    assert entity_problems("meter", METER, min_version=3, where={"customFields.region": "eu"}) == []
    problems = entity_problems(
        "meter", METER, min_version=4, where={"customFields.tier": 3, "customFields.x": 1}
    )
    assert problems == [
        "version is 3, waiting for at least 4",
        "field 'customFields.tier' is 2, want 3",
        "field 'customFields.x' is missing (want 1)",
    ]


def test_non_meter_required_fields_are_attribute_paths():
    account = {"code": "acme", "customFields": {"crm": "123"}, "address": None}
    assert entity_problems("account", account, required_fields=["customFields.crm"]) == []
    assert entity_problems("account", account, required_fields=["address"]) == ["field 'address' is missing"]


def test_validation_failure_summary_finds_fields_nested_or_flat():
    flat = {
        "id": "e1",
        "eventTime": "2024-05-01T00:00:00Z",
        "m3terEvent": {
            "failureType": "MissingField",
            "message": "measure.x is missing",
            "uid": "u1",
            "meter": "m",
        },
    }
    nested = {
        "id": "e2",
        "m3terEvent": {
            "eventData": {"errorType": "UndefinedMeter", "measurement": {"uid": "u2", "account": "a"}}
        },
    }
    assert summarize_validation_failure(flat) == {
        "id": "e1",
        "eventTime": "2024-05-01T00:00:00Z",
        "failureType": "MissingField",
        "uid": "u1",
        "meter": "m",
        "account": None,
        "message": "measure.x is missing",
    }
    second = summarize_validation_failure(nested)
    assert (second["failureType"], second["uid"], second["account"]) == ("UndefinedMeter", "u2", "a")
    assert summarize_validation_failure({"m3terEvent": None})["failureType"] == "Unknown"


def _failure(kind: str, uid: str) -> dict:
    return {"failureType": kind, "uid": uid, "meter": "m", "account": "a", "message": f"{kind} problem"}


def test_ingest_events_fail_at_once_but_warn_only_after_settling():
    failures = [
        _failure("MissingField", "u1"),
        _failure("UndefinedMeter", "u2"),
        _failure("MissingField", "u3"),
    ]
    early = evaluate_ingest_events(failures, now=100, settle_until=200, on_failure="fail", max_examples=2)
    assert early.state == "failed"
    assert early.detail["by_type"] == {"MissingField": 2, "UndefinedMeter": 1}
    assert [e["uid"] for e in early.detail["examples"]] == ["u1", "u2"]
    assert "3 measurement(s) failed" in early.message
    assert "MissingField: 2" in early.message
    assert "MissingField (uid u1, meter m, account a): MissingField problem" in early.message
    warn_early = evaluate_ingest_events(failures, now=100, settle_until=200, on_failure="warn")
    assert warn_early.state == "pending"
    warn_late = evaluate_ingest_events(failures, now=200, settle_until=200, on_failure="warn")
    assert warn_late.state == "succeeded"
    assert warn_late.detail["failures"] == 3
    assert warn_late.detail["settled"] is True


def test_no_failures_succeed_only_after_settling():
    assert evaluate_ingest_events([], now=1, settle_until=2).state == "pending"
    done = evaluate_ingest_events([], now=2, settle_until=2, since=0.0)
    assert done.state == "succeeded"
    assert done.detail["failures"] == 0
    assert done.detail["since"] == "1970-01-01T00:00:00+00:00"
    with pytest.raises(ValueError, match="on_failure"):
        evaluate_ingest_events([], now=0, settle_until=0, on_failure="ignore")  # type: ignore[arg-type]


def test_parse_time_accepts_the_usual_spellings():
    moment = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert parse_time(moment) == moment.timestamp()
    assert parse_time("2024-05-01T12:00:00Z") == moment.timestamp()
    assert parse_time("2024-05-01T14:00:00+02:00") == moment.timestamp()
    assert parse_time(datetime(2024, 5, 1, 12)) == moment.timestamp()
    assert parse_time(5) == 5.0
    with pytest.raises(ValueError, match="not an ISO-8601"):
        parse_time("yesterday")
    with pytest.raises(ValueError, match="expected a datetime"):
        parse_time(None)


def test_entity_codes_may_hold_any_printable_text_but_not_padding():
    class NoCalls:
        def paginate(self, *args, **kwargs):
            raise AssertionError("a bad code must be refused before any call")

    for bad in ("", " padded", "tab\there", None):
        with pytest.raises(ValueError, match="meter code must be 1-200 printable characters"):
            check_entity(NoCalls(), "meter", bad)  # type: ignore[arg-type]
