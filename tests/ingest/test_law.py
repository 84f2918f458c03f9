"""The conservation law of ingest, as a property test (Hypothesis).

For a generated source (identical rows, repeated explicit uids, invalid rows, unicode, values at
the limits) in every format the operator reads (CSV, JSON Lines, JSON array, gzip, an iterable,
SQL through SQLite and through a real PostgreSQL server), sent against the emulator with seeded
faults (5XX, 429 with Retry-After, dropped connections, drops after storing), with
``max_in_flight`` from 1 to 8, a kill at a random acknowledgement and resumes until done:

* rows read = measurements m3ter holds from the source + rows reported invalid + rows
  deduplicated, and m3ter holds exactly the expected measurements (each equal to its row, with a
  uid derived from its content and occurrence, or its explicit uid);
* the measurements resent by all the tries together are at most ``max_in_flight`` batches per
  interrupted try (what was in flight when it was interrupted).

The kill is in-process (a BaseException from the checkpoint store at the k-th save, after which
the in-flight requests still complete: the worst case for resends); real SIGKILLs of a supervised
task are in ``test_dags.py``. ``M3TER_LAW_EXAMPLES`` sets the number of examples (``make soak``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import sqlite3
from collections import Counter
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_m3ter.client.checkpoint import MemoryCheckpointStore
from airflow_provider_m3ter.client.encoding import derive_uid
from airflow_provider_m3ter.client.errors import M3terError
from airflow_provider_m3ter.client.ingest import IngestRun
from airflow_provider_m3ter.operators.mapping import RowMapping
from airflow_provider_m3ter.operators.sources import FileSource, IterableSource, SqlSource
from tests.ingest.conftest import make_client
from tests.ingest.postgres import running_server

EXAMPLES = int(os.environ.get("M3TER_LAW_EXAMPLES", "300"))
FORMATS = ["csv", "csv.gz", "jsonl", "jsonl.gz", "json", "iterable", "sqlite", "postgres"]
BATCH = 7  # small batches: many of them from a few rows
NAMESPACE = "law"
FIELDS = ("uid", "meter", "account", "ts", "who", "metadata", "measure")
COLUMNS = ["uid", "meter", "account", "ts", "n", "u", "note"]
MAPPING = {"uid": "uid", "meter": "meter", "account": "account", "ts": "ts", "n": "measure.n", "u": "who.u",
           "note": "metadata.note"}  # fmt: skip
TIMES = [f"2024-05-01T00:00:0{i}Z" for i in range(4)]
INVALID = ("zero_width_account", "bad_ts", "no_meter", "bad_number", "long_note", "dup_key")


class Killed(BaseException):
    """The simulated kill: nothing catches it, like SIGKILL."""


class KillingStore(MemoryCheckpointStore):
    """Dies at the ``kill_at``-th save, before that acknowledgement is recorded."""

    def __init__(self, kill_at: int) -> None:
        super().__init__()
        self.kill_at = kill_at
        self.saves = 0

    def save(self, state: dict[str, Any]) -> None:
        self.saves += 1
        if self.saves == self.kill_at:
            raise Killed
        super().save(state)


# --- the generated source ---------------------------------------------------------------------------

text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"), min_size=1, max_size=12
)
numbers = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(min_value=-1e15, max_value=1e15, allow_nan=False, allow_infinity=False),
)


@st.composite
def base_rows(draw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "meter": draw(st.sampled_from(["api", "storage"])),
        "account": draw(st.sampled_from(["acme", "M\u00fcller GmbH", "\u6771\u4eac-tokyo"])),
        "ts": draw(st.sampled_from(TIMES)),
        "n": draw(numbers),
        "u": draw(text),
        "note": draw(st.sampled_from([None, "ok", "x" * 256])),  # 256: the metadata limit
    }
    if draw(st.integers(0, 5)) == 0:
        row["uid"] = draw(st.sampled_from(["u-1", "u-2"]))
    return row


@st.composite
def sources(draw: Any) -> tuple[list[dict[str, Any]], list[str | None]]:
    """Rows (flat) and, per row, None for a valid row or the kind of damage done to it."""
    pool = draw(st.lists(base_rows(), min_size=1, max_size=8))
    count = draw(st.integers(1, 45))
    rows, damage = [], []
    for _ in range(count):
        row = dict(draw(st.sampled_from(pool)))
        kind = draw(st.sampled_from(INVALID)) if draw(st.integers(0, 6)) == 0 else None
        rows.append(row)
        damage.append(kind)
    return rows, damage


# --- writing the source in a format ------------------------------------------------------------------


def nested(row: dict[str, Any]) -> dict[str, Any]:
    m: dict[str, Any] = {"meter": row["meter"], "account": row["account"], "ts": row["ts"],
                         "measure": {"n": row["n"]}, "who": {"u": row["u"]}}  # fmt: skip
    if row.get("note") is not None:
        m["metadata"] = {"note": row["note"]}
    if "uid" in row:
        m["uid"] = row["uid"]
    if row.get("meter") is None:
        del m["meter"]
    return m


def damaged(row: dict[str, Any], kind: str | None, fmt: str) -> dict[str, Any]:
    """The row as the format holds it (with its damage); flat columns."""
    row = dict(row)
    if kind == "zero_width_account":
        row["account"] += "\u200b"
    elif kind == "bad_ts":
        row["ts"] = None if fmt == "postgres" else "May 1st"
    elif kind == "no_meter":
        row["meter"] = None
    elif kind == "bad_number":
        row["n"] = {
            "csv": "1_000",
            "sqlite": float("inf"),
            "postgres": Decimal("Infinity"),
        }.get(fmt.removesuffix(".gz"), "12")  # JSON and iterables: a numeric string
    elif kind == "long_note":
        row["note"] = "x" * 257
    return row


def write_source(rows: list[dict], damage: list[str | None], fmt: str, tmp: Path, pg_dsn: str | None) -> Any:
    flat = [damaged(row, kind, fmt) for row, kind in zip(rows, damage, strict=True)]
    mapping = RowMapping(MAPPING)
    kind = fmt.removesuffix(".gz")
    if kind == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in flat:
            value = row["n"]
            writer.writerow(
                [row.get("uid") or "", row["meter"] or "", row["account"], row["ts"] or "",
                 repr(value) if isinstance(value, float) else value, row["u"], row.get("note") or ""]
            )  # fmt: skip
        data = out.getvalue().encode()
        return _file(tmp / f"usage.{fmt}", data, fmt, mapping)
    if kind in ("jsonl", "json"):
        texts = []
        for row, damage_kind in zip(flat, damage, strict=True):
            m = nested({**row, "meter": row["meter"]})
            if damage_kind == "dup_key":
                body = json.dumps(m)
                texts.append(body[:-1] + ', "ts": "2024-05-01T00:00:09Z"}')  # ts named twice
            else:
                texts.append(json.dumps(m))
        data = ("\n".join(texts) + "\n" if kind == "jsonl" else "[" + ",\n".join(texts) + "]").encode()
        return _file(tmp / f"usage.{fmt}", data, fmt, None)
    if kind == "iterable":
        return IterableSource([nested(row) for row in flat])
    columns = ", ".join(COLUMNS)
    if kind == "sqlite":
        path = tmp / "usage.db"
        with sqlite3.connect(path) as db:
            db.execute(f"create table usage_all ({columns}, pos integer)")
            db.executemany(
                f"insert into usage_all ({columns}, pos) values (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - fixed column names
                [(r.get("uid"), r["meter"], r["account"], r["ts"], r["n"], r["u"], r.get("note"), i)
                 for i, r in enumerate(flat)],
            )  # fmt: skip
        return _Sql(lambda: sqlite3.connect(path), f"select {columns} from usage_all order by pos", mapping)  # noqa: S608
    import psycopg

    assert pg_dsn is not None
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute("drop table if exists usage")
        db.execute(
            "create table usage (pos int, uid text, meter text, account text, ts timestamptz, n numeric, "
            "u text, note text)"
        )
        with db.cursor() as cursor:
            cursor.executemany(
                "insert into usage values (%s, %s, %s, %s, %s, %s, %s, %s)",
                [(i, r.get("uid"), r["meter"], r["account"], _pg_ts(r["ts"]), _pg_number(r["n"]), r["u"],
                  r.get("note")) for i, r in enumerate(flat)],
            )  # fmt: skip
    return _Sql(lambda: psycopg.connect(pg_dsn), f"select {columns} from usage order by pos", mapping)  # noqa: S608


def _pg_ts(ts: str | None) -> datetime | None:
    return None if ts is None else datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(timezone.utc)


def _pg_number(value: Any) -> Any:
    return Decimal(repr(value)) if isinstance(value, float) else value


def _file(path: Path, data: bytes, fmt: str, mapping: RowMapping | None) -> FileSource:
    path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    return FileSource(path, mapping=mapping)


class _Sql(SqlSource):
    """The real SqlSource, reading through a DB-API connection given directly (no Airflow connection)."""

    def __init__(self, connect: Any, sql: str, mapping: RowMapping) -> None:
        super().__init__("law", sql, None, mapping, fetch_size=5)
        self._connect = connect

    def _hook(self) -> Any:
        return SimpleNamespace(get_conn=self._connect)


# --- the oracle ----------------------------------------------------------------------------------------


def canonical(m: dict[str, Any]) -> str:
    """A measurement's content for comparison (numbers as floats: 2 and 2.0 are the same amount)."""
    content = {k: v for k, v in m.items() if k in FIELDS and k != "uid"}
    content["measure"] = {k: float(v) + 0.0 for k, v in content.get("measure", {}).items()}  # -0.0 is 0
    return json.dumps(content, sort_keys=True)


def expected(rows: list[dict], damage: list[str | None], deduplicate: bool) -> tuple[Counter, int, int]:
    """(multiset of stored contents, rows invalid, rows deduplicated) that the law demands."""
    valid = [nested(row) for row, kind in zip(rows, damage, strict=True) if kind is None]
    invalid = len(rows) - len(valid)
    stored: Counter[str] = Counter()
    deduplicated = 0
    by_uid: dict[str, list[str]] = {}
    for m in valid:
        if "uid" in m:
            by_uid.setdefault(m["uid"], []).append(canonical(m))
        elif deduplicate and canonical(m) in stored:
            deduplicated += 1
        else:
            stored[canonical(m)] += 1
    for contents in by_uid.values():
        if len(set(contents)) > 1:
            invalid += len(contents)  # one uid, different content: every such row is an error
        else:
            stored[contents[0]] += 1
            deduplicated += len(contents) - 1
    return stored, invalid, deduplicated


# --- the test --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_dsn() -> Any:
    try:
        import psycopg  # noqa: F401
    except ImportError:  # pragma: no cover - the test extra installs it
        pytest.skip("psycopg is not installed (pip install -e '.[test]')")
    try:
        with running_server() as dsn:
            yield dsn
    except RuntimeError as exc:
        if os.environ.get("CI"):
            raise  # in CI PostgreSQL must run (.ci/run installs it)
        print(f"SKIP postgres examples: {exc}")  # the reason must be visible
        yield None


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(
    source=sources(),
    fmt=st.sampled_from(FORMATS),
    max_in_flight=st.integers(1, 8),
    deduplicate=st.booleans(),
    fault_seed=st.integers(0, 2**31),
    fault_rate=st.sampled_from([0.0, 0.1, 0.3]),
    kill_at=st.integers(1, 12),
)
def test_every_row_is_stored_once_or_reported(
    m3ter_emulator, postgres_dsn, tmp_path_factory, source, fmt, max_in_flight, deduplicate, fault_seed,
    fault_rate, kill_at,
) -> None:  # fmt: skip
    if fmt == "postgres" and postgres_dsn is None:
        fmt = "sqlite"
    rows, damage = source
    if fmt not in ("jsonl", "jsonl.gz", "json"):
        damage = [None if kind == "dup_key" else kind for kind in damage]  # only JSON text can repeat a key
    tmp = tmp_path_factory.mktemp("law")
    m3ter_emulator.reset()
    m3ter_emulator.set_faults(
        target="ingest", seed=fault_seed, rate=fault_rate,
        kinds=["500", "502", "504", "429", "drop", "drop_after"], retry_after="1",
    )  # fmt: skip
    store = KillingStore(kill_at)
    src = write_source(rows, damage, fmt, tmp, postgres_dsn)  # every try reads it again
    tries = interrupted = 0
    acknowledged: list[int] = []  # records per acknowledged request, across all tries
    summary = None
    while summary is None:
        tries += 1
        assert tries <= 6, "the load did not finish"
        client = make_client(m3ter_emulator, max_attempts=10)
        real_submit = client.submit_measurements

        def submit(body: bytes, real: Any = real_submit) -> Any:
            answer = real(body)
            acknowledged.append(len(json.loads(body)["measurements"]))
            return answer

        client.submit_measurements = submit  # type: ignore[method-assign]
        run = IngestRun(
            client, namespace=NAMESPACE, on_invalid="skip", dead_letter_path=tmp / "dead.jsonl",
            max_in_flight=max_in_flight, checkpoint=store, max_batch_count=BATCH, deduplicate=deduplicate,
            unicode_codes=True,  # the generated accounts include non-ASCII codes
        )  # fmt: skip
        try:
            summary = run.run(src.rows(), src.name)
        except (Killed, M3terError):
            interrupted += 1
        finally:
            client.close()
    m3ter_emulator.clear_faults()

    want, invalid, deduplicated = expected(rows, damage, deduplicate)
    held = m3ter_emulator.measurements()
    # the law: every row read is held once, or reported, or deduplicated as the user asked
    assert summary.read == len(rows)
    assert (summary.invalid, summary.deduplicated) == (invalid, deduplicated)
    assert summary.read == len(held) + summary.invalid + summary.deduplicated
    # every stored measurement equals its row
    assert Counter(canonical(m) for m in held) == want
    # uids: explicit ones as given, derived ones from content and occurrence, never two alike
    assert len({m["uid"] for m in held}) == len(held)
    groups: dict[str, list[dict]] = {}
    for m in held:
        groups.setdefault(
            json.dumps({k: v for k, v in m.items() if k in FIELDS and k != "uid"}, sort_keys=True), []
        ).append(m)
    for members in groups.values():
        derived = [m for m in members if not m["uid"].startswith("u-")]
        content = {k: v for k, v in derived[0].items() if k in FIELDS and k != "uid"} if derived else {}
        assert {m["uid"] for m in derived} == {derive_uid(NAMESPACE, content, k) for k in range(len(derived))}
    # resends: at most the batches in flight at each interruption (a request retried inside the
    # client after a drop is one acknowledgement; m3ter de-duplicates such retries by uid)
    resent = sum(acknowledged) - len(held)
    assert 0 <= resent <= interrupted * max_in_flight * BATCH, (resent, interrupted, max_in_flight)
