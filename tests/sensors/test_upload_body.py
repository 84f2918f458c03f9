"""Preparing a file upload: two passes, exact length, row-level errors, the streamed JSON array."""

from __future__ import annotations

import gzip
import json

import pytest

from airflow_provider_m3ter.client.encoding import derive_uid
from airflow_provider_m3ter.client.file_upload import JsonArrayBody, MeasurementFileError, MeasurementUpload
from airflow_provider_m3ter.operators.mapping import RowMapping
from airflow_provider_m3ter.operators.sources import FileSource


def _m(i: int, **extra) -> dict:
    return {
        "meter": "api_calls",
        "account": "acme",
        "ts": f"2024-05-01T00:00:{i % 60:02d}Z",
        "measure": {"n": i},
        **extra,
    }


def _upload(path, **kwargs) -> MeasurementUpload:
    return MeasurementUpload(FileSource(path).rows, source=str(path), **kwargs)


def test_jsonl_and_json_array_give_the_same_body(tmp_path):
    rows = [_m(i) for i in range(250)] + [_m(7, uid="given-uid")]
    jsonl = tmp_path / "usage.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    array = tmp_path / "usage.json"
    array.write_text(json.dumps(rows, indent=2))
    bodies = []
    for path in (jsonl, array):
        upload = _upload(path, uid_namespace="ns")
        scan = upload.scan()
        body = b"".join(upload.body(scan.content_length))
        assert scan.measurements == 251
        assert len(body) == scan.content_length
        bodies.append(body)
    assert bodies[0] == bodies[1]
    sent = json.loads(bodies[0])
    assert sent[0]["uid"] == derive_uid("ns", rows[0])
    assert sent[-1]["uid"] == "given-uid"
    assert all(len(m["uid"]) <= 50 for m in sent)


def test_csv_with_mapping_and_gzip(tmp_path):
    path = tmp_path / "usage.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("customer,when,calls\nacme,2024-05-01T00:00:00Z,5\nbeta,2024-05-01T01:00:00Z,7\n")
    mapping = RowMapping(
        {"customer": "account", "when": "ts", "calls": "measure.requests"}, meter="api_calls"
    )
    upload = MeasurementUpload(FileSource(path, mapping=mapping).rows, source=str(path), uid_namespace="x")
    scan = upload.scan()
    sent = json.loads(b"".join(upload.body(scan.content_length)))
    assert [(m["account"], m["measure"]["requests"], m["meter"]) for m in sent] == [
        ("acme", 5, "api_calls"),
        ("beta", 7, "api_calls"),
    ]


def test_invalid_rows_fail_naming_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(_m(1))
    path.write_text("\n".join([good, json.dumps({**_m(2), "meter": ""}), "{not json", good]) + "\n")
    with pytest.raises(MeasurementFileError) as caught:
        _upload(path).scan()
    text = str(caught.value)
    assert "2 invalid row(s), nothing uploaded" in text
    assert f"row 2 ({path}, line 2), field 'meter'" in text
    assert f"row 3 ({path}, line 3): not valid JSON" in text
    assert [error.row for error in caught.value.rejected] == [2, 3]


def test_skip_leaves_invalid_rows_out_and_counts_them(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([json.dumps(_m(1)), json.dumps({"meter": "m"}), json.dumps(_m(2))]))
    upload = _upload(path, on_invalid="skip")
    scan = upload.scan()
    assert (scan.measurements, scan.rejected) == (2, 1)
    assert {e["field"] for e in scan.examples} == {"account", "ts"}
    assert len(json.loads(b"".join(upload.body(scan.content_length)))) == 2


def test_nothing_valid_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(MeasurementFileError, match="no valid measurements to upload"):
        _upload(path).scan()


def test_a_file_that_changes_between_passes_is_caught(tmp_path):
    path = tmp_path / "moving.jsonl"
    path.write_text(json.dumps(_m(1)) + "\n")
    upload = _upload(path)
    scan = upload.scan()
    path.write_text(json.dumps(_m(1)) + "\n" + json.dumps(_m(2)) + "\n")
    with pytest.raises(MeasurementFileError, match="changed while uploading"):
        b"".join(upload.body(scan.content_length))


def test_body_streams_in_chunks_and_reports_its_length():
    records = [b'{"a":%d}' % i for i in range(20000)]
    length = 2 + sum(map(len, records)) + len(records) - 1
    body = JsonArrayBody(iter(records), length)
    assert len(body) == length
    chunks = list(body)
    assert len(chunks) > 1
    assert b"".join(chunks) == b"[" + b",".join(records) + b"]"
    assert body.sent == length
    short = JsonArrayBody(iter(records[:2]), length)
    with pytest.raises(MeasurementFileError, match="changed while uploading"):
        list(short)


def test_identical_rows_are_distinct_measurements_with_the_same_uids_as_ingest(tmp_path):
    # three identical rows (raw event logs do this): three measurements, never one
    same = _m(1)
    rows = [same, _m(2), same, same]
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    upload = _upload(path, uid_namespace="ns")
    scan = upload.scan()
    sent = json.loads(b"".join(upload.body(scan.content_length)))
    uids = [m["uid"] for m in sent]
    assert len(set(uids)) == 4
    # the uids ingest gives the same rows (first, then the k-th repeat), in any order of the source
    assert uids == [
        derive_uid("ns", same),
        derive_uid("ns", _m(2)),
        derive_uid("ns", same, 1),
        derive_uid("ns", same, 2),
    ]
    path.write_text("\n".join(json.dumps(r) for r in reversed(rows)) + "\n")
    again = _upload(path, uid_namespace="ns")
    resent = json.loads(b"".join(again.body(again.scan().content_length)))
    assert sorted(m["uid"] for m in resent) == sorted(uids)
