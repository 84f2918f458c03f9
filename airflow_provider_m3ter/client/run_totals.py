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

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import Any

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

    :param max_groups: the most meter/account pairs :meth:`totals` reports before it gives up.
    """

    def __init__(self, max_groups: int = MAX_TOTAL_GROUPS) -> None:
        self.max_groups = max_groups
        # (meter, account, map names, keys of each map) -> [count, [(map name, [sum per key]), ...]]
        self.shapes: dict[Shape, list[Any]] = {}
        self._points: list[tuple[int, int, int | None, bool]] = []
        self._maps: dict[tuple[str, ...], tuple[tuple[str, ...], Callable[[Any], Any]]] = {}
        self.observe = self._observer()  # type: ignore[method-assign,assignment]

    def observe(self, m: dict[str, Any], row: int, line: int | None) -> None:  # replaced in __init__
        """Count one measurement about to be sent (called once per row: kept cheap).

        :param m: the validated measurement.
        :param row: its 1-based source row.
        :param line: its 1-based source line, if known.
        """

    def _observer(self) -> Callable[[dict[str, Any], int, int | None], None]:
        shapes, layouts, points = self.shapes, self._maps, self._points
        count = 0
        drow: int | None = None
        dline: int | None = -1
        explicit: bool | None = None

        def observe(m: dict[str, Any], row: int, line: int | None) -> None:
            nonlocal count, drow, dline, explicit
            index = count
            count = index + 1
            delta = row - index
            dl = None if line is None else line - row
            own = "uid" in m
            if delta != drow or dl != dline or own != explicit:  # kept as change points only
                points.append((index, delta, dl, own))
                drow, dline, explicit = delta, dl, own
            # which top-level keys hold maps is worked out once per key layout (a source's rows share it)
            top = tuple(m)
            layout = layouts.get(top)
            if layout is None:
                maps = tuple(k for k in top if type(m[k]) is dict)
                pick: Callable[[Any], Any] = itemgetter(*maps) if len(maps) > 1 else _one_or_none(maps)
                layout = layouts[top] = (maps, pick)
            maps, getter = layout
            key = (m["meter"], m["account"], maps, *map(tuple, getter(m)))
            entry = shapes.get(key)
            if entry is None:
                entry = shapes[key] = [0, [(k, [0] * len(m[k])) for k in maps if k in _NUMERIC]]
            entry[0] += 1
            for name, acc in entry[1]:
                i = 0
                for value in m[name].values():
                    acc[i] += value
                    i += 1  # noqa: SIM113 - faster than enumerate here

        return observe

    def position(self, index: int) -> tuple[int, int | None, bool]:
        """The source ``(row, line, has its own uid)`` of the ``index``-th observed measurement.

        :param index: the measurement's position in observation order.
        """
        point = self._points[bisect_right(self._points, (index, float("inf"))) - 1]
        row = index + point[1]
        return row, None if point[2] is None else row + point[2], point[3]

    def raw_shapes(self) -> Iterator[tuple[Shape, list[Any]]]:
        """``(shape, [count, sums])`` per shape, the shape as :func:`shape_of` gives it."""
        for (meter, account, maps, *keys), entry in self.shapes.items():
            yield (meter, account, *zip(maps, keys, strict=True)), entry

    def totals(self, exclude: Iterable[Shape] = ()) -> dict[str, Any] | None:
        """``{meter: {account: {"measurements": n, "<map>.<field>": [sum, count], ...}}}``, or None
        when there are more than ``max_groups`` meter/account pairs.

        :param exclude: canonical shapes whose measurements were not sent.
        """
        return totals_from_shapes(self.raw_shapes(), set(exclude), self.max_groups)


def _one_or_none(maps: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """Like ``itemgetter(*maps)`` but always a tuple (``itemgetter`` of one key returns the item)."""
    return lambda m: tuple(m[k] for k in maps)


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
