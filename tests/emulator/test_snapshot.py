"""Snapshots: state saved on request and on shutdown, and loaded at the next start."""

from __future__ import annotations

import json

import pytest

from airflow_provider_m3ter.emulator import EmulatorError, EmulatorProcess
from tests.emulator.api import Api, measurement


def test_snapshot_round_trip(tmp_path):
    path = tmp_path / "state.json"
    with EmulatorProcess(snapshot=str(path), job_mode="manual") as emu:
        api = Api(emu)
        meter = api.create_meter("api_calls")
        api.ingest([measurement("s-1"), measurement("s-2", meter="ghost")])
        job = api.ok(api.post("billjobs", json={}))
        emu.validate_now()
        saved = emu.snapshot()
        assert saved["path"] == str(path)
        on_request = json.loads(path.read_text())
        assert [json.loads(m)["uid"] for m in on_request["measurements"]] == ["s-1", "s-2"]
        api.ingest([measurement("s-3")])
        token = api.token()
    # Stopping (SIGTERM) wrote the snapshot again, including s-3.
    with EmulatorProcess(snapshot=str(path), job_mode="manual") as emu:
        api = Api(emu)
        assert api.ok(api.get(f"meters/{meter['id']}")) == meter
        assert [m["uid"] for m in emu.measurements()] == ["s-1", "s-2", "s-3"]
        assert api.get("meters", token=token).status_code == 200  # issued tokens survive a restart
        assert api.ok(api.get(f"billjobs/{job['id']}"))["status"] == "PENDING"
        assert emu.advance_job(job["id"])["status"] == "RUNNING"
        events = api.ok(api.get("events"))["data"]
        assert [e["m3terEvent"]["failureType"] for e in events] == ["UndefinedMeter"]
        assert api.ingest([measurement("s-1")]).status_code == 200  # uids are remembered
        stats = emu.stats()
        assert stats["measurements_stored"] == 3
        assert stats["duplicates_received"] == 1
        assert [a["code"] for a in api.ok(api.get("accounts"))["data"]] == ["acme"]


def test_snapshot_without_a_file_is_refused(m3ter_emulator):
    with pytest.raises(EmulatorError, match="without --snapshot"):
        m3ter_emulator.snapshot()
