"""Pre-flight: find, before sending, the measurements m3ter would accept and later reject.

m3ter answers every well-formed ingest call with ``200 accepted`` and checks each measurement
against its meter afterwards, asynchronously: failures appear later as ``ingest.validation.failure``
events, and an unknown account code silently creates a new account. :class:`Preflight` looks up the
meters and accounts a run uses (list calls filtered by ``codes``, 100 codes a call, once per run)
and judges every measurement the way that validation would:

- ``meter``: no meter has the code (m3ter: ``UndefinedMeter``);
- ``<map>.<key>``: the meter has no data field with that code in that category, or has it in
  another category; the key is one of the meter's *derived* fields (m3ter's spec: "raw usage data
  is not submitted using derivedFields"); or the key appears in two maps (``DuplicateField``);
- ``<map>.<code>``: a MEASURE, COST or INCOME data field of the meter is absent (``MissingField``);
- ``<map>.<derived code>``: a derived field's calculation names a data field the measurement does
  not carry (``CalculationError``);
- ``account``: no account has the code (m3ter would create one) unless ``unknown_accounts="allow"``.

Where m3ter's documentation is silent (which missing fields fail, what a calculation needs, what
happens to a key that is not a field) this module assumes what the README section "Pre-flight"
lists. Every check depends only on the measurement's *shape* (meter, account and field keys), so
shapes are judged once each; see :mod:`~airflow_provider_m3ter.client.run_totals`.

Plain Python, no Airflow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from airflow_provider_m3ter.client.run_totals import Shape, canonical_shape

__all__ = ["MeterRules", "Preflight", "calculation_fields"]

UnknownAccounts = Literal["fail", "allow"]
_NUMERIC = ("MEASURE", "COST", "INCOME")
_MAPS = ("who", "where", "what", "other", "metadata", "measure", "cost", "income")

# A calculation's identifiers: a letter, "_" or "$", then letters, digits, "_" or "$" (the data
# field code rule). Quoted text ('...' or "...", with backslash escapes) is not an identifier.
_QUOTED_OR_NAME = re.compile(
    r"""'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|(?P<name>[^\W\d][\w$]*|\$[\w$]*)""", re.UNICODE
)


def calculation_fields(calculation: str) -> set[str]:
    """The names a derived field's calculation uses outside quoted text.

    :param calculation: the derived field's ``calculation``, e.g. ``"requests - errors"``.
    """
    return {match["name"] for match in _QUOTED_OR_NAME.finditer(calculation) if match["name"]}


class MeterRules:
    """What m3ter's asynchronous validation needs of one meter.

    :param meter: the meter as the Config API returns it (``code``, ``dataFields``, ``derivedFields``).
    """

    def __init__(self, meter: dict[str, Any]) -> None:
        self.code: str = meter["code"]
        self.category_of: dict[str, str] = {}
        for item in meter.get("dataFields") or []:
            self.category_of[item["code"]] = str(item["category"]).upper()
        self.derived_category_of: dict[str, str] = {}
        self.needs: dict[str, list[str]] = {}
        for item in meter.get("derivedFields") or []:
            self.derived_category_of[item["code"]] = str(item["category"]).upper()
            used = calculation_fields(str(item.get("calculation") or ""))
            self.needs[item["code"]] = sorted(code for code in used if code in self.category_of)
        self.required = [code for code, category in self.category_of.items() if category in _NUMERIC]

    def problems(self, maps: Iterable[tuple[str, tuple[str, ...]]]) -> list[tuple[str, str]]:
        """``(field, reason)`` for every check a measurement with these maps fails.

        :param maps: ``(map name, keys)`` of the measurement (``("measure", ("requests",))``).
        """
        out: list[tuple[str, str]] = []
        seen: dict[str, str] = {}
        present: set[str] = set()
        for name, keys in maps:
            category = name.upper()
            for key in keys:
                where = f"{name}.{key}"
                if key in seen:
                    out.append((where, f"is also in {seen[key]}; m3ter rejects a field given twice"))
                seen.setdefault(key, name)
                present.add(key)
                has = self.category_of.get(key)
                if key in self.derived_category_of:
                    out.append(
                        (
                            where,
                            f"is a derived field of meter {self.code!r}: m3ter calculates it and "
                            "rejects raw values for it",
                        )
                    )
                elif has is None:
                    out.append((where, f"meter {self.code!r} has no data field {key!r}"))
                elif has != category:
                    out.append((where, f"is a {has} field of meter {self.code!r}, not {category}"))
        for code in self.required:
            if code not in present:  # given in another map: reported above as the wrong category
                name = self.category_of[code].lower()
                out.append(
                    (f"{name}.{code}", f"is missing; meter {self.code!r} requires its {name.upper()} fields")
                )
        for code, needed in self.needs.items():
            absent = [field for field in needed if field not in present]
            if absent:
                out.append(
                    (
                        f"{self.derived_category_of[code].lower()}.{code}",
                        f"derived field of meter {self.code!r} needs {', '.join(absent)}, "
                        "absent from the row",
                    )
                )
        return out


class Preflight:
    """Judges measurement shapes against m3ter's configuration, fetched once per run.

    :param client: an :class:`~airflow_provider_m3ter.client.M3terClient` (its
        ``find_meters_by_codes`` and ``find_accounts_by_codes`` make one list call per 100 codes).
    :param unknown_accounts: ``"fail"`` (default): an account code m3ter does not know is a row
        error, since m3ter would silently create a new account for it; ``"allow"``: let m3ter do so.
    """

    def __init__(self, client: Any, unknown_accounts: UnknownAccounts = "fail") -> None:
        if unknown_accounts not in ("fail", "allow"):
            raise ValueError(f"unknown_accounts must be 'fail' or 'allow', got {unknown_accounts!r}")
        self.client = client
        self.unknown_accounts = unknown_accounts
        self.meters: dict[str, MeterRules] = {}
        self.accounts: set[str] = set()
        self._looked_up_meters: set[str] = set()
        self._looked_up_accounts: set[str] = set()

    def load(self, meter_codes: Iterable[str], account_codes: Iterable[str]) -> None:
        """Fetch the meters and accounts not fetched yet (cached for the life of this object).

        :param meter_codes: meter codes the run uses.
        :param account_codes: account codes the run uses.
        :raises M3terError: a look-up failed (see the client's errors).
        """
        meters = sorted(set(meter_codes) - self._looked_up_meters)
        if meters:
            for code, meter in self.client.find_meters_by_codes(meters).items():
                self.meters[code] = MeterRules(meter)
            self._looked_up_meters.update(meters)
        if self.unknown_accounts == "fail":
            accounts = sorted(set(account_codes) - self._looked_up_accounts)
            if accounts:
                self.accounts.update(self.client.find_accounts_by_codes(accounts))
                self._looked_up_accounts.update(accounts)

    def judge(self, shapes: Iterable[Shape]) -> dict[Shape, list[tuple[str, str]]]:
        """The canonical shapes m3ter would reject, with ``(field, reason)`` for each problem.

        :param shapes: raw shapes (from :class:`~airflow_provider_m3ter.client.run_totals.RunLedger`).
        """
        canonical = {canonical_shape(shape) for shape in shapes}
        self.load({shape[0] for shape in canonical}, {shape[1] for shape in canonical})
        verdicts: dict[Shape, list[tuple[str, str]]] = {}
        for shape in canonical:
            problems = self.problems(shape)
            if problems:
                verdicts[shape] = problems
        return verdicts

    def problems(self, shape: Shape) -> list[tuple[str, str]]:
        """``(field, reason)`` for every problem of one canonical shape (look-ups done by :meth:`load`).

        :param shape: ``(meter, account, (map, keys), ...)``.
        """
        meter, account = shape[0], shape[1]
        out: list[tuple[str, str]] = []
        rules = self.meters.get(meter)
        if rules is None:
            out.append(("meter", f"no meter has the code {meter!r}; m3ter would reject the measurement"))
        else:
            out.extend(rules.problems(shape[2:]))
        if self.unknown_accounts == "fail" and account not in self.accounts:
            out.append(
                (
                    "account",
                    f"no account has the code {account!r}; m3ter would create a new account for it "
                    "(unknown_accounts='allow' permits that)",
                )
            )
        return out
