"""Faults a review found in the exact-ingest path (issue 9 follow-up): each input is a test.

Real runs against the emulator (``client_factory``) wherever m3ter's side matters.
"""

from __future__ import annotations

import codecs
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_m3ter.client.checkpoint import MemoryCheckpointStore
from airflow_provider_m3ter.client.dead_letters import dead_letter
from airflow_provider_m3ter.client.encoding import derive_uid
from airflow_provider_m3ter.client.ingest import IngestRun
from airflow_provider_m3ter.client.measurements import RowError, validate_measurement
from airflow_provider_m3ter.operators import sources
from airflow_provider_m3ter.operators.mapping import RowMapping, SourceError
from airflow_provider_m3ter.operators.sources import FileSource, IterableSource, loads_strict

GOOD = '{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","measure":{"x":1}}'


def _run(client: Any, source: Any, tmp_path: Path, **kw: Any) -> IngestRun:
    run = IngestRun(client, namespace="ns", on_invalid="skip", dead_letter_path=tmp_path / "dl.jsonl", **kw)
    run.run(source.rows(), source.name)
    return run


def _letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dl.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- 1. duplicate keys with whitespace before the colon -----------------------------------------

SPACED_DUPLICATES = [
    '{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","measure":{"x" :1,"x":2}}',
    '{"meter" :"m","meter":"evil","account":"a","ts":"2024-05-01T00:00:01Z","measure":{"x":1}}',
    '{"meter":"m","account":"a","ts":"2024-05-01T00:00:02Z","measure":{"x":1},"account"\t:"b"}',
    '{"meter":"m","account":"a","ts":"2024-05-01T00:00:02Z","measure":{"x":1},"account"\r :"b"}',
]


@pytest.mark.parametrize("file_format", ["jsonl", "json"])
def test_duplicate_key_with_space_before_colon_is_a_row_error(
    client_factory, m3ter_emulator, tmp_path, file_format
):
    path = tmp_path / f"dup.{file_format}"
    if file_format == "jsonl":
        path.write_text("\n".join(SPACED_DUPLICATES) + "\n")
    else:
        path.write_text("[\n" + ",\n".join(SPACED_DUPLICATES) + "\n]\n")
    run = _run(client_factory(), FileSource(path), tmp_path)
    assert run.summary.invalid == len(SPACED_DUPLICATES)
    assert run.summary.sent == 0
    assert m3ter_emulator.measurements() == []
    assert all("more than once" in error.reason for error in run.errors)


def _ws(rng: random.Random) -> str:
    return "".join(rng.choice(" \t\r\n") for _ in range(rng.choice([0, 0, 1, 2])))


def _dump(value: Any, rng: random.Random, newlines: bool) -> str:
    """JSON text of ``value`` (a list of (key, value) pairs for objects) with random whitespace."""
    ws = (lambda: _ws(rng)) if newlines else (lambda: _ws(rng).replace("\n", " ").replace("\r", " "))
    if isinstance(value, list):  # an object as pairs, keys may repeat
        parts = [
            ws() + json.dumps(key) + ws() + ":" + ws() + _dump(item, rng, newlines) + ws()
            for key, item in value
        ]
        return "{" + ",".join(parts) + ws() + "}"
    return json.dumps(value)


keys = st.sampled_from(["meter", "account", "ts", "measure", "x", 'a":', "k :"])
scalars = st.one_of(st.integers(-5, 5), st.sampled_from(["m", "a", '":', " :", "2024-05-01T00:00:00Z"]))
objects = st.recursive(
    st.lists(st.tuples(keys, scalars), max_size=4),
    lambda inner: st.lists(st.tuples(keys, st.one_of(scalars, inner)), max_size=4),
    max_leaves=10,
)


def _has_duplicate(pairs: Any) -> bool:
    if not isinstance(pairs, list):
        return False
    names = [key for key, _ in pairs]
    return len(names) != len(set(names)) or any(_has_duplicate(item) for _, item in pairs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(objects, min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_fast_path_never_accepts_a_duplicate_key(tmp_path_factory, rows: list, rng: random.Random) -> None:
    """Whatever the whitespace around keys and colons, a row naming a key twice is never a dict."""
    folder = tmp_path_factory.mktemp("dups")
    lines = [_dump(pairs, rng, newlines=False) for pairs in rows]
    (folder / "d.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "d.json").write_text("[" + ",".join(_dump(pairs, rng, newlines=True) for pairs in rows) + "]")
    for name in ("d.jsonl", "d.json"):
        got = [item for _, _, item in FileSource(folder / name).rows()]
        assert len(got) == len(rows)
        for pairs, item in zip(rows, got, strict=False):
            if _has_duplicate(pairs):
                assert isinstance(item, RowError), (name, pairs, item)
                assert "more than once" in item.reason, (name, pairs, item)
            else:
                assert not isinstance(item, RowError), (name, pairs, item)


# --- 2. anything after a JSON array ---------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    ["\n[" + GOOD + "]", "\n" + GOOD, "x", "]", "\n\n,"],
    ids=["array", "object", "x", "bracket", "comma"],
)
@pytest.mark.parametrize("empty", [False, True])
def test_content_after_the_json_array_fails_the_load(client_factory, m3ter_emulator, tmp_path, tail, empty):
    path = tmp_path / "two.json"
    path.write_text(("[]" if empty else "[" + GOOD + "]") + tail)
    run = IngestRun(client_factory(), namespace="ns", on_invalid="skip")
    with pytest.raises(SourceError, match=r"two\.json: line \d+: .* after the JSON array's closing"):
        run.run(FileSource(path).rows(), str(path))
    assert m3ter_emulator.measurements() == []


def test_whitespace_after_the_json_array_is_fine(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text("[" + GOOD + "]\n \t\r\n")
    assert len(list(FileSource(path).rows())) == 1


# --- 3. deep nesting ------------------------------------------------------------------------------


def _deep(depth: int) -> str:
    return '{"meter":"m","account":"a","ts":"2024-05-01T00:00:01Z","other":' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [33, 990, 5_000, 100_000])
@pytest.mark.parametrize("file_format", ["jsonl", "json"])
def test_deep_nesting_is_a_row_error(client_factory, m3ter_emulator, tmp_path, depth, file_format):
    path = tmp_path / f"deep.{file_format}"
    if file_format == "jsonl":
        path.write_text(GOOD + "\n" + _deep(depth) + "\n")
    else:
        path.write_text("[" + GOOD + "," + _deep(depth) + "," + GOOD.replace(":00Z", ":02Z") + "]")
    run = _run(client_factory(), FileSource(path), tmp_path)
    assert run.summary.invalid == 1
    assert run.summary.sent == run.summary.valid == (1 if file_format == "jsonl" else 2)
    assert len(m3ter_emulator.measurements()) == run.summary.sent
    assert "nest deeper than" in run.errors[0].reason
    (letter,) = _letters(tmp_path)
    assert letter["row"] == 2


def test_nesting_within_the_limit_is_parsed_and_brackets_in_strings_do_not_count(tmp_path):
    inner = "[" * 30 + "]" * 30
    text = (
        '{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","who":{"u":"'
        + "[" * 200
        + '"},"other":'
        + inner
        + "}"
    )
    path = tmp_path / "ok.jsonl"
    path.write_text(text + "\n")
    ((_, _, item),) = FileSource(path).rows()
    assert isinstance(item, dict)
    assert item["who"]["u"] == "[" * 200


def test_deep_measurements_string_is_refused_without_a_crash():
    with pytest.raises(ValueError, match="nest deeper"):
        loads_strict("[" + _deep(5_000) + "]")


@pytest.mark.parametrize("depth", [33, 5_000])
def test_deep_row_in_a_measurements_string_is_a_row_error(depth):
    from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator

    operator = M3terIngestMeasurementsOperator(
        task_id="t", measurements="[" + GOOD + "," + _deep(depth) + "]"
    )
    rows = list(operator.build_source().rows())
    assert rows[0][2] == json.loads(GOOD)
    assert isinstance(rows[1][2], RowError)
    assert "nest deeper than" in rows[1][2].reason


def test_dead_letter_of_data_too_deep_to_write_never_crashes():
    data: Any = []
    for _ in range(5_000):
        data = [data]
    line = dead_letter(1, 1, "src", [RowError(1, "", "bad")], {"other": data})
    letter = json.loads(line)
    assert letter["data"] is None
    assert "cannot be written" in letter["data_unwritable"]


# --- 7. numbers in code fields --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"meter":"m","account":1e400,"ts":"2024-05-01T00:00:00Z","measure":{"x":1}}',
        '{"meter":1E-400,"account":"a","ts":"2024-05-01T00:00:00Z","measure":{"x":1}}',
        '{"meter":"m","account":"a","ts":1e999,"measure":{"x":1}}',
        '{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","who":{"u":1e400}}',
        '{"uid":1e400,"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z"}',
    ],
)
def test_overflowing_number_in_a_string_field_is_a_row_error(text):
    problems = validate_measurement(loads_strict(text))
    assert problems
    assert all("must be" in p.reason for p in problems)


# --- 8. big numbers in any notation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    ["9007199254740993.0", "12345678901234567e0", "9007199254740992.5", "1e16", "-9.007199254740993e15"],
)
def test_numbers_beyond_2_53_are_refused_whatever_the_notation(tmp_path, number):
    jsonl = tmp_path / "n.jsonl"
    jsonl.write_text(
        f'{{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","measure":{{"x":{number}}}}}\n'
    )
    csv_path = tmp_path / "n.csv"
    csv_path.write_text(f"meter,account,ts,measure.x\nm,a,2024-05-01T00:00:00Z,{number}\n")
    mapping = RowMapping({"v": "measure.x"}, meter="m", account="a")
    inline = IterableSource([{"ts": "2024-05-01T00:00:00Z", "v": Decimal(number)}], mapping)
    for source in (FileSource(jsonl), FileSource(csv_path), inline):
        ((_, _, item),) = list(source.rows())
        problems = [item] if isinstance(item, RowError) else validate_measurement(item)
        assert problems, (source.name, item)
        assert "2**53" in problems[0].reason, (source.name, item)
    assert validate_measurement(
        {"meter": "m", "account": "a", "ts": "2024-05-01T00:00:00Z", "measure": {"x": 2.0**53 * 2}}
    )


def test_numbers_within_2_53_still_pass(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text(
        '{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","measure":{"x":9007199254740991.0,"y":1e15}}\n'
    )
    ((_, _, item),) = list(FileSource(path).rows())
    assert item["measure"] == {"x": 9007199254740991.0, "y": 1e15}
    assert validate_measurement(item) == []


# --- 10. dead letters of CSV/SQL rows, UTF-16 JSON Lines, lone surrogates -------------------------


def test_csv_dead_letters_hold_the_row_as_read(client_factory, tmp_path):
    path = tmp_path / "dl.csv"
    path.write_text(
        "meter,account,ts,measure.x\nm,a,2024-05-01T00:00:00Z,n/a\nm,a,2024-05-01T00:00:00Z,1,extra\n"
    )
    _run(client_factory(), FileSource(path), tmp_path)
    first, second = _letters(tmp_path)
    assert first["data"] == {"meter": "m", "account": "a", "ts": "2024-05-01T00:00:00Z", "measure.x": "n/a"}
    assert second["data"] == ["m", "a", "2024-05-01T00:00:00Z", "1", "extra"]


def test_sql_dead_letters_hold_the_row_as_read(client_factory, tmp_path, monkeypatch):
    import sqlite3

    database = tmp_path / "u.db"
    with sqlite3.connect(database) as db:
        db.execute("create table u (account text, ts text, v text)")
        db.execute("insert into u values ('a', '2024-05-01T00:00:00Z', 'oops')")

    class Hook:
        def get_conn(self) -> Any:
            return sqlite3.connect(database)

    source = sources.SqlSource(
        "db",
        "select account, ts, v from u",
        mapping=RowMapping({"account": "account", "ts": "ts", "v": "measure.x"}, meter="m"),
    )
    monkeypatch.setattr(source, "_hook", lambda: Hook())
    _run(client_factory(), source, tmp_path)
    (letter,) = _letters(tmp_path)
    assert letter["data"] == {"account": "a", "ts": "2024-05-01T00:00:00Z", "v": "oops"}


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [("utf-16", codecs.BOM_UTF16_LE), ("utf-16-be", b""), ("utf-32", codecs.BOM_UTF32_LE)],
)
def test_utf16_json_lines(client_factory, m3ter_emulator, tmp_path, encoding, bom):
    # U+010A and U+0A0A hold the byte 0x0A in UTF-16/32: a byte split would cut the line there
    lines = [
        json.dumps(
            {"meter": "m", "account": "a", "ts": f"2024-05-01T00:00:0{i}Z", "who": {"u": f"\u010a\u0a0a{i}"}},
            ensure_ascii=False,
        )
        for i in range(3)
    ]
    text = "\n".join(lines) + "\n"
    codec = {"utf-16": "utf-16-le", "utf-32": "utf-32-le"}.get(encoding, encoding)
    path = tmp_path / "u.jsonl"
    path.write_bytes(bom + text.encode(codec))
    run = _run(client_factory(), FileSource(path, encoding=encoding), tmp_path)
    assert (run.summary.read, run.summary.sent) == (3, 3)
    assert len(m3ter_emulator.measurements()) == 3


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","who":{"u":"\\ud800"}}', "who.u"),
        ('{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","metadata":{"u":"x\\udfff"}}', "metadata.u"),
        ('{"meter":"m","account":"a\\ud800","ts":"2024-05-01T00:00:00Z"}', "account"),
        ('{"meter":"\\udc00m","account":"a","ts":"2024-05-01T00:00:00Z"}', "meter"),
        ('{"uid":"u\\ud800","meter":"m","account":"a","ts":"2024-05-01T00:00:00Z"}', "uid"),
        ('{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","who":{"\\ud800":"x"}}', "who.\ud800"),
    ],
)
def test_lone_surrogates_are_row_errors(client_factory, m3ter_emulator, tmp_path, text, field):
    path = tmp_path / "s.jsonl"
    path.write_text(text + "\n" + GOOD + "\n")
    run = _run(client_factory(), FileSource(path), tmp_path)
    assert (run.summary.invalid, run.summary.sent) == (1, 1)
    assert run.errors[0].field == field
    assert len(m3ter_emulator.measurements()) == 1
    (letter,) = _letters(tmp_path)
    assert letter["row"] == 1


# --- 5 and 6. a checkpoint that does not match: reordered or changed source -----------------------


def _usage_rows(count: int) -> list[dict[str, Any]]:
    return [
        {"meter": "m", "account": "a", "ts": f"2024-05-01T00:00:{i:02d}Z", "measure": {"x": i}}
        for i in range(count)
    ]


class _Crash(Exception):
    pass


class _CrashingStore(MemoryCheckpointStore):
    """Saves like the memory store, then "crashes" (raises) on the save of batch ``at``."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def save(self, state: dict[str, Any]) -> None:
        super().save(state)
        if state["batches"] == self.at:
            raise _Crash


def test_changed_source_reports_what_earlier_tries_left_in_m3ter(client_factory, m3ter_emulator, caplog):
    store = MemoryCheckpointStore()
    first = _usage_rows(10)
    IngestRun(client_factory(), namespace="ns", checkpoint=store, max_batch_count=2).run_measurements(first)
    changed = [*first[:9], dict(first[9], measure={"x": 99})]
    caplog.set_level("WARNING", logger="airflow_provider_m3ter.ingest")
    second = IngestRun(client_factory(), namespace="ns", checkpoint=store, max_batch_count=2)
    summary = second.run_measurements(changed)
    assert len(m3ter_emulator.measurements()) == 11
    assert (summary.sent, summary.resumed_from) == (10, None)
    assert summary.earlier_other_source == {"measurements": 10}
    assert summary.as_dict()["earlier_other_source"] == {"measurements": 10}
    assert (
        "m3ter also holds 10 measurements sent by earlier tries of a different source version" in caplog.text
    )
    # a third try of the changed source resumes (nothing to send) and still tells the truth
    third = IngestRun(client_factory(), namespace="ns", checkpoint=store, max_batch_count=2)
    summary = third.run_measurements(changed)
    assert (summary.sent, summary.resumed_from["measurements"]) == (0, 10)
    assert summary.earlier_other_source == {"measurements": 10}
    assert len(m3ter_emulator.measurements()) == 11


def test_reordered_source_after_a_crash_warns_with_the_count(client_factory, m3ter_emulator, caplog):
    rows = _usage_rows(10)
    store = _CrashingStore(at=2)
    with pytest.raises(_Crash):
        IngestRun(client_factory(), namespace="ns", checkpoint=store, max_batch_count=2).run_measurements(
            rows
        )
    store.at = -1
    caplog.set_level("WARNING", logger="airflow_provider_m3ter.ingest")
    summary = IngestRun(
        client_factory(), namespace="ns", checkpoint=store, max_batch_count=2
    ).run_measurements(rows[::-1])
    assert "yields its rows in another order" in caplog.text
    assert "m3ter also holds 4 measurements" in caplog.text
    assert summary.earlier_other_source == {"measurements": 4}
    assert summary.sent == 10
    # same uids: m3ter holds each row once
    assert len(m3ter_emulator.measurements()) == 10


# --- 4. an explicit uid equal to another row's derived or occurrence uid ------------------------

ROW_A = {"meter": "m", "account": "a", "ts": "2024-05-01T00:00:00Z", "measure": {"x": 1}}


def _ingest(client: Any, rows: list[dict[str, Any]], **kw: Any) -> Any:
    return IngestRun(client, namespace="ns", on_invalid="skip", **kw).run_measurements(rows)


@pytest.mark.parametrize("order", ["derived_first", "explicit_first"])
def test_explicit_uid_equal_to_a_derived_uid_with_other_content_is_a_row_error(
    client_factory, m3ter_emulator, order
):
    uid = derive_uid("ns", ROW_A)
    correction = dict(ROW_A, uid=uid, measure={"x": 5})
    rows = [ROW_A, correction] if order == "derived_first" else [correction, ROW_A]
    summary = _ingest(client_factory(), rows)
    stored = m3ter_emulator.measurements()
    assert (summary.valid, summary.invalid, summary.sent) == (1, 1, 1)
    assert [m["measure"] for m in stored] == [{"x": 1}]
    assert summary.sent == len(stored)


@pytest.mark.parametrize("order", ["derived_first", "explicit_first"])
def test_explicit_uid_equal_to_a_derived_uid_with_the_same_content_is_one_measurement(
    client_factory, m3ter_emulator, order
):
    exported = dict(ROW_A, uid=derive_uid("ns", ROW_A))
    rows = [ROW_A, exported] if order == "derived_first" else [exported, ROW_A]
    summary = _ingest(client_factory(), rows)
    assert (summary.valid, summary.identical, summary.deduplicated, summary.sent) == (2, 1, 1, 1)
    assert len(m3ter_emulator.measurements()) == 1


@pytest.mark.parametrize("deduplicate", [False, True])
def test_explicit_uid_equal_to_an_occurrence_uid(client_factory, m3ter_emulator, deduplicate):
    other = {"uid": derive_uid("ns", ROW_A, 1), "meter": "m", "account": "z", "ts": "2024-06-01T00:00:00Z"}
    summary = _ingest(client_factory(), [ROW_A, ROW_A, other], deduplicate=deduplicate)
    stored = m3ter_emulator.measurements()
    if deduplicate:  # the repeat is dropped, so the occurrence uid is nobody else's: all fine
        assert (summary.invalid, summary.sent, len(stored)) == (0, 2, 2)
    else:
        assert (summary.invalid, summary.sent) == (1, 2)
        assert sorted(m["account"] for m in stored) == ["a", "a"]
    assert summary.valid - summary.deduplicated == len(stored)


def test_explicit_copy_of_an_occurrence_is_the_same_measurement(client_factory, m3ter_emulator):
    exported = dict(ROW_A, uid=derive_uid("ns", ROW_A, 1))
    summary = _ingest(client_factory(), [exported, ROW_A, ROW_A])
    assert (summary.invalid, summary.identical, summary.deduplicated, summary.sent) == (0, 2, 1, 2)
    assert len(m3ter_emulator.measurements()) == 2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from(["none", "derived0", "derived1", "plain"])),
        min_size=1,
        max_size=8,
    ),
    st.booleans(),
)
def test_every_final_uid_is_unique_per_content(client_factory, m3ter_emulator, spec, deduplicate):
    """Whatever explicit uids meet derived/occurrence uids, m3ter holds exactly what the summary says."""
    m3ter_emulator.reset()
    rows = []
    for content, kind in spec:
        row = dict(ROW_A, measure={"x": content})
        if kind == "derived0":
            row["uid"] = derive_uid("ns", ROW_A)
        elif kind == "derived1":
            row["uid"] = derive_uid("ns", ROW_A, 1)
        elif kind == "plain":
            row["uid"] = "u-1"
        rows.append(row)
    summary = _ingest(client_factory(), rows, deduplicate=deduplicate)
    stored = m3ter_emulator.measurements()
    assert summary.read == summary.valid + summary.invalid
    assert summary.sent == summary.valid - summary.deduplicated == len(stored)
    assert len({m["uid"] for m in stored}) == len(stored)


# --- 9. code twins: ASCII by default, best-effort checks with unicode_codes=True -----------------

REVIEW_TWINS = {
    "acme\u2800": "invisible",  # Braille pattern blank
    "\u0251cme": "phonetic",  # Latin alpha
    "\u1d00\u1d04\u1d0d\u1d07": "phonetic",  # small capitals
    "pay\u01c0": "phonetic",  # dental click, looks like l
    "\u13aa\u13f4\u13df": "look-alikes",  # Cherokee
    "\ua4ee\ua4d0\ua4da": "look-alikes",  # Lisu
    "\u0475\u043e\u0456\u0441\u0435": "look like Latin",  # Cyrillic izhitsa
    "\u0570\u0585\u0574": "look-alikes",  # Armenian
    "\u2c9f\u2c9f": "look-alikes",  # Coptic
    "\u30a8\u5834": "Katakana",  # エ場 for 工場
    "acme\u0331": "combining mark",
    "acme\ufffc": "invisible",  # object replacement
    "acme\U0001d159": "invisible",  # musical null notehead
}


@pytest.mark.parametrize("code", list(REVIEW_TWINS))
def test_review_twins_are_refused_by_default_and_with_unicode_codes(code):
    for field in ("account", "meter"):
        (problem,) = validate_measurement({**ROW_A, field: code})
        assert "is not printable ASCII" in problem.reason
        (problem,) = validate_measurement({**ROW_A, field: code}, unicode_codes=True)
        assert problem.field == field
        assert REVIEW_TWINS[code] in problem.reason, problem.reason


@pytest.mark.parametrize("code", ["acme", "Acme Corp. #7", "a-b_c/d:e@f", "~!"])
def test_printable_ascii_codes_pass_by_default(code):
    assert validate_measurement({**ROW_A, "account": code, "meter": code}) == []


def test_unicode_codes_is_an_opt_in_of_the_run(client_factory, m3ter_emulator):
    rows = [dict(ROW_A, account="M\u00fcller GmbH"), dict(ROW_A, account="\u5de5\u5834")]
    summary = IngestRun(client_factory(), namespace="ns", on_invalid="skip").run_measurements(rows)
    assert (summary.invalid, summary.sent) == (2, 0)
    summary = IngestRun(client_factory(), namespace="ns", unicode_codes=True).run_measurements(rows)
    assert (summary.invalid, summary.sent) == (0, 2)
    assert sorted(m["account"] for m in m3ter_emulator.measurements()) == ["M\u00fcller GmbH", "\u5de5\u5834"]
