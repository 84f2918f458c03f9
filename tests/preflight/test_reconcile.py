"""Reconciliation: the run's totals against m3ter's usage query, clean and with tampered storage."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_m3ter.client.ingest import IngestRun
from airflow_provider_m3ter.client.preflight import Preflight
from airflow_provider_m3ter.client.reconcile import (
    ReconciliationError,
    check_reconciliation,
    compare_totals,
    format_table,
)
from tests.preflight.conftest import good, setup_config

NOW = datetime(2024, 5, 20, tzinfo=timezone.utc)
START, END = "2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z"
QUERY = "POST /organizations/{orgId}/usage/query"


def ingest(client: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    run = IngestRun(client, namespace="dag.task", now=lambda: NOW, preflight=Preflight(client))
    return run.run_measurements(rows).as_dict()


def rows() -> list[dict[str, Any]]:
    return [good(i, account="acme" if i % 3 else "beta", uid=f"r{i}") for i in range(30)]


def check(client: Any, summary: dict[str, Any], **kwargs: Any):
    kwargs.setdefault("settle_until", 0.0)
    return check_reconciliation(client, summary, START, END, sleep=lambda _s: None, **kwargs)


def test_clean_run_reconciles(api, m3ter_emulator, client_factory):
    setup_config(api)
    client = client_factory()
    summary = ingest(client, rows())
    m3ter_emulator.validate_now()
    result = check(client, summary)
    assert result.state == "succeeded", result.message
    assert result.detail["compared"] == 4  # 2 accounts x 2 measure fields
    assert result.detail["different"] == 0
    assert result.detail["queries"] == 1
    table = format_table(result.detail["table"])
    assert "api_calls  acme     measure.requests" in table
    assert m3ter_emulator.stats()["requests"][QUERY] == {"200": 1}


def test_dropped_and_altered_measurements_are_named(api, m3ter_emulator, client_factory):
    setup_config(api)
    client = client_factory()
    summary = ingest(client, rows())
    m3ter_emulator.validate_now()
    assert m3ter_emulator.tamper({"uid": "r4"}, drop=True) == 1  # acme: requests 4, errors 0
    assert m3ter_emulator.tamper({"uid": "r3"}, set={"measure": {"requests": 103, "errors": 1}}) == 1  # beta
    result = check(client, summary)
    assert result.state == "failed"
    message = result.message
    assert "differs from what the run sent in 3 of 4" in message
    assert (
        "api_calls/acme/measure.requests: sent sum 300 over 20, m3ter has 296 over 19 (difference -4, -1)"
        in message
    )
    assert (
        "api_calls/acme/measure.errors: sent sum 10 over 20, m3ter has 10 over 19 (difference +0, -1)"
        in message
    )
    assert (
        "api_calls/beta/measure.requests: sent sum 135 over 10, m3ter has 235 over 10 (difference +100, +0)"
        in message
    )
    assert "beta/measure.errors" not in message  # unchanged (1 -> 1)


def test_waits_while_m3ter_catches_up(api, m3ter_emulator_factory, client_factory):
    emulator = m3ter_emulator_factory(validation_delay=30)
    from tests.emulator.api import Api
    from tests.ingest.conftest import make_client

    setup_config(Api(emulator))
    client = make_client(emulator)
    try:
        summary = ingest(client, rows())
        pending = check(client, summary, settle_until=time.time() + 60)
        assert pending.state == "pending"
        assert "4 of 4 still differ" in pending.message
        emulator.validate_now()
        assert check(client, summary, settle_until=time.time() + 60).state == "succeeded"
    finally:
        client.close()


def test_other_writers(api, m3ter_emulator, client_factory):
    setup_config(api)
    client = client_factory()
    summary = ingest(client, rows())
    ingest(client, [good(99, uid="other-writer")])  # another writer, same meter/account/period
    m3ter_emulator.validate_now()
    assert check(client, summary).state == "failed"
    assert check(client, summary, allow_other_writers=True).state == "succeeded"


def test_refuses_what_it_cannot_prove(api, m3ter_emulator, client_factory):
    setup_config(api)
    client = client_factory()
    summary = ingest(client, [good(1), good(2, ts="2024-05-03T00:00:00Z")])
    with pytest.raises(ReconciliationError, match="outside the period"):
        check(client, summary)
    with pytest.raises(ReconciliationError, match="no totals"):
        check(client, {**summary, "totals": None})


def test_compare_tolerates_float_order_but_not_real_differences():
    sent = {"m": {"a": {"measure.x": [0.1 + 0.2 + 0.3, 3]}}}
    assert compare_totals(sent, {"m": {"a": {"measure.x": [0.3 + 0.2 + 0.1, 3]}}})[0]["ok"]
    assert not compare_totals(sent, {"m": {"a": {"measure.x": [0.6000001, 3]}}})[0]["ok"]
    assert not compare_totals(sent, {})[0]["ok"]


def test_trigger_carries_only_json_and_an_absolute_deadline():
    import json as _json

    from airflow_provider_m3ter.triggers.reconcile import M3terReconciliationTrigger

    summary = {
        "totals": {"m": {"a": {"measurements": 1, "measure.x": [1, 1]}}},
        "ts_min": START,
        "ts_max": START,
    }
    trigger = M3terReconciliationTrigger(
        summary=summary, start=START, end=END, settle_until=123.0, m3ter_conn_id="c", deadline=456.0
    )
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_m3ter.triggers.reconcile.M3terReconciliationTrigger"
    assert _json.loads(_json.dumps(kwargs)) == kwargs
    again = M3terReconciliationTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)
    assert kwargs["deadline"] == 456.0


def test_operator_and_sensor_refuse_bad_arguments():
    from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator
    from airflow_provider_m3ter.sensors.reconcile import M3terReconciliationSensor

    with pytest.raises(ValueError, match="unknown_accounts"):
        M3terIngestMeasurementsOperator(task_id="t", measurements=[], unknown_accounts="maybe")
    with pytest.raises(ValueError, match="settle_seconds"):
        M3terReconciliationSensor(task_id="r", summary={}, settle_seconds=-1)
    with pytest.raises(ValueError, match="Data Explorer allows 1 request/s"):
        M3terReconciliationSensor(task_id="r", summary={}, poke_interval=0.5)
