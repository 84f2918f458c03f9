"""Exact ingest (issue 9): every source row is stored once or reported, on the inputs that broke it.

Each test names the failing input it covers; the inputs go through the real sources and a real
IngestRun against the emulator.
"""

from __future__ import annotations

import codecs
import json
import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_m3ter.client.encoding import derive_uid
from airflow_provider_m3ter.client.ingest import IngestRun
from airflow_provider_m3ter.client.ingest_progress import InvalidMeasurementsError
from airflow_provider_m3ter.client.measurements import RowError, validate_measurement
from airflow_provider_m3ter.operators.mapping import RowMapping, SourceError
from airflow_provider_m3ter.operators.sources import FileSource, IterableSource

NOW = datetime(2024, 5, 20, tzinfo=timezone.utc)
ROW = {"meter": "m", "account": "a", "ts": "2024-05-01T00:00:01Z", "measure": {"requests": 1}}


def run(client: Any, source: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("namespace", "exact")
    kwargs.setdefault("now", lambda: NOW)
    return IngestRun(client, **kwargs).run(source.rows(), source.name)


def uids(emulator: Any) -> list[str]:
    return sorted(m["uid"] for m in emulator.measurements())


# --- 1. identical rows ---------------------------------------------------------------------------


def test_identical_rows_are_each_stored_with_stable_distinct_uids(m3ter_emulator, client_factory) -> None:
    data = [dict(ROW) for _ in range(3)] + [{**ROW, "account": "b"}]
    summary = run(client_factory(), IterableSource(data))
    assert (summary.read, summary.valid, summary.identical, summary.deduplicated) == (4, 4, 2, 0)
    assert summary.sent == 4
    stored = m3ter_emulator.measurements()
    assert len(stored) == 4
    assert m3ter_emulator.stats()["duplicates_received"] == 0
    expected = sorted(
        [derive_uid("exact", ROW, k) for k in range(3)] + [derive_uid("exact", {**ROW, "account": "b"})]
    )
    assert uids(m3ter_emulator) == expected
    assert all({k: m[k] for k in ROW} in (ROW, {**ROW, "account": "b"}) for m in stored)
    # a rerun and a reordered source give the same uids: nothing new is stored
    run(client_factory(), IterableSource(list(reversed(data))))
    run(client_factory(), IterableSource(data))
    assert m3ter_emulator.stats()["measurements_stored"] == 4


def test_a_reordered_source_gives_the_same_multiset_of_uids(m3ter_emulator, client_factory) -> None:
    rng = random.Random(9)
    data = [
        {**ROW, "account": f"a{rng.randrange(5)}", "measure": {"n": rng.randrange(3)}} for _ in range(3000)
    ]
    run(client_factory(), IterableSource(data))
    first = uids(m3ter_emulator)
    assert len(first) == len(set(first)) == 3000
    m3ter_emulator.reset()
    shuffled = data[:]
    rng.shuffle(shuffled)
    summary = run(client_factory(), IterableSource(shuffled))
    assert uids(m3ter_emulator) == first
    assert summary.identical == 3000 - len({json.dumps(m, sort_keys=True) for m in data})


def test_deduplicate_sends_each_distinct_row_once(m3ter_emulator, client_factory) -> None:
    data = [dict(ROW) for _ in range(3)] + [{**ROW, "account": "b"}] * 2
    summary = run(client_factory(), IterableSource(data), deduplicate=True)
    assert (summary.read, summary.valid, summary.identical, summary.deduplicated, summary.sent) == (
        5,
        5,
        3,
        3,
        2,
    )
    assert uids(m3ter_emulator) == sorted(
        [derive_uid("exact", ROW), derive_uid("exact", {**ROW, "account": "b"})]
    )
    assert m3ter_emulator.stats()["measurements_received"] == 2


def test_an_explicit_uid_repeated_with_other_content_is_a_row_error(m3ter_emulator, client_factory) -> None:
    data = [
        {**ROW, "uid": "u-1"},
        {**ROW, "uid": "u-2"},
        {**ROW, "uid": "u-1", "measure": {"requests": 2}},  # same uid, other content: ambiguous
        {**ROW, "uid": "u-2"},  # same uid, same content: one measurement
    ]
    with pytest.raises(InvalidMeasurementsError) as failed:
        run(client_factory(), IterableSource(data))
    assert m3ter_emulator.stats()["ingest_requests"] == 0
    assert sorted((e.row, e.field) for e in failed.value.errors) == [(1, "uid"), (3, "uid")]
    assert (
        "uid 'u-1' is carried by 2 rows of this source (given, or derived from a row's content) "
        "with different content" in str(failed.value)
    )

    summary = run(client_factory(), IterableSource(data), on_invalid="skip", dead_letter_path=None)
    assert (summary.invalid, summary.identical, summary.deduplicated, summary.sent) == (2, 1, 1, 1)
    assert [m["uid"] for m in m3ter_emulator.measurements()] == ["u-2"]
    letters = [json.loads(line) for line in Path(summary.dead_letter_path).read_text().splitlines()]
    assert sorted((d["row"], d["data"]["measure"]["requests"]) for d in letters) == [(1, 1), (3, 2)]


def test_identical_row_bookkeeping_scales_with_repeats_not_rows(m3ter_emulator, client_factory) -> None:
    # 20,000 copies of one row and 20,000 distinct rows, interleaved
    data: list[dict] = []
    for i in range(20_000):
        data.append(dict(ROW))
        data.append({**ROW, "measure": {"requests": i + 2}})
    summary = run(client_factory(), IterableSource(data))
    assert (summary.identical, summary.sent) == (19_999, 40_000)
    stored = uids(m3ter_emulator)
    assert len(stored) == len(set(stored)) == 40_000


# --- 2, 3. CSV structure and field size --------------------------------------------------------


def _csv(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "usage.csv"
    path.write_text("meter,account,ts,measure.n,what.note\n" + "".join(line + "\n" for line in lines))
    return path


def test_an_unclosed_quote_fails_the_load_before_anything_is_sent(
    m3ter_emulator, client_factory, tmp_path
) -> None:
    lines = [f"m,a,2024-05-01T00:00:{i % 60:02d}Z,{i},n{i}" for i in range(1000)]
    lines[1] = 'm,a,2024-05-01T00:00:01Z,1,"n1 stray quote'
    path = _csv(tmp_path, lines)
    with pytest.raises(SourceError) as failed:
        run(client_factory(), FileSource(path), on_invalid="skip")
    message = str(failed.value)
    assert str(path) in message
    assert "line 3" in message
    assert "not closed" in message
    assert m3ter_emulator.stats()["ingest_requests"] == 0


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ('m,a,2024-05-01T00:00:01Z,1,"n1" stray', "',' expected after '\"'"),  # text after a closing quote
        ('m,a,2024-05-01T00:00:01Z,1,"two\nm,a,2024-05-01T00:00:02Z,2,x"', "spans lines 3-4"),  # rows merged
    ],
)
def test_other_structural_breaks_fail_the_load(
    m3ter_emulator, client_factory, tmp_path, broken, reason
) -> None:
    path = _csv(tmp_path, ["m,a,2024-05-01T00:00:00Z,0,x", broken, "m,a,2024-05-01T00:00:03Z,3,y"])
    with pytest.raises(SourceError, match="line 3") as failed:
        run(client_factory(), FileSource(path), on_invalid="skip")
    assert reason in str(failed.value)
    assert m3ter_emulator.stats()["ingest_requests"] == 0


def test_csv_fields_up_to_the_request_limit_load_and_larger_ones_are_row_errors(
    m3ter_emulator, client_factory, tmp_path
) -> None:
    big, too_big = "x" * 200_000, "y" * 600_000  # over the csv module's default 131,072; over m3ter's limit
    path = _csv(
        tmp_path,
        [
            "m,a,2024-05-01T00:00:00Z,1," + big,
            "m,a,2024-05-01T00:00:01Z,2," + too_big,
            "m,a,2024-05-01T00:00:02Z,3,z",
        ],
    )
    summary = run(client_factory(), FileSource(path), on_invalid="skip")
    assert (summary.read, summary.invalid, summary.sent) == (3, 1, 2)
    stored = {m["measure"]["n"]: m for m in m3ter_emulator.measurements()}
    assert stored[1]["what"]["note"] == big
    assert set(stored) == {1, 3}
    letter = json.loads(Path(summary.dead_letter_path).read_text())
    assert (letter["row"], letter["line"]) == (2, 3)
    assert "512,000" in letter["errors"][0]["reason"]


# --- 4. duplicate keys ---------------------------------------------------------------------------


DUPLICATES = [
    ('{"meter":"m1","meter":"m2","account":"a","ts":"2024-05-01T00:00:00Z"}', "meter"),
    ('{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","measure":{"x":1,"x":2}}', "x"),
    ('{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","who":{"u":"1"},"who":{"u":"2"}}', "who"),
    # a string holding '":' (or its \u0022 escape) does not hide a repeated key
    ('{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","who":{"u":"x\\":","u":"y"}}', "u"),
    ('{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","who":{"u":"x\\u0022:","u":"y"}}', "u"),
    # deeper than a measurement goes
    ('{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","measure":{"x":{"y":1,"y":2}}}', "y"),
    # spaces around the colon
    ('{"meter" : "m", "account" : "a", "meter" : "n", "ts" : "2024-05-01T00:00:00Z"}', "meter"),
]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_duplicate_keys_at_any_depth_are_row_errors(m3ter_emulator, client_factory, tmp_path, fmt) -> None:
    good = '{"meter":"m","account":"a","ts":"2024-05-01T00:00:09Z"}'
    texts = [good] + [text for text, _ in DUPLICATES] + [good.replace("09Z", "10Z")]
    path = tmp_path / f"usage.{fmt}"
    path.write_text("\n".join(texts) + "\n" if fmt == "jsonl" else "[\n" + ",\n".join(texts) + "\n]\n")
    summary = run(client_factory(), FileSource(path), on_invalid="skip")
    assert (summary.read, summary.invalid, summary.sent) == (2 + len(DUPLICATES), len(DUPLICATES), 2)
    letters = [json.loads(line) for line in Path(summary.dead_letter_path).read_text().splitlines()]
    assert [(d["row"], d["errors"][0]["field"]) for d in letters] == [
        (row, key) for row, (_text, key) in enumerate(DUPLICATES, start=2)
    ]
    assert all("appears more than once" in d["errors"][0]["reason"] for d in letters)


def test_duplicate_keys_in_an_inline_json_string_are_refused() -> None:
    from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator

    operator = M3terIngestMeasurementsOperator(task_id="t", measurements="[" + DUPLICATES[1][0] + "]")
    with pytest.raises(SourceError, match="'x' appears more than once"):
        operator.build_source()


# --- 5. codes that look alike ----------------------------------------------------------------------

TWINS = {
    "acme\u200b": "ZERO WIDTH SPACE",
    "acme\u200d": "ZERO WIDTH JOINER",
    "\ufeffacme": "ZERO WIDTH NO-BREAK SPACE",
    "acme\u00ad": "SOFT HYPHEN",
    "ac\u202eme": "RIGHT-TO-LEFT OVERRIDE",
    "acme\ufe0f": "VARIATION SELECTOR-16",
    "acme\u2060": "WORD JOINER",
    "acme\u3164x": "HANGUL FILLER",
    "acme\u00a0ltd": "NO-BREAK SPACE",
    "acme\u2028x": "LINE SEPARATOR",
    "acme\ue000": "U+E000",  # private use
    "\uff41\uff43\uff4d\uff45": "NFKC",  # fullwidth acme
    "acme\ufb01": "NFKC",  # the fi ligature
    "cafe\u0301": "NFKC",  # decomposed accent
    "\u0430cme": "several scripts",  # Cyrillic a + Latin cme
    "\u0430\u0441\u0435": "look like Latin",  # ace, all Cyrillic
    "\u039f\u039a": "look like Latin",  # OK in Greek capitals
}


@pytest.mark.parametrize("code", list(TWINS))
def test_codes_that_render_invisibly_or_as_twins_are_refused(code: str) -> None:
    for field in ("account", "meter"):
        problems = validate_measurement({**ROW, field: code}, unicode_codes=True)
        assert [p.field for p in problems] == [field], code
        assert TWINS[code] in problems[0].reason, problems[0].reason
        # the default (ASCII codes) refuses them all the same
        assert [p.field for p in validate_measurement({**ROW, field: code})] == [field], code


@pytest.mark.parametrize(
    "code",
    [
        "M\u00fcller GmbH",
        "caf\u00e9",
        "\u6771\u4eac-tokyo",
        "\u0434\u0430\u043d\u043d\u044b\u0435",
        "\u03b1\u03b2\u03b3-7",
    ],
)
def test_codes_of_one_script_pass(code: str) -> None:
    assert validate_measurement({**ROW, "account": code}, unicode_codes=True) == []
    (problem,) = validate_measurement({**ROW, "account": code})
    assert "is not printable ASCII" in problem.reason


def test_a_zero_width_account_is_a_row_error_not_a_new_account(m3ter_emulator, client_factory) -> None:
    data = [dict(ROW), {**ROW, "account": "a\u200b"}]
    summary = run(client_factory(), IterableSource(data), on_invalid="skip")
    assert (summary.invalid, summary.sent) == (1, 1)
    assert [m["account"] for m in m3ter_emulator.measurements()] == ["a"]


# --- 6, 7. numbers -------------------------------------------------------------------------------------

BAD_NUMBER_TEXT = ["1_000", "\u0661\u0662\u0663", "\uff11\uff12\uff13", "1e-400", "-1e-400", "1e400", "NaN",
                   "Infinity", "-inf", "0x10", "1 000", "12e", ".", "+-1", "99999999999999999999",
                   "9007199254740993", "\u00b2"]  # fmt: skip
GOOD_NUMBER_TEXT = {"12": 12, "-3": -3, "+4": 4, "2.5": 2.5, "1e-3": 0.001, ".5": 0.5, "5.": 5.0, "0": 0,
                    "0.0e-999": 0.0, "9007199254740992": 2**53, " 7 ": 7, "4.9e-324": 5e-324}  # fmt: skip


def test_numeric_text_is_ascii_decimal_notation_and_representable(tmp_path: Path) -> None:
    values = BAD_NUMBER_TEXT + list(GOOD_NUMBER_TEXT)
    path = _csv(tmp_path, [f"m,a,2024-05-01T00:00:00Z,{value},x" for value in values])
    items = [item for _row, _line, item in FileSource(path).rows()]
    for value, item in zip(BAD_NUMBER_TEXT, items, strict=False):
        assert isinstance(item, RowError), (value, item)
        assert item.field == "measure.n", (value, item)
    for (value, expected), item in zip(GOOD_NUMBER_TEXT.items(), items[len(BAD_NUMBER_TEXT) :], strict=True):
        assert isinstance(item, dict), (value, item)
        assert item["measure"]["n"] == expected, value
        assert type(item["measure"]["n"]) is type(expected), value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (Decimal("Infinity"), "not a finite number"),
        (Decimal("-Infinity"), "not a finite number"),
        (Decimal("NaN"), "not a finite number"),
        (Decimal("sNaN"), "not a finite number"),
        (Decimal("1E+400"), "2**53"),
        (Decimal("1E-400"), "too small"),
        (Decimal("123456789012345678"), "2**53"),
        (2**64, "2**53"),
        (float("inf"), "too large"),
        (float("nan"), "NaN"),
    ],
)
def test_every_conversion_problem_is_a_row_error_with_its_field(
    m3ter_emulator, client_factory, value, reason
) -> None:
    # flat rows as a SQL driver returns them (Decimal for NUMERIC)
    rows = [
        {"customer": "a", "at": datetime(2024, 5, 1, tzinfo=timezone.utc), "calls": Decimal("2.5")},
        {"customer": "a", "at": datetime(2024, 5, 1, 0, 0, 1, tzinfo=timezone.utc), "calls": value},
    ]
    mapping = RowMapping({"customer": "account", "at": "ts", "calls": "measure.calls"}, meter="m")
    with pytest.raises(InvalidMeasurementsError) as failed:
        run(client_factory(), IterableSource(rows, mapping))
    [error] = failed.value.errors
    assert (error.row, error.field) == (2, "measure.calls")
    assert reason in error.reason, error
    summary = run(client_factory(), IterableSource(rows, mapping), on_invalid="skip")
    assert (summary.invalid, summary.sent) == (1, 1)
    assert [m["measure"] for m in m3ter_emulator.measurements()] == [{"calls": 2.5}]


def test_a_timestamp_that_leaves_the_calendar_in_utc_is_a_row_error() -> None:
    early = datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    mapping = RowMapping({"at": "ts"}, meter="m", account="a")
    [(_row, _line, item)] = list(IterableSource([{"at": early}], mapping).rows())
    assert isinstance(item, RowError)
    assert item.field == "ts"
    assert "0001-9999" in item.reason


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("1e-400", "too small"),
        ("-2.5e-400", "too small"),
        ("1e400", "too large"),
        ("18014398509481984", "2**53"),
    ],
)
def test_json_numbers_that_do_not_survive_are_row_errors(
    m3ter_emulator, client_factory, tmp_path, number, reason
) -> None:
    path = tmp_path / "usage.jsonl"
    path.write_text(
        '{"meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","measure":{"x":1e-300}}\n'
        f'{{"meter":"m","account":"a","ts":"2024-05-01T00:00:01Z","measure":{{"x":{number}}}}}\n'
    )
    summary = run(client_factory(), FileSource(path), on_invalid="skip")
    assert (summary.invalid, summary.sent) == (1, 1)
    [letter] = [json.loads(line) for line in Path(summary.dead_letter_path).read_text().splitlines()]
    assert letter["errors"][0]["field"] == "measure.x"
    assert reason in letter["errors"][0]["reason"]
    assert [m["measure"]["x"] for m in m3ter_emulator.measurements()] == [1e-300]


# --- 8. encoding names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf8", "UTF-8", "utf-8", "U8", "utf_8", "UTF8"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_every_name_of_utf8_skips_the_bom(tmp_path: Path, encoding: str, fmt: str) -> None:
    texts = {
        "csv": "customer,ts\nacme,2024-05-01T00:00:00Z\n",
        "jsonl": '{"customer":"acme","ts":"2024-05-01T00:00:00Z"}\n',
        "json": '[{"customer":"acme","ts":"2024-05-01T00:00:00Z"}]\n',
    }
    path = tmp_path / f"usage.{fmt}"
    path.write_bytes(codecs.BOM_UTF8 + texts[fmt].encode())
    mapping = RowMapping({"customer": "account", "ts": "ts"}, meter="m", account="default")
    [(_row, _line, item)] = list(FileSource(path, mapping=mapping, encoding=encoding).rows())
    assert item == {"account": "acme", "ts": "2024-05-01T00:00:00Z", "meter": "m"}


def test_an_unknown_encoding_is_refused_when_the_source_is_built(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unknown text encoding 'utf-9'"):
        FileSource(tmp_path / "x.csv", encoding="utf-9")


def test_latin1_jsonl_is_read_in_its_encoding(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    path.write_bytes(' {"meter":"m","account":"M\u00fcller","ts":"2024-05-01T00:00:00Z"}\n'.encode("latin-1"))
    [(_row, _line, item)] = list(FileSource(path, encoding="latin_1").rows())
    assert item["account"] == "M\u00fcller"


def test_counts_add_up_for_a_mixed_source(m3ter_emulator, client_factory) -> None:
    data = [dict(ROW)] * 4 + [{**ROW, "account": "a\u200b"}] + [{**ROW, "uid": "x"}, {**ROW, "uid": "x"}]
    summary = run(client_factory(), IterableSource(data), on_invalid="skip")
    stored = Counter(m["account"] for m in m3ter_emulator.measurements())
    assert summary.read == summary.valid + summary.invalid
    assert summary.valid - summary.deduplicated == summary.sent == sum(stored.values()) == 5


def test_a_uid_conflict_at_the_end_of_a_batch_is_reported_with_its_data(
    m3ter_emulator, client_factory
) -> None:
    # found by the law test: batches follow each other in the spill file without a separator
    data = [{**ROW, "uid": "u-2"}, {**ROW, "uid": "z"}, {**ROW, "uid": "z", "measure": {"requests": 5}}]
    summary = run(client_factory(), IterableSource(data), on_invalid="skip", max_batch_count=2)
    assert (summary.invalid, summary.sent) == (2, 1)
    letters = [json.loads(line) for line in Path(summary.dead_letter_path).read_text().splitlines()]
    assert sorted((d["row"], d["data"]["uid"], d["data"]["measure"]["requests"]) for d in letters) == [
        (2, "z", 1),
        (3, "z", 5),
    ]
