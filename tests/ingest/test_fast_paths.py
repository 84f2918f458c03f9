"""Every fast path of the ingest hot path gives what its careful path gives, on tricky inputs.

The fast paths (issue 9's CPU targets): JSON Lines read a block at a time with a key count proving
that no key repeats; a batch check of many measurements at once; the run totals counted a batch at
a time; many records encoded at once; the garbage collector paused while a batch is held. Each test
here compares a fast path with the slow one it stands for, on inputs made to trip it.
"""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_m3ter.client.encoding import UidDeriver
from airflow_provider_m3ter.client.ingest import IngestRun
from airflow_provider_m3ter.client.measurements import (
    NotANumber,
    RowColumns,
    RowError,
    all_certainly_valid,
    certainly_valid,
    validate_measurement,
)
from airflow_provider_m3ter.client.run_totals import RunLedger
from airflow_provider_m3ter.operators import sources
from airflow_provider_m3ter.operators.sources import DuplicateKeyError, FileSource, loads_strict

M = {"meter": "api", "account": "acme", "ts": "2024-05-01T00:00:00Z", "measure": {"n": 1, "gb": 0.5}}


def careful(line: str) -> Any:
    """What the careful path makes of one JSON Lines line (the reference)."""
    try:
        return loads_strict(line)
    except DuplicateKeyError as exc:
        return ("duplicate", exc.key)
    except ValueError:
        return ("invalid",)


def as_reference(item: Any) -> Any:
    if isinstance(item, RowError):
        if "appears more than once" in item.reason:
            return ("duplicate", item.field)
        return ("invalid",)
    return item


def read_lines(tmp_path: Path, lines: list[str], name: str = "rows.jsonl") -> list[Any]:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [as_reference(item) for _row, _line, item in FileSource(path).rows()]


# --- the duplicate-key proof of JSON Lines --------------------------------------------------------

TRICKY_LINES = [
    # a repeated key at the top, written plainly and with escapes that decode to the same key
    '{"meter":"m1","meter":"m2","account":"a","ts":"2024-05-01T00:00:00Z"}',
    '{"a\\u0022":1,"a\\"":2,"meter":"m","account":"a","ts":"t"}',
    '{"\\u0061":1,"a":2}',
    # repeated inside a category and deeper than the second level
    '{"meter":"m","account":"a","ts":"t","measure":{"x":1,"x":2}}',
    '{"meter":"m","other":{"deep":{"k":1,"k":2}}}',
    '{"meter":"m","list":[{"k":1,"k":2}]}',
    # strings holding the very text the count looks for (they make the count larger, never equal)
    '{"meter":"m\\":","account":"a","ts":"t"}',
    '{"meter":"m","meter":"m\\":x"}',
    '{"k":"\\":","k":1}',
    # whitespace before a colon (the count cannot see these keys): the full test runs
    '{"meter" :"m1","meter":"m2"}',
    '{"meter"\t:"m","account":"a"}',
    '{"meter":"m","measure":{"x" :1,"x":2}}',
    # a key repeated with a category as its value, and an object where a string was before
    '{"meter":"m","measure":{"x":1},"measure":{"y":2}}',
    '{"meter":"m","measure":"ab","who":{"u":"v"}}',
    '{"meter":"m","measure":"a","meter":"n"}',
    # lines that are no object at all
    "[1,2]",
    '"text"',
    "5",
    "null",
    # valid rows laid out differently from the one before
    '{"meter":"m","account":"a","ts":"t"}',
    '{"ts":"t","measure":{"x":1},"account":"a","meter":"m"}',
    '{"meter":"m","account":"a","ts":"t","measure":{}}',
    '{"meter":"m","account":"a","ts":"t","measure":{"x":1},"who":{"u":"\\":"}}',
]


def test_tricky_lines_read_as_the_careful_path_reads_them(tmp_path: Path) -> None:
    # each line after a line that teaches the fast count a layout, so the count is tried on it
    lines = []
    for line in TRICKY_LINES:
        lines += [json.dumps(M, separators=(",", ":")), line]
    got = read_lines(tmp_path, lines)
    assert got == [careful(line) for line in lines]
    duplicates = [item for item in got if isinstance(item, tuple) and item[0] == "duplicate"]
    assert len(duplicates) == 12


def test_whitespace_before_a_colon_anywhere_in_a_block_still_finds_every_repeat(tmp_path: Path) -> None:
    lines = ['{"meter" : "m", "account" : "a"}', '{"meter":"m1","meter":"m2"}', '{"k":{"x":1,"x":2}}']
    assert read_lines(tmp_path, lines) == [careful(line) for line in lines]


json_keys = st.sampled_from(["a", "b", "meter", 'a"', "a\\", "\u00e9", "x:y", '":'])
json_scalars = st.one_of(st.integers(-5, 5), st.sampled_from(['":', '"', "\\", "a", ":", " :"]), st.none())


@st.composite
def json_object_text(draw: Any, depth: int = 0) -> str:
    """A JSON object's text that may repeat keys, with escapes and whitespace chosen at random."""
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        key = json.dumps(draw(json_keys), ensure_ascii=draw(st.booleans()))
        if draw(st.booleans()):
            key = key.replace('\\"', "\\u0022")
        if depth < 2 and draw(st.integers(0, 3)) == 0:
            value = draw(json_object_text(depth + 1))
        else:
            value = json.dumps(draw(json_scalars))
        colon = draw(st.sampled_from([":", ":", ":", " :", ": "]))
        parts.append(key + colon + value)
    return "{" + ",".join(parts) + "}"


@given(st.lists(json_object_text(), min_size=1, max_size=8))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_generated_lines_read_as_the_careful_path_reads_them(tmp_path: Path, lines: list[str]) -> None:
    assert read_lines(tmp_path, lines, "generated.jsonl") == [careful(line) for line in lines]


def test_blocks_lines_longer_than_a_block_bad_utf8_bom_and_blanks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sources, "_CHUNK", 64)  # many blocks, and lines that span several of them
    long = dict(M, who={"note": "x" * 300})
    body = (
        b"\xef\xbb\xbf"
        + json.dumps(M).encode()
        + b"\r\n"
        + b"\n"
        + json.dumps(long).encode()
        + b"\n"
        + b'{"meter":"m","meter":"n"}\n'
        + "\u00a0\n".encode()  # not blank for bytes.strip(): a row error, as before
        + b'{"meter":"\xff"}\n'  # not UTF-8: its block is read line by line
        + b'{"k":{"x":1,"x":2}}\n'
        + json.dumps(M).encode()  # no line break at the end
    )
    path = tmp_path / "odd.jsonl"
    path.write_bytes(body)
    got = list(FileSource(path).rows())
    assert [(row, line) for row, line, _item in got] == [
        (1, 1),
        (2, 3),
        (3, 4),
        (4, 5),
        (5, 6),
        (6, 7),
        (7, 8),
    ]
    assert got[0][2] == M
    assert got[1][2] == long
    assert got[6][2] == M
    errors = {row: item for row, _line, item in got if isinstance(item, RowError)}
    assert errors[3].field == "meter"
    assert "more than once" in errors[3].reason
    assert errors[4].reason.startswith("not valid JSON")
    assert errors[5].reason == "not valid utf-8 text at byte 11"
    assert errors[6].field == "x"


# --- the batch check -------------------------------------------------------------------------------

row_values = st.one_of(
    st.integers(-(2**54), 2**54),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(["", "a", "x" * 300, "\ud800", "é", "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z"]),
)
codes = st.sampled_from(["api", "acme", " acme", "acme\u200b", "", "x" * 81, "a\x00"])
stamps = st.sampled_from(
    [
        "2024-05-01T00:00:00Z",
        "2024-05-31T23:59:59.123Z",
        "2024-04-31T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2024-02-29T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T00:00:00+01:00",
        "2024-05-01T00:00:00+05:30",
        "2024-05-01 00:00:00Z",
        "\uff12\uff10\uff12\uff14-05-01T00:00:00Z",
    ]
)


@st.composite
def measurement(draw: Any) -> Any:
    m: dict[str, Any] = {
        "meter": draw(st.one_of(codes, st.just(NotANumber("1e999", "too large")), st.integers())),
        "account": draw(codes),
        "ts": draw(stamps),
    }
    for name in draw(st.lists(st.sampled_from(["measure", "cost", "who", "metadata", "ets", "uid", "bad"]))):
        if name == "ets":
            m[name] = draw(stamps)
        elif name == "uid":
            m[name] = draw(st.sampled_from(["u1", "", "x" * 51, "a\nb", 5]))
        else:
            keys = st.sampled_from(["n", "gb", "1x", "é", "$k", ""])
            m[name] = draw(st.dictionaries(keys, row_values, max_size=3))
    return m if draw(st.integers(0, 9)) else draw(st.sampled_from([[m], None, "row"]))


@given(st.lists(measurement(), min_size=1, max_size=6), st.booleans())
@settings(max_examples=400, deadline=None)
def test_the_batch_check_never_passes_a_row_the_row_check_refuses(
    items: list[Any], unicode_codes: bool
) -> None:
    # teach the code caches what the full check accepts, as a run does before the batch check
    for m in items:
        validate_measurement(m, unicode_codes)
    batch = all_certainly_valid(items, unicode_codes)
    each = [type(m) is dict and certainly_valid(m, unicode_codes) for m in items]
    if batch:
        assert all(each)
        assert not any(validate_measurement(m, unicode_codes) for m in items)


def test_the_batch_check_refuses_each_kind_of_bad_value_in_one_row_of_many() -> None:
    good = [dict(M, account=f"acct-{i}") for i in range(50)]
    for m in good:
        validate_measurement(m)
    assert all_certainly_valid(good)
    bad_values: list[Any] = [
        {"measure": {"n": math.nan, "gb": 0.5}},
        {"measure": {"n": math.inf, "gb": 0.5}},
        {"measure": {"n": 2**53 + 1, "gb": 0.5}},
        {"measure": {"n": True, "gb": 0.5}},
        {"measure": {"n": NotANumber("1e-400", "too small"), "gb": 0.5}},
        {"measure": {"n": "1", "gb": 0.5}},
        {"measure": {"n": 1, "bad key": 0.5}},
        {"measure": [1]},
        {"meter": NotANumber("1e999", "too large")},
        {"account": "acct-1 "},
        {"ts": "2024-02-30T00:00:00Z"},
        {"ts": "2024-05-01T00:00:00"},
        {"who": {"u": "\udc00"}},
        {"extra": 1},
    ]
    for change in bad_values:
        rows = [dict(m) for m in good]
        rows[37] = {**rows[37], **change}
        assert not certainly_valid(rows[37])
        assert not all_certainly_valid(rows), change


# --- run totals a batch at a time --------------------------------------------------------------


def ledger_state(ledger: RunLedger, count: int) -> tuple[Any, ...]:
    return (list(ledger.raw_shapes()), ledger.totals(), [ledger.position(i) for i in range(count)])


@st.composite
def observed_rows(draw: Any) -> list[tuple[int, int | None, dict[str, Any]]]:
    rows = []
    row, line = draw(st.integers(1, 5)), draw(st.one_of(st.none(), st.integers(1, 5)))
    for _ in range(draw(st.integers(1, 30))):
        m: dict[str, Any] = {
            "meter": draw(st.sampled_from(["m", "n"])),
            "account": draw(st.sampled_from("abc")),
        }
        if draw(st.booleans()):
            m["uid"] = "u"
        m["ts"] = "t"
        names = draw(st.permutations(["measure", "cost", "who"]))[: draw(st.integers(0, 3))]
        for name in names:
            fields = draw(st.permutations(["x", "y", "z"]))[: draw(st.integers(0, 3))]
            value = st.sampled_from([1, 0.1, 2**52, -0.3, 1e-300]) if name != "who" else st.just("v")
            m[name] = {field: draw(value) for field in fields}
        rows.append((row, line, m))
        row += draw(st.sampled_from([1, 1, 1, 2]))
        if line is not None:
            line += draw(st.sampled_from([1, 1, 3]))
    return rows


@given(observed_rows(), st.integers(1, 12))
@settings(max_examples=300, deadline=None)
def test_run_totals_a_batch_at_a_time_equal_a_row_at_a_time(rows: list[Any], size: int) -> None:
    one, many, shared = RunLedger(), RunLedger(), RunLedger()
    for row, line, m in rows:
        one.observe(m, row, line)
    for start in range(0, len(rows), size):
        batch = rows[start : start + size]
        many.observe_many(batch)
        columns = RowColumns([m for _row, _line, m in batch])
        if len({tuple(m) for m in columns.items}) == 1:
            columns.layout = tuple(columns.items[0])
        shared.observe_many(batch, columns)
    expected = ledger_state(one, len(rows))
    assert ledger_state(many, len(rows)) == expected
    assert ledger_state(shared, len(rows)) == expected


def test_run_totals_add_floats_in_source_order() -> None:
    # 0.1 + 0.2 + 0.3 differs from 0.3 + 0.2 + 0.1 in the last bit: the order is the source's
    rows = [
        (i + 1, i + 1, {"meter": "m", "account": "a", "ts": "t", "measure": {"x": x}})
        for i, x in enumerate([0.1, 0.2, 0.3, 1e16, 1.0, -1e16])
    ]
    one, many = RunLedger(), RunLedger()
    for row, line, m in rows:
        one.observe(m, row, line)
    many.observe_many(rows)
    total = 0.0
    for _row, _line, m in rows:
        total += m["measure"]["x"]
    assert many.totals() == one.totals() == {"m": {"a": {"measurements": 6, "measure.x": [total, 6]}}}


# --- many records encoded at once ---------------------------------------------------------------


@given(
    st.lists(
        st.dictionaries(
            st.text(max_size=3),
            st.one_of(
                st.integers(),
                st.floats(allow_nan=False, allow_infinity=False),
                st.text(max_size=5),
                st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
            ),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=5,
    )
)
@settings(max_examples=200, deadline=None)
def test_encoding_many_gives_the_bytes_and_digests_of_one_at_a_time(items: list[dict[str, Any]]) -> None:
    items = [{k: v for k, v in m.items() if k != "uid"} or {"a": 1} for m in items]
    deriver = UidDeriver("ns")
    records, digests = deriver.encode_derived_many(items)
    assert list(zip(records, digests, strict=True)) == [deriver.encode_derived(m) for m in items]


# --- the whole run: batches against rows one by one, and the garbage collector ----------------------


class Recorder:
    stats = None

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def submit_measurements(self, body: bytes) -> None:
        self.bodies.append(body)


def run_rows(rows: list[Any], tmp_path: Path, **kwargs: Any) -> tuple[Any, list[bytes]]:
    client = Recorder()
    tmp_path.mkdir(exist_ok=True)
    run = IngestRun(
        client,
        namespace="fast",
        spill_dir=str(tmp_path),
        on_invalid="skip",
        dead_letter_path=str(tmp_path / "dead.jsonl"),
        **kwargs,
    )
    summary = run.run_measurements(rows)
    return summary, client.bodies


def test_a_run_in_batches_sends_and_reports_what_rows_one_by_one_do(tmp_path: Path, monkeypatch) -> None:
    from airflow_provider_m3ter.client import ingest

    rows: list[Any] = []
    for i in range(700):
        m = dict(M, account=f"acct-{i % 13}", ts=f"2024-05-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z")
        if i % 97 == 5:
            m["measure"] = {"n": math.nan}  # invalid
        if i % 50 == 7:
            m = dict(M)  # identical rows
        if i % 111 == 3:
            m["uid"] = "given-uid"  # an explicit uid repeated (same content or not)
        if i % 89 == 1:
            m = {
                "ts": m["ts"],
                "account": "late",
                "meter": "api",
                "measure": {"gb": 1, "n": 2},
            }  # other layout
        rows.append(m)
    batched = run_rows(rows, tmp_path / "a", max_batch_count=100)
    monkeypatch.setattr(ingest, "_CHUNK_ROWS", 1)
    monkeypatch.setattr(ingest, "all_certainly_valid", lambda items, unicode_codes=False, columns=None: False)
    single = run_rows(rows, tmp_path / "b", max_batch_count=100)
    assert batched[1] == single[1]
    same = {"duration_seconds": 0, "dead_letter_path": ""}
    assert batched[0].as_dict() | same == single[0].as_dict() | same
    assert batched[0].invalid == 15  # 8 with a NaN, 7 with a given uid repeated with other content
    dead = [(tmp_path / part / "dead.jsonl").read_text() for part in ("a", "b")]
    assert dead[0] == dead[1]
    assert dead[0].count("\n") == 15


def test_the_garbage_collector_runs_again_after_a_run_and_stays_off_if_it_was(tmp_path: Path) -> None:
    assert gc.isenabled()
    run_rows([M] * 3000, tmp_path / "a")
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        run_rows(
            (M if i < 2000 else (_ for _ in ()).throw(RuntimeError("source broke")) for i in range(3000)),
            tmp_path / "b",
        )
    assert gc.isenabled()
    gc.disable()
    try:
        run_rows([M] * 1500, tmp_path / "c")
        assert not gc.isenabled()
    finally:
        gc.enable()


# --- rows laid out alike encoded through one template ----------------------------------------------

template_strings = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6
) | st.sampled_from(["%s", "%", '"', "\\", "\x00", "\u2028", "\ud800", "é", "\U0001f600"])
template_numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 1e16, 1e-7, 5e-324, 2.0**53, 0.1, 10**400]),
)


@st.composite
def rows_laid_out_alike(draw: Any) -> list[dict[str, Any]]:
    top = draw(
        st.lists(st.sampled_from(["meter", "account", "ts", "b%s", 'q"', "z", "é"]), unique=True, min_size=1)
    )
    maps = draw(st.lists(st.sampled_from(["measure", "who", "a", "%d"]), unique=True))
    inner = {name: draw(st.lists(st.sampled_from(["x", "y", "%", "Z", "ä"]), unique=True)) for name in maps}
    kinds = {name: draw(st.sampled_from(["str", "num", "mixed"])) for name in [*top, *maps]}
    order = draw(st.permutations([*top, *maps]))

    def value(kind: str) -> Any:
        if kind == "str":
            return draw(template_strings)
        if kind == "num":
            return draw(template_numbers)
        return draw(st.one_of(template_strings, template_numbers, st.none(), st.booleans()))

    rows = []
    for _ in range(draw(st.integers(1, 6))):
        row = {}
        for key in order:
            if key in inner:
                row[key] = {field: value(kinds[key]) for field in inner[key]}
            else:
                row[key] = value(kinds[key])
        rows.append(row)
    return rows


@given(rows_laid_out_alike())
@settings(max_examples=400, deadline=None)
def test_the_template_writes_what_the_canonical_encoder_writes(rows: list[dict[str, Any]]) -> None:
    from airflow_provider_m3ter.client.encoding import canonical_by_template, encode

    columns = RowColumns(rows)
    columns.layout = tuple(rows[0])
    texts = canonical_by_template(columns)
    if texts is not None:
        assert [text.encode("ascii") for text in texts] == [encode(m) for m in rows]
    deriver = UidDeriver("ns")
    records, digests = deriver.encode_derived_many(rows, columns)
    assert list(zip(records, digests, strict=True)) == [deriver.encode_derived(m) for m in rows]


def test_the_template_takes_plain_rows_and_refuses_what_it_cannot_write() -> None:
    from airflow_provider_m3ter.client.encoding import canonical_by_template, encode

    rows = [dict(M, account=f"a{i}", who={"u": f"\u00e9{i}%s"}) for i in range(5)]
    columns = RowColumns(rows)
    columns.layout = tuple(rows[0])
    texts = canonical_by_template(columns)
    assert texts is not None
    assert [text.encode() for text in texts] == [encode(m) for m in rows]
    refused: list[dict[str, Any]] = [
        {"measure": {"n": math.nan, "gb": 1}},
        {"measure": {"n": 1}},
        {"measure": "x"},
        {"account": None},
        {"account": True},
        {"measure": {"n": 10**400, "gb": 0.5}, "who": {"u": 1.5}},
    ]
    for change in refused:
        odd = [dict(m) for m in rows]
        odd[3] = {**odd[3], **change}
        columns = RowColumns(odd)
        columns.layout = tuple(odd[0])
        assert canonical_by_template(columns) is None, change


def test_a_number_is_no_code_even_when_its_text_is_a_code_seen_before() -> None:
    # JSON 1e999 is read as NotANumber("1e999"), a str subclass equal to the string "1e999": once
    # "1e999" passed as a code, the quick check must not take the number for it (it used to)
    row = dict(M, meter="1e999")
    assert validate_measurement(row) == []
    number = dict(M, meter=NotANumber("1e999", "too large for a 64-bit floating-point number"))
    assert not certainly_valid(number)
    assert not all_certainly_valid([row, number])
    assert [problem.field for problem in validate_measurement(number)] == ["meter"]


# --- a second review (brk9): inputs that made the fast paths disagree with the careful ones -------


def test_a_generator_that_reuses_its_row_dict_stores_each_row_as_yielded(
    client_factory, m3ter_emulator, tmp_path
):
    # rows are held 1,024 at a time before they are encoded: a generator that changes the dict it
    # yielded had every row stored as the last one (five rows, one value, four "identical" repeats)
    def usage() -> Any:
        m: dict[str, Any] = {"meter": "api", "account": "acme", "ts": "2024-05-01T00:00:00Z", "measure": {}}
        for i in range(5):
            m["measure"]["n"] = i
            m["account"] = f"acct-{i % 2}"
            yield m

    client = client_factory()
    run = IngestRun(client, namespace="gen", spill_dir=str(tmp_path), on_invalid="fail")
    summary = run.run_measurements(usage())
    stored = sorted((m["account"], m["measure"]["n"]) for m in m3ter_emulator.measurements())
    assert stored == [("acct-0", 0), ("acct-0", 2), ("acct-0", 4), ("acct-1", 1), ("acct-1", 3)]
    assert summary.identical == 0
    expected = {"meter": "api", "ts": "2024-05-01T00:00:00Z"}
    uids = {m["uid"] for m in m3ter_emulator.measurements()}
    assert uids == {
        UidDeriver("gen").uid(dict(expected, account=f"acct-{i % 2}", measure={"n": i})) for i in range(5)
    }
    # the same through the operator's source for inline measurements
    m3ter_emulator.reset()
    run = IngestRun(client, namespace="gen", spill_dir=str(tmp_path), on_invalid="fail")
    run.run(sources.IterableSource(usage()).rows())
    assert sorted(m["measure"]["n"] for m in m3ter_emulator.measurements()) == [0, 1, 2, 3, 4]


def test_an_array_line_hiding_a_repeated_key_is_refused_for_the_repeat(tmp_path: Path) -> None:
    # len() of an array counts its elements: two elements, two '":' -- the count "proved" no repeat
    # when no earlier line had taught it a layout with category objects
    lines = ['[{"meter":"m","meter":"x"},1]', '{"meter":"m","account":"a","ts":"t"}', '[{"k":1,"k":2},{}]']
    got = read_lines(tmp_path, lines)
    assert got == [careful(line) for line in lines]
    assert got[0] == ("duplicate", "meter")
    assert got[2] == ("duplicate", "k")


@pytest.mark.parametrize("tail", ["\u00a0", "\x1c", "\x1f", "\u2028", "\u3000", "\x85", "\x0b", "\x0c"])
@pytest.mark.parametrize("block", [True, False])
def test_only_json_whitespace_may_follow_a_json_lines_value(tmp_path: Path, tail: str, block: bool) -> None:
    # str.strip() strips these; JSON (and the careful decoder) does not: the row was stored or
    # refused depending on whether it also had a space before a colon
    plain = json.dumps(M, separators=(",", ":")) + tail
    spaced = json.dumps(M, separators=(" ,", " : ")) + tail
    path = tmp_path / "tail.jsonl"
    # a UTF-16 file is read line by line (the other path), UTF-8 a block at a time
    encoding = "utf-8" if block else "utf-16"
    path.write_text(plain + "\n" + spaced + "\n", encoding=encoding)
    got = [item for _row, _line, item in FileSource(path, encoding=encoding).rows()]
    assert [type(item) for item in got] == [RowError, RowError]
    assert all("Extra data" in item.reason for item in got)


@pytest.mark.parametrize("block", [True, False])
def test_objects_nested_past_the_recursion_limit_are_a_row_error(tmp_path: Path, block: bool) -> None:
    # the C scanner raises RecursionError (not ValueError): the whole read failed instead of one row
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    encoding = "utf-8" if block else "utf-16"
    path = tmp_path / "deep.jsonl"
    path.write_text(deep + "\n" + json.dumps(M) + "\n", encoding=encoding)
    got = [item for _row, _line, item in FileSource(path, encoding=encoding).rows()]
    assert isinstance(got[0], RowError)
    assert "nest deeper" in got[0].reason
    assert got[1] == M
