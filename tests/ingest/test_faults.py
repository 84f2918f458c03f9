"""100,000 measurements through the real client path while the emulator injects faults."""

from __future__ import annotations

from airflow_provider_m3ter.client.checkpoint import MemoryCheckpointStore
from airflow_provider_m3ter.client.encoding import derive_uid
from airflow_provider_m3ter.client.ingest import IngestRun
from tests.ingest.conftest import usage


def test_hundred_thousand_measurements_survive_5xx_429_and_dropped_connections(
    m3ter_emulator, client_factory
) -> None:
    data = usage(100_000)
    m3ter_emulator.set_faults(
        target="ingest", seed=7, rate=0.25, kinds=["500", "502", "504", "429", "drop", "drop_after"]
    )
    store = MemoryCheckpointStore()
    client = client_factory(max_attempts=8)
    summary = IngestRun(client, namespace="faults", max_in_flight=4, checkpoint=store).run_measurements(data)

    stats = m3ter_emulator.stats()
    faults = stats["faults_injected"]
    # every kind of fault really happened
    assert all(faults.get(kind, 0) > 0 for kind in ("500", "502", "504", "429", "drop", "drop_after")), faults
    assert stats["measurements_stored"] == 100_000
    # a batch the emulator stored but never answered (drop_after) is resent whole, with the same uids;
    # nothing else is ever received twice
    assert stats["duplicates_received"] == faults["drop_after"] * 1000
    assert stats["measurements_received"] == 100_000 + faults["drop_after"] * 1000
    assert {m["uid"] for m in m3ter_emulator.measurements()} == {derive_uid("faults", m) for m in data}
    assert summary.sent == 100_000
    assert summary.batches == 100
    assert summary.retries == sum(faults.values())
    assert summary.throttled == faults["429"]
    # the finished run leaves a complete checkpoint (a later try sends nothing); one save per batch
    assert store.state is not None
    assert store.state["complete"] is True
    assert store.state["acked"] == [[0, 100]]
    assert len(store.history) == 100
