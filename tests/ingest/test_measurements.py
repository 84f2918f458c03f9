"""Validation, uids, encoding and batching of measurements (plain Python, property-based)."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_m3ter.client.batches import (
    BODY_OVERHEAD,
    MAX_BATCH_BYTES,
    BatchBuilder,
    body_size,
    build_body,
    split_batches,
)
from airflow_provider_m3ter.client.encoding import UidDeriver, derive_uid, encode
from airflow_provider_m3ter.client.measurements import RowError, timestamp_key, validate_measurement

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies -------------------------------------------------------------------------------

# codes the policy accepts: printable ASCII (spaces only inside), or one script's letters
ascii_codes = st.from_regex(r"[!-~]([ -~]{0,78}[!-~])?", fullmatch=True)
codes = st.one_of(
    ascii_codes,
    st.sampled_from(
        [
            "\u00c5cme Ltd",
            "M\u00fcller-GmbH",
            "\u6771\u4eac-tokyo",
            "\u0434\u0430\u043d\u043d\u044b\u0435",
            "caf\u00e9",
        ]
    ),
)
field_codes = st.from_regex(r"[A-Za-z_$][A-Za-z0-9_$]{0,20}", fullmatch=True)
numbers = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53), st.floats(min_value=-(2.0**53), max_value=2.0**53)
)
instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(timezone.utc)
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


def iso(moment: datetime, fraction: bool = False) -> str:
    text = moment.isoformat(timespec="milliseconds" if fraction else "seconds")
    return text.replace("+00:00", "Z")


timestamps = st.builds(iso, instants, st.booleans())


@st.composite
def measurements(draw: st.DrawFn) -> dict:
    m: dict = {"meter": draw(codes), "account": draw(codes), "ts": draw(timestamps)}
    if draw(st.booleans()):
        m["ets"] = draw(timestamps)
    for category in ("who", "where", "what", "other"):
        if draw(st.booleans()):
            m[category] = draw(st.dictionaries(field_codes, st.text(max_size=30), max_size=3))
    if draw(st.booleans()):
        m["metadata"] = draw(st.dictionaries(field_codes, st.text(max_size=256), max_size=2))
    for category in ("measure", "cost", "income"):
        if draw(st.booleans()):
            m[category] = draw(st.dictionaries(field_codes, numbers, max_size=3))
    return m


# --- validation -------------------------------------------------------------------------------


@FAST
@given(measurements())
def test_valid_measurements_pass_and_encode_to_what_was_given(m: dict) -> None:
    # the codes strategy holds non-ASCII codes too (accepted with unicode_codes=True)
    assert validate_measurement(m, unicode_codes=True) == []
    deriver = UidDeriver("dag.task")
    sent = json.loads(deriver.encode(m))
    uid = sent.pop("uid")
    assert sent == m
    assert uid == derive_uid("dag.task", m)
    assert 0 < len(uid) <= 50


# Each mutation breaks exactly one field; the reported field must name it.
MUTATIONS = [
    ("meter", lambda m: m.pop("meter"), "is required"),
    ("account", lambda m: m.pop("account"), "is required"),
    ("ts", lambda m: m.pop("ts"), "is required"),
    ("meter", lambda m: m.update(meter=""), "must not be empty"),
    ("meter", lambda m: m.update(meter="a" * 81), "at most 80"),
    ("meter", lambda m: m.update(meter=" api"), "whitespace"),
    ("account", lambda m: m.update(account="acme\t"), "control character"),
    ("account", lambda m: m.update(account="ac\x00me"), "control character"),
    ("account", lambda m: m.update(account=42), "must be a string"),
    ("uid", lambda m: m.update(uid="u" * 51), "1-50 characters"),
    ("uid", lambda m: m.update(uid=""), "1-50 characters"),
    ("uid", lambda m: m.update(uid=None), "must be a string"),
    ("ts", lambda m: m.update(ts="2024-05-01"), "ISO-8601"),
    ("ts", lambda m: m.update(ts="2024-05-01T12:00:00"), "ISO-8601"),
    ("ts", lambda m: m.update(ts="2023-02-29T12:00:00Z"), "not a calendar date"),
    ("ts", lambda m: m.update(ts="2024-13-01T12:00:00Z"), "ISO-8601"),
    ("ts", lambda m: m.update(ts=1714564800), "ISO-8601"),
    ("ts", lambda m: m.update(ts="\u0662\u0660\u0662\u0664-05-01T12:00:00Z"), "ISO-8601"),
    ("ts", lambda m: m.update(ts="0000-01-01T00:00:00Z"), "no year 0000"),
    ("ts", lambda m: m.update(ts="0001-01-01T00:00:00+01:00"), "outside the years 0001-9999"),
    ("ets", lambda m: m.update(ets="9999-12-31T23:00:00-05:00"), "outside the years 0001-9999"),
    ("ets", lambda m: m.update(ets="yesterday"), "ISO-8601"),
    ("measure.n", lambda m: m.update(measure={"n": math.nan}), "finite"),
    ("measure.n", lambda m: m.update(measure={"n": math.inf}), "finite"),
    ("cost.n", lambda m: m.update(cost={"n": True}), "must be a number"),
    ("income.n", lambda m: m.update(income={"n": "12"}), "must be a number"),
    ("measure", lambda m: m.update(measure=[1, 2]), "object of numbers"),
    ("who.user", lambda m: m.update(who={"user": 7}), "must be a string"),
    ("where", lambda m: m.update(where="eu"), "object of strings"),
    ("metadata.note", lambda m: m.update(metadata={"note": "x" * 257}), "at most 256"),
    ("what.2x", lambda m: m.update(what={"2x": "a"}), "data-field code"),
    ("colour", lambda m: m.update(colour="red"), "unknown field"),
]


@FAST
@given(measurements(), st.sampled_from(MUTATIONS))
def test_each_broken_field_is_named_with_its_reason(m: dict, mutation: tuple) -> None:
    field, mutate, reason = mutation
    mutate(m)
    problems = validate_measurement(m, unicode_codes=True)
    assert [p.field for p in problems] == [field]
    assert reason in problems[0].reason


def test_several_problems_in_one_row_are_all_reported() -> None:
    problems = validate_measurement({"meter": "", "ts": "soon", "measure": {"x": "1"}, "extra": 1})
    assert {p.field for p in problems} == {"extra", "account", "meter", "ts", "measure.x"}


def test_non_objects_are_rejected_as_a_whole() -> None:
    assert validate_measurement([1, 2]) == [("", "a measurement must be an object, got list")]


def test_unusual_but_valid_codes_pass() -> None:
    # inner spaces are allowed; non-ASCII letters of one script with unicode_codes=True
    m = {"meter": "api calls", "account": "Åcme Ltd", "ts": "2024-02-29T23:59:59.123456+05:30"}
    assert validate_measurement(m, unicode_codes=True) == []
    assert [p.field for p in validate_measurement(m)] == ["account"]
    assert validate_measurement({**m, "account": "Acme Ltd"}) == []


def test_edge_years_pass_while_they_stay_in_range() -> None:
    for ts in ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00-01:00", "9999-12-31T23:00:00Z"):
        assert validate_measurement({"meter": "m", "account": "a", "ts": ts}) == [], ts
        assert timestamp_key(ts)[:4] in ("0001", "9999")


def test_row_error_names_row_line_source_and_field() -> None:
    error = RowError(12, "measure.requests", "not a number: 'x'", "usage.csv", 13)
    assert str(error) == "row 12 (usage.csv, line 13), field 'measure.requests': not a number: 'x'"
    assert str(RowError(3, "", "not valid JSON")) == "row 3: not valid JSON"


# --- uids ---------------------------------------------------------------------------------------


@FAST
@given(measurements(), st.randoms(use_true_random=False))
def test_uid_ignores_key_order_and_existing_uid(m: dict, rnd: random.Random) -> None:
    items = list(m.items())
    rnd.shuffle(items)
    shuffled = dict(items)
    shuffled["uid"] = "ignored-for-hashing"
    assert derive_uid("ns", shuffled) == derive_uid("ns", m)


@FAST
@given(measurements())
def test_uid_depends_on_namespace_and_content(m: dict) -> None:
    assert derive_uid("ns-a", m) != derive_uid("ns-b", m)
    changed = {**m, "ts": "1989-12-31T23:59:59Z"}
    assert derive_uid("ns-a", changed) != derive_uid("ns-a", m)


def test_uid_is_stable_across_processes() -> None:
    # uids must not depend on hash randomization or dict order: derive one in two fresh interpreters
    code = (
        "from airflow_provider_m3ter.client.encoding import derive_uid;"
        "print(derive_uid('billing.ingest', {'ts': '2024-05-01T00:00:00Z', 'measure': {'n': 1, 'b': 2.5},"
        " 'account': 'acme', 'meter': 'api_calls'}))"
    )
    seen = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        seen.add(out.stdout.strip())
    m = {"meter": "api_calls", "account": "acme", "ts": "2024-05-01T00:00:00Z", "measure": {"b": 2.5, "n": 1}}
    assert seen == {derive_uid("billing.ingest", m)}


def test_a_given_uid_is_kept() -> None:
    m = {"uid": "my-uid", "meter": "m", "account": "a", "ts": "2024-05-01T00:00:00Z"}
    assert json.loads(UidDeriver("x").encode(m))["uid"] == "my-uid"
    assert encode(m) == b'{"account":"a","meter":"m","ts":"2024-05-01T00:00:00Z","uid":"my-uid"}'


# --- timestamps ---------------------------------------------------------------------------------


@FAST
@given(instants, offsets, instants, offsets)
def test_timestamp_keys_sort_like_instants(a: datetime, oa: timezone, b: datetime, ob: timezone) -> None:
    ta, tb = iso(a.astimezone(oa)), iso(b.astimezone(ob))
    assert validate_measurement({"meter": "m", "account": "a", "ts": ta}) == []
    assert (timestamp_key(ta) < timestamp_key(tb)) == (a < b)
    assert timestamp_key(ta) == a.strftime("%Y-%m-%dT%H:%M:%S")


# --- batches ------------------------------------------------------------------------------------


@FAST
@given(
    st.lists(st.integers(min_value=5, max_value=60_000), max_size=400),
    st.integers(min_value=1, max_value=1000),
    st.integers(min_value=60_100, max_value=MAX_BATCH_BYTES),
)
def test_batches_respect_count_and_bytes_and_keep_order(
    sizes: list[int], max_count: int, max_bytes: int
) -> None:
    records = [b"[" + str(i).encode().ljust(size - 2, b" ") + b"]" for i, size in enumerate(sizes)]
    batches = list(split_batches(records, max_count, max_bytes))
    assert [r for batch in batches for r in batch] == records
    for index, batch in enumerate(batches):
        body = build_body(batch)
        assert 1 <= len(batch) <= max_count
        assert len(body) == body_size(sum(map(len, batch)), len(batch)) < max_bytes
        assert len(json.loads(body)["measurements"]) == len(batch)
        if index + 1 < len(batches) and len(batch) < max_count:
            # greedy: the next batch's first record would not have fitted
            nxt = batches[index + 1][0]
            assert body_size(sum(map(len, batch)) + len(nxt), len(batch) + 1) >= max_bytes
    assert list(split_batches(records, max_count, max_bytes)) == batches


def test_a_body_of_exactly_the_limit_is_not_allowed() -> None:
    builder = BatchBuilder(1000, MAX_BATCH_BYTES)
    biggest = b"x" * builder.max_record_bytes
    assert builder.fits_alone(biggest)
    assert not builder.fits_alone(biggest + b"x")
    assert len(build_body([biggest])) == MAX_BATCH_BYTES - 1
    assert len(b'{"measurements":[]}') == BODY_OVERHEAD


def test_batch_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_count"):
        BatchBuilder(1001)
    with pytest.raises(ValueError, match="max_bytes"):
        BatchBuilder(10, MAX_BATCH_BYTES + 1)
