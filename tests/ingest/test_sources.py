"""Row sources: JSON Lines, streamed JSON arrays, CSV, gzip, object storage URLs, SQL and mappings."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_m3ter.client.measurements import RowError
from airflow_provider_m3ter.operators import sources
from airflow_provider_m3ter.operators.mapping import RowMapping, SourceError
from airflow_provider_m3ter.operators.sources import FileSource, IterableSource, SqlSource

M1 = {"meter": "api", "account": "acme", "ts": "2024-05-01T00:00:00Z", "measure": {"n": 1}}
M2 = {"meter": "api", "account": "beta", "ts": "2024-05-01T01:00:00Z", "measure": {"n": 2.5}}


def rows(source) -> list:
    return list(source.rows())


def test_json_lines_rows_lines_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    path.write_text(json.dumps(M1) + "\n\n" + '{"meter": oops}\n' + "[1, 2]\n" + json.dumps(M2) + "\n")
    got = rows(FileSource(path))
    assert [(row, line) for row, line, _ in got] == [(1, 1), (2, 3), (3, 4), (4, 5)]
    assert got[0][2] == M1
    assert got[3][2] == M2
    error = got[1][2]
    assert isinstance(error, RowError)
    assert (error.row, error.line, error.source) == (2, 3, str(path))
    assert error.reason.startswith("not valid JSON: Expecting value")
    assert got[2][2] == [1, 2]  # not an object: left for validation to reject with its row number


def test_json_lines_odd_but_valid_lines_and_trailing_garbage(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    text = "\ufeff" + json.dumps(M1) + "\r\n" + "   " + json.dumps(M2) + "  \n" + json.dumps(M1) + " x\n"
    path.write_bytes(text.encode() + json.dumps(M2).encode())  # no newline at the end
    got = rows(FileSource(path))
    assert [item for _, _, item in got][:2] == [M1, M2]
    assert isinstance(got[2][2], RowError)
    assert got[2][2].reason.startswith("not valid JSON: Extra data")
    assert (got[2][0], got[2][1]) == (3, 3)
    assert got[3] == (4, 4, M2)


def test_meter_and_account_defaults_fill_gaps_only(tmp_path: Path) -> None:
    path = tmp_path / "usage.ndjson"
    path.write_text(json.dumps({"ts": "2024-05-01T00:00:00Z"}) + "\n" + json.dumps(M1) + "\n")
    got = rows(FileSource(path, mapping=RowMapping(meter="default_meter", account="default_account")))
    assert got[0][2] == {"ts": "2024-05-01T00:00:00Z", "meter": "default_meter", "account": "default_account"}
    assert got[1][2] == M1


def test_json_array_is_streamed_across_tiny_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tricky = {"meter": "a,b]", "account": "x\n{y}", "ts": "2024-05-01T00:00:00Z", "measure": {"n": 12345}}
    text = (
        "  [\n"
        + json.dumps(M1)
        + ",\n\n  "
        + json.dumps(tricky, indent=2)
        + " ,\n"
        + json.dumps(M2)
        + "\n]\n"
    )
    path = tmp_path / "usage.json"
    path.write_text(text)
    monkeypatch.setattr(sources, "_CHUNK", 7)
    got = rows(FileSource(path))
    assert [item for _, _, item in got] == [M1, tricky, M2]
    assert [(row, line) for row, line, _ in got] == [(1, 2), (2, 4), (3, 12)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.dictionaries(
            st.text(max_size=5),
            st.one_of(
                st.integers(),
                # a float beyond +-2**53 is refused (NotANumber): see test_json_number_beyond_2_53
                st.floats(min_value=-(2.0**53) + 1, max_value=2.0**53 - 1),
                st.text(max_size=12),
                st.none(),
            ),
            max_size=4,
        ),
        max_size=12,
    ),
    st.integers(min_value=1, max_value=40),
    st.sampled_from([None, 2]),
)
def test_streamed_json_array_equals_json_load(tmp_path_factory, items: list, chunk: int, indent) -> None:
    path = tmp_path_factory.mktemp("arr") / "data.json"
    path.write_text(json.dumps(items, indent=indent))
    original = sources._CHUNK
    sources._CHUNK = chunk
    try:
        got = [item for _, _, item in FileSource(path).rows()]
    finally:
        sources._CHUNK = original
    assert got == items


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1}', "must start with '['"),
        ("[" + json.dumps(M1) + " " + json.dumps(M2) + "]", "expected ',' or ']' after element 1"),
        ("[" + json.dumps(M1) + ",", "ends early after element 1"),
        ("[" + json.dumps(M1) + ', {"meter": }]', "element 2 at line 1 is not valid JSON"),
    ],
)
def test_broken_json_arrays_name_the_element(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(SourceError, match=message.replace("[", r"\[").replace("]", r"\]")):
        rows(FileSource(path, file_format="json"))


def test_gzip_by_suffix_and_by_magic_bytes(tmp_path: Path) -> None:
    payload = (json.dumps(M1) + "\n" + json.dumps(M2) + "\n").encode()
    by_suffix = tmp_path / "usage.jsonl.gz"
    by_suffix.write_bytes(gzip.compress(payload))
    by_magic = tmp_path / "export.bin"  # no telling suffix: sniffed after decompression
    by_magic.write_bytes(gzip.compress(b"[" + payload.replace(b"\n", b",", 1).rstrip() + b"]"))
    assert [item for _, _, item in FileSource(by_suffix).rows()] == [M1, M2]
    assert [item for _, _, item in FileSource(by_magic).rows()] == [M1, M2]


def test_object_storage_url(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    path.write_text(json.dumps(M1) + "\n")
    assert [item for _, _, item in FileSource(f"file://{path}").rows()] == [M1]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("usage.jsonl", (json.dumps(M1) + "\n" + json.dumps(M2) + "\n").encode()),
        ("usage.json", json.dumps([M1, M2]).encode()),
        ("usage.ndjson.gz", gzip.compress((json.dumps(M1) + "\n" + json.dumps(M2) + "\n").encode())),
        ("export.bin", gzip.compress(json.dumps([M1, M2]).encode())),
    ],
)
def test_object_storage_url_every_format(tmp_path: Path, name: str, content: bytes) -> None:
    # Airflow 3.0's object-storage file wrapper is not iterable: every format must still stream
    path = tmp_path / name
    path.write_bytes(content)
    assert [item for _, _, item in FileSource(f"file://{path}").rows()] == [M1, M2]


def test_object_storage_url_csv(tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text("meter,account,ts,n\napi,acme,2024-05-01T00:00:00Z,1\n")
    mapping = RowMapping({"meter": "meter", "account": "account", "ts": "ts", "n": "measure.n"})
    items = [item for _, _, item in FileSource(f"file://{path}", mapping=mapping).rows()]
    assert items == [M1]


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"source file not found: .*nope\.csv"):
        rows(FileSource(tmp_path / "nope.csv"))


CSV = (
    "meter,account,ts,measure.requests,who.user,metadata.note\n"
    "api,acme,2024-05-01T00:00:00Z,12,u1,plain\n"
    'api,acme,2024-05-01T00:01:00Z,2.5,u2,"two, quoted"\n'
    "api,acme,2024-05-01T00:02:00Z,lots,u3,\n"
    "\n"
    "api,acme,2024-05-01T00:03:00Z,7\n"
    "api,,2024-05-01T00:04:00Z,,u5,\n"
)


def test_csv_header_names_fields_and_numbers_are_converted(tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text(CSV)
    got = rows(FileSource(path))
    assert [(row, line) for row, line, _ in got] == [(1, 2), (2, 3), (3, 4), (4, 6), (5, 7)]
    assert got[0][2] == {
        "meter": "api",
        "account": "acme",
        "ts": "2024-05-01T00:00:00Z",
        "measure": {"requests": 12},
        "who": {"user": "u1"},
        "metadata": {"note": "plain"},
    }
    assert got[1][2]["measure"] == {"requests": 2.5}
    assert got[1][2]["metadata"] == {"note": "two, quoted"}
    reason = "not a number in ASCII decimal notation: 'lots'"
    assert got[2][2] == RowError(3, "measure.requests", reason, str(path), 4)
    assert got[3][2] == RowError(4, "", "expected 6 fields as in the header, got 4", str(path), 6)
    # empty cells are absent values (the missing account is then a validation error)
    assert got[4][2] == {"meter": "api", "ts": "2024-05-01T00:04:00Z", "who": {"user": "u5"}}


def test_csv_with_explicit_mapping_ignores_other_columns(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("customer,when,calls,internal\nacme,2024-05-01T00:00:00Z,3,x\n")
    mapping = RowMapping({"customer": "account", "when": "ts", "calls": "measure.calls"}, meter="api")
    assert [item for _, _, item in FileSource(path, mapping=mapping).rows()] == [
        {"account": "acme", "ts": "2024-05-01T00:00:00Z", "measure": {"calls": 3}, "meter": "api"}
    ]


def test_unknown_columns_and_targets_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text("meter,account,ts,colour\n")
    with pytest.raises(SourceError, match="column 'colour' is not a measurement field"):
        rows(FileSource(path))
    with pytest.raises(SourceError, match=r"mapping for column 'c': unknown mapping target 'size\.x'"):
        RowMapping({"c": "size.x"})


def test_inline_flat_dicts_with_mapping() -> None:
    mapping = RowMapping({"cust": "account", "t": "ts", "n": "measure.n", "u": "who.user"}, meter="api")
    source = IterableSource([{"cust": "acme", "t": "2024-05-01T00:00:00Z", "n": "4", "u": 17}], mapping)
    assert [item for _, _, item in source.rows()] == [
        {
            "account": "acme",
            "ts": "2024-05-01T00:00:00Z",
            "measure": {"n": 4},
            "who": {"user": "17"},
            "meter": "api",
        }
    ]


def test_sql_rows_stream_through_a_dbapi_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "usage.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table usage (customer text, at text, calls integer, gb real, user_id integer)")
        conn.executemany(
            "insert into usage values (?, ?, ?, ?, ?)",
            [(f"c{i}", f"2024-05-01T00:00:{i:02d}Z", i, i / 2, 100 + i) for i in range(7)]
            + [("c7", "2024-05-02T00:00:00Z", None, 1.0, 1)],
        )
    monkeypatch.setenv("AIRFLOW_CONN_USAGE_DB", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    mapping = RowMapping(
        {
            "customer": "account",
            "at": "ts",
            "calls": "measure.calls",
            "gb": "measure.gb",
            "user_id": "who.user",
        },
        meter="api",
    )
    source = SqlSource(
        "usage_db", "select * from usage where at < ? order by at", ["2024-05-02"], mapping, fetch_size=3
    )
    got = rows(source)
    assert [row for row, _, _ in got] == list(range(1, 8))
    assert got[3][2] == {
        "account": "c3",
        "ts": "2024-05-01T00:00:03Z",
        "measure": {"calls": 3, "gb": 1.5},
        "who": {"user": "103"},
        "meter": "api",
    }
    bad = SqlSource("usage_db", "select * from no_such_table", mapping=mapping)
    with pytest.raises(SourceError, match="query on connection 'usage_db' failed: no such table"):
        rows(bad)


@pytest.mark.parametrize(
    "header",
    [
        "meter,account,account,ts,measure.requests",  # the same column twice
        "meter,account, account ,ts,measure.requests",  # twice once the header's spaces are trimmed
        "meter,account,ts,measure.requests,measure.requests",
    ],
)
def test_csv_column_named_twice_fails_the_load(tmp_path: Path, header: str) -> None:
    path = tmp_path / "usage.csv"
    path.write_text(header + "\nm,a,b,2024-05-01T00:00:00Z,1\n")
    with pytest.raises(SourceError, match="appears more than once"):
        rows(FileSource(path))


def test_mapped_column_named_twice_fails_but_an_unused_twin_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("customer,customer,when,calls,id,id\nacme,evil,2024-05-01T00:00:00Z,3,1,2\n")
    mapping = RowMapping({"customer": "account", "when": "ts", "calls": "measure.calls"}, meter="api")
    with pytest.raises(SourceError, match="'customer' appears more than once"):
        rows(FileSource(path, mapping=mapping))
    path.write_text("customer,when,calls,id,id\nacme,2024-05-01T00:00:00Z,3,1,2\n")
    assert [item["account"] for _, _, item in FileSource(path, mapping=mapping).rows()] == ["acme"]


def test_two_columns_mapped_to_one_field_are_refused() -> None:
    with pytest.raises(SourceError, match="columns 'cust' and 'customer' both map to 'account'"):
        RowMapping({"cust": "account", "customer": "account", "t": "ts"})


def test_sql_result_with_a_column_named_twice_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "usage.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table usage (a text, b text, at text, n integer)")
        conn.execute("insert into usage values ('acme', 'other', '2024-05-01T00:00:00Z', 1)")
    monkeypatch.setenv("AIRFLOW_CONN_USAGE_DB", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    query = "select 'm' as meter, a as account, b as account, at as ts, n as \"measure.n\" from usage"
    with pytest.raises(SourceError, match="'account' appears more than once"):
        rows(SqlSource("usage_db", query))
