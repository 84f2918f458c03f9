"""Console links: URL building, and how the link is wired into Airflow's operator-link machinery."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from airflow.sdk import DAG, BaseOperator, BaseOperatorLink

from airflow_provider_m3ter.links import (
    CONSOLE_URL_XCOM_KEY,
    M3terConsoleLink,
    console_url,
    persist_console_link,
)

ORG = "11111111-2222-4333-8444-555555555555"


@pytest.mark.parametrize(
    ("kind", "entity_id", "expected"),
    [
        (None, None, f"https://console.m3ter.com/org/{ORG}"),
        ("meter", "abc", f"https://console.m3ter.com/org/{ORG}/metering/meters/abc"),
        ("Meter", None, f"https://console.m3ter.com/org/{ORG}/metering/meters"),
        ("billjob", "j-1", f"https://console.m3ter.com/org/{ORG}/billing/bill-jobs/j-1"),
        ("billjob", ORG, f"https://console.m3ter.com/org/{ORG}/billing/bill-jobs/{ORG}"),
        # an id that is no plain token links to the section, never to a page it could climb out of
        ("fileupload", "f/1", f"https://console.m3ter.com/org/{ORG}/data/file-uploads"),
        ("meter", "..", f"https://console.m3ter.com/org/{ORG}/metering/meters"),
        ("meter", ".", f"https://console.m3ter.com/org/{ORG}/metering/meters"),
        ("meter", "%2e%2e", f"https://console.m3ter.com/org/{ORG}/metering/meters"),
        ("meter", "a b", f"https://console.m3ter.com/org/{ORG}/metering/meters"),
        ("no-such-kind", "x", f"https://console.m3ter.com/org/{ORG}"),
    ],
)
def test_console_url(kind: str | None, entity_id: str | None, expected: str) -> None:
    assert console_url(ORG, kind, entity_id) == expected


def test_console_url_needs_an_org_and_honours_a_base_url() -> None:
    with pytest.raises(ValueError, match="org_id is required"):
        console_url("  ", "meter", "x")
    assert console_url(ORG, "account", "a", base_url="https://console.example.com/") == (
        f"https://console.example.com/org/{ORG}/accounts/a"
    )


def test_persist_console_link_pushes_under_the_links_key() -> None:
    pushed: dict[str, object] = {}

    class _TI:
        def xcom_push(self, key: str, value: object) -> None:
            pushed[key] = value

    persist_console_link({"ti": _TI()}, "https://console.m3ter.com/org/x")
    assert pushed == {CONSOLE_URL_XCOM_KEY: "https://console.m3ter.com/org/x"}


def test_link_is_an_operator_link_that_the_api_server_reads_from_xcom() -> None:
    from tests.airflow_lines import dag_serialization

    DagSerialization = dag_serialization()

    link = M3terConsoleLink()
    assert isinstance(link, BaseOperatorLink)
    assert link.name == "m3ter Console"
    assert link.xcom_key == CONSOLE_URL_XCOM_KEY == "m3ter_console_url"

    class _LinkedOperator(BaseOperator):
        operator_extra_links = (M3terConsoleLink(),)

    with DAG("m3ter_link_wiring", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=timezone.utc)) as dag:
        _LinkedOperator(task_id="t")
    serialized = DagSerialization.serialize_dag(dag)
    assert serialized["tasks"][0]["__var"]["_operator_extra_links"] == {"m3ter Console": "m3ter_console_url"}
    # the API server rebuilds it as an XCom-reading link under the same name and key
    (server_link,) = DagSerialization.deserialize_dag(serialized).get_task("t").operator_extra_links
    assert (server_link.name, server_link.xcom_key) == ("m3ter Console", "m3ter_console_url")
