"""Issue 11 items without Airflow processes: manual-run templates (2), Console link targets (6),
pool shares (7), and the example DAGs' choice of window for a run without a data interval."""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_m3ter.client import ClientSettings
from airflow_provider_m3ter.compat import AirflowFailException
from airflow_provider_m3ter.hooks.pool_pacing import pool_share, shared_settings
from airflow_provider_m3ter.links import console_base_for
from airflow_provider_m3ter.manual_runs import interval_variables_used
from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator

REPO = Path(__file__).resolve().parents[2]
ORG = "11111111-2222-4333-8444-555555555555"


def _operator(**kwargs) -> M3terIngestMeasurementsOperator:
    return M3terIngestMeasurementsOperator(task_id="ingest", **kwargs)


def test_a_template_using_the_interval_fails_clearly_in_a_run_without_one() -> None:
    op = _operator(
        sql="SELECT * FROM usage WHERE ts >= ? AND ts < ?",
        sql_conn_id="db",
        sql_parameters=["{{ data_interval_start }}", "{{ data_interval_end.strftime('%Y') }}"],
    )
    manual_run = {"dag_run": SimpleNamespace(run_after=datetime.now(timezone.utc)), "params": {}}
    with pytest.raises(AirflowFailException) as info:
        op.render_template_fields(manual_run)
    message = str(info.value)
    assert "no data interval" in message
    assert "data_interval_end, data_interval_start" in message
    assert "--logical-date" in message
    assert "logical_date" in message


def test_the_same_templates_render_in_a_run_with_an_interval() -> None:
    op = _operator(
        sql="SELECT 1", sql_conn_id="db", sql_parameters=["{{ data_interval_start.strftime('%Y-%m-%d') }}"]
    )
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    keys = ("data_interval_end", "logical_date", "ds", "ds_nodash", "ts", "ts_nodash", "ts_nodash_with_tz")
    context = {"data_interval_start": start, **dict.fromkeys(keys, "x")}
    op.render_template_fields(context)
    assert op.sql_parameters == ["2024-05-01"]


def test_templates_without_interval_variables_render_in_any_run() -> None:
    op = _operator(source_path="/data/{{ params.day }}.jsonl")
    op.render_template_fields({"params": {"day": "2024-05-01"}})
    assert op.source_path == "/data/2024-05-01.jsonl"


def test_interval_variables_are_found_only_inside_jinja() -> None:
    assert interval_variables_used(
        ["ds and ts outside", {"k": ["{{ ds_nodash }}"]}, "{% if ts %}x{% endif %}"]
    ) == {
        "ds_nodash",
        "ts",
    }
    assert interval_variables_used(["{{ dag_run.run_after }}", "{{ tsv }}", None, 3]) == set()


@pytest.mark.parametrize(
    ("config_url", "expected"),
    [
        ("https://api.m3ter.com", "https://console.m3ter.com"),
        ("https://api.eu.m3ter.com", "https://console.m3ter.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/_emulator/console"),
        ("http://localhost:9000/", "http://localhost:9000/_emulator/console"),
        ("https://m3ter-proxy.example.com", None),
        ("https://api.m3ter.com.evil.example", None),
    ],
)
def test_the_console_link_follows_the_connection(config_url: str, expected: str | None) -> None:
    assert console_base_for(config_url) == expected


def test_a_pool_share_divides_every_limit() -> None:
    settings = ClientSettings(org_id=ORG, access_key_id="k", api_secret="s")
    quarter = shared_settings(settings, pool_share("t", "m3ter_ingest", 1, 4))
    assert quarter.ingest_requests_per_second == 12.5
    assert quarter.ingest_requests_per_window == 1250
    assert quarter.config_requests_per_second == 12.5
    assert quarter.config_requests_per_window == 5000
    third = shared_settings(settings, pool_share("t", "m3ter_ingest", 1, 3))
    assert 3 * third.ingest_requests_per_window <= 5000  # floor: never above the limit together
    off = ClientSettings(org_id=ORG, access_key_id="k", api_secret="s", ingest_requests_per_second=None)
    assert shared_settings(off, 0.5).ingest_requests_per_second is None
    assert shared_settings(settings, 1.0) is settings
    assert pool_share("t", "m3ter_ingest", 2, 4) == 0.5
    assert pool_share("t", None, 1, None) == 1.0


@pytest.mark.parametrize(
    ("pool", "slots", "total", "words"),
    [
        ("default_pool", 1, 4, "default_pool"),
        (None, 1, 4, "default_pool"),
        ("m3ter_ingest", 5, 4, "more than"),
        ("m3ter_ingest", 1, 0, "positive integer"),
        ("m3ter_ingest", 1, True, "positive integer"),
    ],
)
def test_a_pool_share_that_cannot_hold_is_refused_at_parse_time(pool, slots, total, words) -> None:
    with pytest.raises(ValueError, match=words):
        _operator(measurements=[], pool=pool, pool_slots=slots, pool_slots_total=total)


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", REPO / "example_dags" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "run_after", "window"),
    [
        ("example_m3ter_ingest", "2024-05-02T15:00:00+00:00", ("2024-05-01T00:00", "2024-05-02T00:00")),
        ("example_m3ter_ingest", "2024-05-02T00:00:00+00:00", ("2024-05-01T00:00", "2024-05-02T00:00")),
        (
            "example_m3ter_ingest_events",
            "2024-05-02T00:30:00+00:00",
            ("2024-04-30T01:00", "2024-05-01T01:00"),
        ),
        (
            "example_m3ter_ingest_events",
            "2024-05-02T01:00:00+00:00",
            ("2024-05-01T01:00", "2024-05-02T01:00"),
        ),
    ],
)
def test_examples_choose_the_last_complete_day_for_a_run_without_an_interval(name, run_after, window) -> None:
    module = _example(name)
    run = SimpleNamespace(
        data_interval_start=None, data_interval_end=None, run_after=datetime.fromisoformat(run_after)
    )
    start, end = module.usage_window(run)
    assert (start.strftime("%Y-%m-%dT%H:%M"), end.strftime("%Y-%m-%dT%H:%M")) == window
    scheduled = SimpleNamespace(
        data_interval_start=datetime(2024, 1, 1, tzinfo=timezone.utc),
        data_interval_end=datetime(2024, 1, 2, tzinfo=timezone.utc),
        run_after=datetime(2024, 1, 2, tzinfo=timezone.utc),
    )
    assert module.usage_window(scheduled) == (scheduled.data_interval_start, scheduled.data_interval_end)


def test_a_stored_port_of_0_is_ignored_by_the_hook() -> None:
    """Issue 11, item 5: Port 0 (what makes Airflow 3.3.2's Test button work) changes no URL."""
    import json

    from airflow.sdk import Connection

    from airflow_provider_m3ter.hooks.m3ter import M3terHook

    for host, expected in (
        ("https://api.m3ter.com", "https://api.m3ter.com"),
        ("api.m3ter.com", "https://api.m3ter.com"),
    ):
        conn = Connection(
            conn_id="m3ter_port0",
            conn_type="m3ter",
            host=host,
            port=0,
            login="key",
            password="secret",
            extra=json.dumps({"org_id": ORG}),
        )
        settings = M3terHook.settings_from_connection(conn)
        assert settings.config_url == expected
        assert settings.ingest_url == "https://ingest.m3ter.com"
