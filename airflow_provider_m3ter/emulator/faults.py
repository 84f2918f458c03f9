"""Seeded, reproducible fault injection: error statuses, dropped connections, 413s and latency."""

from __future__ import annotations

import random
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_m3ter.emulator.errors import bad_request

ERROR_KINDS = ("500", "502", "504", "429")
DROP_KINDS = ("drop", "drop_after")
KINDS = (*ERROR_KINDS, *DROP_KINDS)
TARGETS = ("ingest", "config", "token", "all")
ERROR_MESSAGES = {
    "500": "Internal Error",
    "502": "Bad Gateway",
    "504": "Gateway Timeout",
    "429": "Too Many Requests",
}


@dataclass
class FaultPlan:
    """What goes wrong, for which requests.

    :param seed: seed of the random generator, so a run can be reproduced exactly.
    :param rate: share (0-1) of matching requests that get a fault drawn from ``kinds``.
    :param kinds: the faults ``rate`` draws from.
    :param sequence: faults (or ``"ok"``) for the next matching requests, one each, used before ``rate``.
    :param retry_after: ``Retry-After`` header value sent with injected 429s.
    :param target: which requests match: ``ingest``, ``config``, ``token`` or ``all``.
    :param path_regex: when set, only paths matching it (``re.search``) are affected.
    :param latency_ms: delay added to every matching request.
    :param list_413_above_page_size: list calls with a larger ``pageSize`` get 413.
    """

    seed: int = 0
    rate: float = 0.0
    kinds: list[str] = field(default_factory=lambda: list(ERROR_KINDS))
    sequence: deque[str] = field(default_factory=deque)
    retry_after: str | None = None
    target: str = "all"
    path_regex: str | None = None
    latency_ms: float = 0.0
    list_413_above_page_size: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._path = re.compile(self.path_regex) if self.path_regex else None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> FaultPlan:
        """Build a plan from the ``POST /_emulator/faults`` body, refusing anything unknown.

        :param body: the decoded JSON body (``{}`` means no faults).
        """
        known = {
            "seed", "rate", "kinds", "sequence", "retry_after", "target",
            "path_regex", "latency_ms", "list_413_above_page_size",
        }  # fmt: skip
        unknown = sorted(set(body) - known)
        if unknown:
            raise bad_request(f"faults: unknown fields {unknown}; known fields are {sorted(known)}")
        kinds = [str(kind) for kind in body.get("kinds") or ERROR_KINDS]
        sequence = [str(kind) for kind in body.get("sequence") or []]
        for where, values, allowed in (("kinds", kinds, KINDS), ("sequence", sequence, (*KINDS, "ok"))):
            bad = [value for value in values if value not in allowed]
            if bad:
                raise bad_request(f"faults.{where}: unknown entries {bad}; allowed: {', '.join(allowed)}")
        rate = float(body.get("rate") or 0.0)
        if not 0.0 <= rate <= 1.0:
            raise bad_request(f"faults.rate: must be between 0 and 1, got {rate}")
        target = body.get("target") or "all"
        if target not in TARGETS:
            raise bad_request(f"faults.target: must be one of {', '.join(TARGETS)}, got {target!r}")
        path_regex = body.get("path_regex")
        if path_regex:
            try:
                re.compile(path_regex)
            except re.error as exc:
                raise bad_request(f"faults.path_regex: invalid regular expression ({exc})") from None
        retry_after = body.get("retry_after")
        above = body.get("list_413_above_page_size")
        return cls(
            seed=int(body.get("seed") or 0),
            rate=rate,
            kinds=kinds,
            sequence=deque(sequence),
            retry_after=None if retry_after is None else str(retry_after),
            target=target,
            path_regex=path_regex or None,
            latency_ms=float(body.get("latency_ms") or 0.0),
            list_413_above_page_size=None if above is None else int(above),
        )

    def describe(self) -> dict[str, Any]:
        """The plan in the shape of ``POST /_emulator/faults`` (remaining sequence included)."""
        return {
            "seed": self.seed,
            "rate": self.rate,
            "kinds": list(self.kinds),
            "sequence": list(self.sequence),
            "retry_after": self.retry_after,
            "target": self.target,
            "path_regex": self.path_regex,
            "latency_ms": self.latency_ms,
            "list_413_above_page_size": self.list_413_above_page_size,
        }

    def matches(self, target: str, path: str) -> bool:
        """Whether a request of ``target`` kind on ``path`` is subject to this plan.

        :param target: ``ingest``, ``config`` or ``token``.
        :param path: the request path.
        """
        if self.target not in ("all", target):
            return False
        return self._path is None or self._path.search(path) is not None

    def draw(self) -> str | None:
        """The fault for the next matching request, or None for a normal answer."""
        if self.sequence:
            kind = self.sequence.popleft()
            return None if kind == "ok" else kind
        if self.rate > 0.0 and self._rng.random() < self.rate:
            return self._rng.choice(self.kinds)
        return None

    def too_large(self, page_size: str | None) -> bool:
        """Whether a list call with this ``pageSize`` must get 413.

        :param page_size: the raw ``pageSize`` query parameter (None when absent).
        """
        if self.list_413_above_page_size is None or page_size is None:
            return False
        try:
            return int(page_size) > self.list_413_above_page_size
        except ValueError:
            return False
