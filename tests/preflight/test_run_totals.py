"""The run-totals ledger: shapes, sums, counts and source positions, whatever the rows' layout."""

from __future__ import annotations

from airflow_provider_m3ter.client.run_totals import RunLedger, canonical_shape, shape_of


def test_layouts_sums_and_positions():
    ledger = RunLedger()
    rows = [
        ({"meter": "m", "account": "a", "ts": "t"}, 1, 2),  # no maps at all
        ({"meter": "m", "account": "a", "ts": "t", "measure": {"x": 2}}, 2, 3),  # one map
        ({"meter": "m", "account": "a", "ts": "t", "measure": {"x": 3}}, 3, 4),
        ({"account": "a", "meter": "m", "measure": {"x": 0.5, "y": 1}, "who": {"u": "v"}, "ts": "t"}, 7, 12),
        ({"meter": "m", "account": "b", "ts": "t", "cost": {"c": 1.25}, "measure": {"x": 1}}, 8, None),
    ]
    for m, row, line in rows:
        ledger.observe(m, row, line)
    assert [ledger.position(i)[:2] for i in range(5)] == [(1, 2), (2, 3), (3, 4), (7, 12), (8, None)]
    assert ledger.totals() == {
        "m": {
            "a": {"measurements": 4, "measure.x": [5.5, 3], "measure.y": [1, 1]},
            "b": {"measurements": 1, "measure.x": [1, 1], "cost.c": [1.25, 1]},
        }
    }
    shapes = [shape for shape, _entry in ledger.raw_shapes()]
    assert len(shapes) == 4
    assert {canonical_shape(s) for s in shapes} == {canonical_shape(shape_of(m)) for m, _r, _l in rows}
    excluded = canonical_shape(shape_of(rows[4][0]))
    assert ledger.totals(exclude=[excluded]) == {
        "m": {"a": {"measurements": 4, "measure.x": [5.5, 3], "measure.y": [1, 1]}}
    }


def test_too_many_groups_gives_no_totals():
    ledger = RunLedger(max_groups=2)
    for account in ("a", "b", "c"):
        ledger.observe({"meter": "m", "account": account, "ts": "t", "measure": {"x": 1}}, 1, None)
    assert ledger.totals() is None
