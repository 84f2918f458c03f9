"""The official ``m3ter`` SDK against the emulator, given one ``base_url`` (issue 12, item 4)."""

from __future__ import annotations

import pytest

from tests.emulator.api import Api, measurement

m3ter = pytest.importorskip("m3ter", reason="the official m3ter SDK is in the test extra")


def sdk_client(emulator):
    return m3ter.M3ter(
        api_key=emulator.access_key_id,
        api_secret=emulator.api_secret,
        org_id=emulator.org_id,
        base_url=emulator.config_url,
        max_retries=0,
    )


def test_sdk_submits_measurements_to_one_host(m3ter_emulator):
    api = Api(m3ter_emulator)
    meter = api.create_meter()
    before = m3ter_emulator.stats()["tokens_issued"]
    with sdk_client(m3ter_emulator) as client:
        answer = client.usage.submit(
            measurements=[measurement("sdk-1"), measurement("sdk-2", account="beta")]
        )
        assert answer.result == "accepted"
        m3ter_emulator.validate_now()
        result = client.usage.query(
            start_date="2024-05-01T00:00:00Z",
            end_date="2024-05-02T00:00:00Z",
            meter_ids=[meter["id"]],
            aggregations=[
                {"meterId": meter["id"], "fieldCode": "calls", "fieldType": "MEASURE", "function": "SUM"}
            ],
            groups=[{"groupType": "ACCOUNT"}],
        )
    assert [m["uid"] for m in m3ter_emulator.measurements()] == ["sdk-1", "sdk-2"]
    assert {row["account"]: row["calls:SUM"] for row in result.data} == {"acme": 3, "beta": 3}
    assert result.has_more_data is False
    stats = m3ter_emulator.stats()
    assert stats["tokens_issued"] > before  # the SDK fetched its token on the same host
    assert stats["requests"]["POST /organizations/{orgId}/measurements"] == {"200": 1}


def test_sdk_sees_the_emulators_refusals(m3ter_emulator):
    with sdk_client(m3ter_emulator) as client, pytest.raises(m3ter.BadRequestError) as caught:
        client.usage.submit(measurements=[measurement("x" * 51)])
    assert "uid: must be at most 50" in str(caught.value)
    assert m3ter_emulator.measurements() == []
