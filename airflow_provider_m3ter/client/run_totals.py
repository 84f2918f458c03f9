"""Run totals: what an ingest run sent, per meter, account and numeric field (sum and count).

An ingest run shows every measurement it will send to one :class:`RunLedger`, right after the
measurement passed validation. The ledger keeps, per *shape* (meter, account and the field keys of
each category), a count and the running sum of each numeric field; never the rows. Pre-flight
(:mod:`~airflow_provider_m3ter.client.preflight`) judges shapes, not rows, because every check
m3ter's asynchronous validation makes depends only on the shape. The ledger also remembers where
each measurement came from (source row and line) compactly, so a rejected shape's rows can be named.

Plain Python, no Airflow.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from itertools import repeat
from operator import add, contains, itemgetter
from typing import Any

from airflow_provider_m3ter.client.measurements import RowColumns

__all__ = ["NUMERIC_MAPS", "RunLedger", "canonical_shape", "shape_of", "totals_from_shapes"]

#: The measurement maps whose values are numbers (the ones the usage query can sum).
NUMERIC_MAPS = ("measure", "cost", "income")
_NUMERIC = frozenset(NUMERIC_MAPS)
#: Default cap on meter/account pairs kept in the summary's totals (keeps XCom small).
MAX_TOTAL_GROUPS = 10_000

Shape = tuple[Any, ...]


def shape_of(m: dict[str, Any]) -> Shape:
    """The raw shape of a measurement: ``(meter, account, (map, keys), ...)`` in the dict's order.

    :param m: a measurement that passed validation (maps are dicts).
    """
    return (m["meter"], m["account"], *[(k, tuple(v)) for k, v in m.items() if type(v) is dict])


def canonical_shape(shape: Shape) -> Shape:
    """The shape with its maps and keys sorted (equal for the same fields in any order).

    :param shape: a raw shape from :func:`shape_of`.
    """
    return (shape[0], shape[1], *sorted((name, tuple(sorted(keys))) for name, keys in shape[2:] if keys))


class RunLedger:
    """Per-shape counts and numeric sums of the measurements a run sends, and their source positions.

    Rows are shown one at a time (:meth:`observe`) or a batch at a time (:meth:`observe_many`, the
    ingest run's way: a batch of rows sharing one key layout costs a few C-level passes instead of a
    Python call per row). Both keep the same state and give the same results: the same shapes in
    the same order, each sum added up in source order.

    :param max_groups: the most meter/account pairs :meth:`totals` reports before it gives up.
    """

    def __init__(self, max_groups: int = MAX_TOTAL_GROUPS) -> None:
        self.max_groups = max_groups
        # (meter, account, map names, keys of each map) -> shape id, numbered in order of first sight
        self._ids: defaultdict[Shape, int] = defaultdict(itertools.count().__next__)
        self._counts: Counter[int] = Counter()  # per shape id
        # (numeric map name, key position) -> the running sum per shape id (0 where a shape has none)
        self._sums: dict[tuple[str, int], list[Any]] = {}
        self._points: list[tuple[int, int, int | None, bool]] = []
        self._last: tuple[int | None, int | None, bool | None] = (None, -1, None)
        self._observed = 0
        # top-level key layout -> (map names, numeric map names and their positions among the maps)
        self._maps: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[tuple[int, str], ...]]] = {}

    # -- observing ------------------------------------------------------------------------------

    def observe(self, m: dict[str, Any], row: int, line: int | None) -> None:
        """Count one measurement about to be sent.

        :param m: the validated measurement.
        :param row: its 1-based source row.
        :param line: its 1-based source line, if known.
        """
        self._note(self._observed, row, line, "uid" in m)
        self._observed += 1
        self._add_one(m)

    def observe_many(
        self, rows: list[tuple[int, int | None, dict[str, Any]]], columns: RowColumns | None = None
    ) -> None:
        """Count a batch of measurements about to be sent, in source order.

        :param rows: ``(row, line, validated measurement)`` each, as :meth:`observe` takes them.
        :param columns: the :class:`~airflow_provider_m3ter.client.measurements.RowColumns` of
            exactly these rows' measurements, when the checks built it (its columns are reused; its
            ``layout``, when set, says that every row has those keys in that order).
        """
        count = len(rows)
        if not count:
            return
        items = list(map(_ITEM, rows)) if columns is None else columns.items
        if columns is not None and columns.layout is not None:
            first = columns.layout
            own = count if "uid" in first else 0
        else:
            first = tuple(items[0])
            own = sum(map(contains, items, repeat("uid")))
            if list(map(tuple, items)).count(first) != count:  # several key layouts: one by one
                self._note_many(list(map(_ROW, rows)), list(map(_LINE, rows)), items, own)
                for m in items:
                    self._add_one(m)
                return
            columns = RowColumns(items)
        self._note_many(list(map(_ROW, rows)), list(map(_LINE, rows)), items, own)
        maps, numeric = self._layout(first, items[0])
        key_columns = [columns.key_tuples(name) for name in maps]
        ids = self._ids
        before = len(ids)
        shape_ids = list(
            map(
                ids.__getitem__,
                zip(columns.column("meter"), columns.column("account"), repeat(maps), *key_columns),
            )
        )
        if len(ids) > before:
            self._grow()
        self._counts.update(shape_ids)  # counted in C
        for position, name in numeric:
            column, keys = columns.column(name), key_columns[position]
            if keys.count(keys[0]) == count:  # one key layout: a pass per field
                for index, key in enumerate(keys[0]):
                    _add_in_order(self._sums_of(name, index), shape_ids, map(itemgetter(key), column))
            else:
                for shape_id, values in zip(shape_ids, column, strict=True):
                    for index, value in enumerate(values.values()):
                        self._sums_of(name, index)[shape_id] += value

    def _note(self, index: int, row: int, line: int | None, own: bool) -> None:
        """Keep the position of the ``index``-th measurement as a change point when it differs."""
        state = (row - index, None if line is None else line - row, own)
        if state != self._last:
            self._points.append((index, *state))  # type: ignore[arg-type]
            self._last = state

    def _note_many(
        self, rows: list[int], lines: list[int | None], items: list[dict[str, Any]], own: int
    ) -> None:
        """Positions of a batch; ``own``: how many of its measurements have their own uid."""
        start, count = self._observed, len(rows)
        self._observed += count
        first_row, first_line = rows[0], lines[0]
        if (
            own in (0, count)
            and rows == list(range(first_row, first_row + count))
            and (
                lines.count(None) == count
                if first_line is None
                else lines == list(range(first_line, first_line + count))
            )
        ):  # the common case: one state for the whole batch
            self._note(start, first_row, first_line, own == count)
            return
        for index, (row, line, m) in enumerate(zip(rows, lines, items, strict=True), start=start):
            self._note(index, row, line, "uid" in m)

    def _layout(
        self, top: tuple[str, ...], m: dict[str, Any]
    ) -> tuple[tuple[str, ...], tuple[tuple[int, str], ...]]:
        # which top-level keys hold maps is worked out once per key layout (a source's rows share it)
        layout = self._maps.get(top)
        if layout is None:
            maps = tuple(k for k in top if type(m[k]) is dict)
            numeric = tuple((position, name) for position, name in enumerate(maps) if name in _NUMERIC)
            layout = self._maps[top] = (maps, numeric)
        return layout

    def _add_one(self, m: dict[str, Any]) -> None:
        maps, numeric = self._layout(tuple(m), m)
        ids = self._ids
        before = len(ids)
        shape_id = ids[(m["meter"], m["account"], maps, *[tuple(m[name]) for name in maps])]
        if len(ids) > before:
            self._grow()
        self._counts[shape_id] += 1
        for _position, name in numeric:
            for index, value in enumerate(m[name].values()):
                self._sums_of(name, index)[shape_id] += value

    def _grow(self) -> None:
        """Make room for shape ids seen for the first time."""
        size = len(self._ids)
        for column in self._sums.values():
            column.extend([0] * (size - len(column)))

    def _sums_of(self, name: str, index: int) -> list[Any]:
        column = self._sums.get((name, index))
        if column is None:
            column = self._sums[(name, index)] = [0] * len(self._ids)
        return column

    # -- reading --------------------------------------------------------------------------------

    def position(self, index: int) -> tuple[int, int | None, bool]:
        """The source ``(row, line, has its own uid)`` of the ``index``-th observed measurement.

        :param index: the measurement's position in observation order.
        """
        point = self._points[bisect_right(self._points, (index, float("inf"))) - 1]
        row = index + point[1]
        return row, None if point[2] is None else row + point[2], point[3]

    def raw_shapes(self) -> Iterator[tuple[Shape, list[Any]]]:
        """``(shape, [count, [(map, [sum per key]), ...]])`` per shape in order of first sight, the
        shape as :func:`shape_of` gives it."""
        counts, sums = self._counts, self._sums
        for (meter, account, maps, *keys), shape_id in self._ids.items():
            entry_sums = [
                (name, [sums[(name, index)][shape_id] for index in range(len(names))])
                for name, names in zip(maps, keys, strict=True)
                if name in _NUMERIC
            ]
            yield (meter, account, *zip(maps, keys, strict=True)), [counts[shape_id], entry_sums]

    def totals(self, exclude: Iterable[Shape] = ()) -> dict[str, Any] | None:
        """``{meter: {account: {"measurements": n, "<map>.<field>": [sum, count], ...}}}``, or None
        when there are more than ``max_groups`` meter/account pairs.

        :param exclude: canonical shapes whose measurements were not sent.
        """
        return totals_from_shapes(self.raw_shapes(), set(exclude), self.max_groups)


_ROW, _LINE, _ITEM = itemgetter(0), itemgetter(1), itemgetter(2)


def _add_in_order(column: list[Any], ids: list[int], values: Iterable[Any]) -> None:
    """``column[i] += value`` for each ``(i, value)`` pair, in order, in C (one pass, no Python call
    per pair): each step reads the slot after the previous step wrote it, so a slot that repeats
    adds up its values in the same order as a Python loop would."""
    deque(map(column.__setitem__, ids, map(add, map(column.__getitem__, ids), values)), maxlen=0)


def totals_from_shapes(
    shapes: Iterable[tuple[Shape, list[Any]]], exclude: set[Shape], max_groups: int
) -> dict[str, Any] | None:
    """Merge per-shape counts and sums into per meter/account/field totals (see :meth:`RunLedger.totals`).

    :param shapes: ``(raw shape, [count, sums])`` pairs.
    :param exclude: canonical shapes to leave out.
    :param max_groups: the most meter/account pairs to report (None is returned beyond it).
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    groups = 0
    for shape, (count, sums) in shapes:
        if exclude and canonical_shape(shape) in exclude:
            continue
        accounts = out.setdefault(shape[0], {})
        totals = accounts.get(shape[1])
        if totals is None:
            groups += 1
            if groups > max_groups:
                return None
            totals = accounts[shape[1]] = {"measurements": 0}
        totals["measurements"] += count
        keys_of = dict(shape[2:])
        for name, acc in sums:
            for key, value in zip(keys_of[name], acc, strict=True):
                field = f"{name}.{key}"
                pair = totals.setdefault(field, [0, 0])
                pair[0] += value
                pair[1] += count
    return out
