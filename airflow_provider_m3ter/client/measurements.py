"""Measurements: validation against m3ter's ingest rules, and timestamp keys.

Plain Python, no Airflow. The rules follow m3ter's Ingest API (``POST /measurements``):

* ``meter``, ``account`` and ``ts`` are required; ``uid`` and ``ets`` are optional.
* ``meter`` and ``account`` are codes: 1-80 characters, no control characters, no leading or
  trailing whitespace (m3ter's rule). On top of it, because m3ter silently creates an unknown
  account, this client refuses (never rewrites) codes that could be twins of others: by default a
  code must be printable ASCII (U+0021-U+007E, with U+0020 spaces only inside), which has no
  invisible characters and no look-alike letters; with ``unicode_codes=True`` other characters are
  accepted under the best-effort checks of :func:`code_twin_problem`.
* ``uid`` is a string of 1-50 characters; m3ter de-duplicates on it for 35 days.
* ``ts`` and ``ets`` are ISO-8601 date-times with a UTC offset, like ``2024-05-01T12:00:00Z``.
* ``who``, ``where``, ``what``, ``other`` and ``metadata`` map data-field codes to strings
  (``metadata`` values at most 256 characters); ``measure``, ``cost`` and ``income`` map codes to
  finite numbers (no NaN, no Infinity, no booleans; every value within +-2**53, which a 64-bit float
  holds exactly).
* A request carries 1 to 1,000 measurements and its JSON body stays under 512,000 bytes (see
  :mod:`airflow_provider_m3ter.client.batches`; uids and encoding are in
  :mod:`airflow_provider_m3ter.client.encoding`).
"""

from __future__ import annotations

import calendar
import functools
import math
import re
import unicodedata
from dataclasses import dataclass
from dataclasses import field as _field
from datetime import datetime, timedelta, timezone
from itertools import chain, repeat
from operator import ge, itemgetter, le
from typing import Any, NamedTuple

__all__ = [
    "DEDUP_WINDOW",
    "MAX_CODE_LENGTH",
    "MAX_EXACT_INTEGER",
    "MAX_METADATA_VALUE_LENGTH",
    "MAX_UID_LENGTH",
    "NUMERIC_CATEGORIES",
    "STRING_CATEGORIES",
    "TOP_LEVEL_FIELDS",
    "FieldProblem",
    "NotANumber",
    "RowColumns",
    "RowError",
    "all_certainly_valid",
    "certainly_valid",
    "code_twin_problem",
    "cutoff_key",
    "row_snapshot",
    "timestamp_key",
    "utc_key_to_iso",
    "validate_measurement",
]

MAX_UID_LENGTH = 50
MAX_CODE_LENGTH = 80
MAX_METADATA_VALUE_LENGTH = 256
#: Integers beyond this magnitude do not survive a 64-bit float (what m3ter computes with) exactly.
MAX_EXACT_INTEGER = 2**53
#: m3ter ingests a measurement with an already-seen uid only once within this window.
DEDUP_WINDOW = timedelta(days=35)

STRING_CATEGORIES = frozenset({"who", "where", "what", "other", "metadata"})
NUMERIC_CATEGORIES = frozenset({"measure", "cost", "income"})
TOP_LEVEL_FIELDS = (
    frozenset({"uid", "meter", "account", "ts", "ets"}) | STRING_CATEGORIES | NUMERIC_CATEGORIES
)
_ORDERED_FIELDS = ("uid", "meter", "account", "ts", "ets", *sorted(STRING_CATEGORIES | NUMERIC_CATEGORIES))


class FieldProblem(NamedTuple):
    """One reason a measurement is invalid.

    :param field: the offending field, dotted for category entries (``measure.requests``); empty
        when the problem concerns the whole row.
    :param reason: what is wrong, in words a user can act on.
    """

    field: str
    reason: str


@dataclass(frozen=True)
class RowError:
    """A rejected source row: where it was, which field, and why.

    :param row: 1-based row number in the source (data rows; a CSV header is not a row).
    :param field: the offending field (``meter``, ``measure.requests``, ...) or ``""`` for the row.
    :param reason: what is wrong.
    :param source: a name for the source (file path, ``sql``, ``inline``), if known.
    :param line: 1-based line in the file where the row starts (JSON Lines, CSV), if known.
    :param data: the row as read, for its dead letter (CSV/SQL: column -> value; a CSV row with the
        wrong number of fields: the list of its values), if the source could read it.
    """

    row: int
    field: str
    reason: str
    source: str | None = None
    line: int | None = None
    data: Any = _field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        where = f"row {self.row}"
        if self.source and self.line is not None:
            where += f" ({self.source}, line {self.line})"
        elif self.source:
            where += f" ({self.source})"
        elif self.line is not None:
            where += f" (line {self.line})"
        return f"{where}, field {self.field!r}: {self.reason}" if self.field else f"{where}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        """The error as a JSON-ready dict (for dead letters and summaries)."""
        return {"row": self.row, "line": self.line, "field": self.field, "reason": self.reason}


class NotANumber(str):
    """A number a source could not represent (e.g. JSON ``1e-400``, which would become 0.0).

    Sources put it where the number was, so validation reports it as a row error with its field.
    The string is the number's text; :attr:`reason` says why it was refused.
    """

    reason: str

    def __new__(cls, text: str, reason: str) -> NotANumber:
        made = super().__new__(cls, text)
        made.reason = reason
        return made


# --- codes, keys, timestamps -------------------------------------------------------------------

# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt): characters that render
# as nothing, whatever their category (a variation selector is a mark, a Hangul filler a letter).
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip
#: Categories that never belong in a code: control, format (zero-width, bidi), surrogate, private
#: use, unassigned, line/paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Scripts that may share one code (Unicode TS #39 "highly restrictive"): Latin with Han and the
# Japanese, Chinese or Korean scripts; anything else must be a single script.
_SCRIPT_SETS = (
    frozenset({"LATIN", "CJK", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "CJK", "BOPOMOFO"}),
    frozenset({"LATIN", "CJK", "HANGUL"}),
)
# Cyrillic and Greek letters that look like Latin ones: a code made only of these is a twin.
_LATIN_LOOKALIKES = frozenset(
    "\u0430\u0432\u0435\u043a\u043c\u043d\u043e\u0440\u0441\u0442\u0443\u0445\u0455\u0456\u0458\u0501"
    "\u051b\u051d\u04af\u04bb\u04cf\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0423"
    "\u0425\u0405\u0406\u0408\u04ae\u04ba\u04c0\u051a\u051c\u0391\u0392\u0395\u0396\u0397\u0399\u039a"
    "\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7\u03bf\u03bd\u03b9\u03b1\u03c1\u03ba\u03c5"
    # izhitsa (v), omega (w), palochka, qa, we, shha, dze, komi de, the lunate sigmas (c, C)
    "\u0474\u0475\u0460\u0461\u04c0\u051a\u051b\u051c\u051d\u04ba\u04bb\u0405\u0455\u0500\u0501"
    "\u03f2\u03f9\u03f3\u037f\u0397\u03b7\u03c4\u03b3"
)


def _ignorable(code_point: int) -> bool:
    return any(low <= code_point <= high for low, high in _IGNORABLE_RANGES)


# Symbols that render as blank or as nothing recognisable although they are not "invisible" by
# category: Braille pattern blank, object replacement, musical null notehead, Khitan/Tangut fillers.
_BLANK_SYMBOLS = frozenset("\u2800\ufffc\ufffd\U0001d159\U00016fe4")
# Latin letters that are phonetic or small-capital look-alikes of ordinary Latin letters: IPA
# Extensions, Spacing Modifier Letters, Phonetic Extensions (+ Supplement), Latin Extended-E/F/G,
# and the click letters that look like | and ! (U+01C0-U+01C3).
_PHONETIC_RANGES = (
    (0x01C0, 0x01C3), (0x0250, 0x02FF), (0x1D00, 0x1DBF), (0xA720, 0xA7FF), (0xAB30, 0xAB6F),
    (0x10780, 0x107BF), (0x1DF00, 0x1DFFF),
)  # fmt: skip
# Scripts with letters that look like Latin ones (and are refused in codes outright; Cyrillic and
# Greek are judged letter by letter below): Unicode TS #39 confusables hold many of these letters.
_LOOKALIKE_SCRIPTS = frozenset(
    {
        "ARMENIAN", "BAMUM", "CANADIAN", "CARIAN", "CHEROKEE", "COPTIC", "DESERET", "GOTHIC", "LISU",
        "LYCIAN", "NKO", "OL", "OLD", "OSAGE", "RUNIC", "TIFINAGH", "VAI", "WARANG", "MRO", "ADLAM",
    }
)  # fmt: skip
# Katakana letters that look like Han ideographs (and the reverse): エ/工, カ/力, ロ/口, ニ/二, ハ/八,
# ト/卜, タ/夕, ー/一, ヘ/へ.
_KATAKANA_HAN_TWINS = frozenset("\u30a8\u30ab\u30ed\u30cb\u30cf\u30c8\u30bf\u30fc\u30d8")
_HAN_KATAKANA_TWINS = frozenset("\u5de5\u529b\u53e3\u4e8c\u516b\u535c\u5915\u4e00")


def _phonetic(code_point: int) -> bool:
    return any(low <= code_point <= high for low, high in _PHONETIC_RANGES)


def code_twin_problem(value: str, what: str) -> str | None:
    """Why ``value`` could be an invisible or visual twin of another code, or None.

    The policy (refuse, never rewrite; pure ASCII codes other than control characters always pass):

    * no invisible characters: Unicode categories Cc, Cf (zero-width, bidi controls, BOM), Cs, Co,
      Cn, Zl, Zp, any Default_Ignorable_Code_Point (variation selectors, fillers), and no
      whitespace other than U+0020 (a no-break space looks like a space);
    * NFKC-stable: a code that Unicode compatibility normalization would change (fullwidth
      letters, ligatures, a decomposed ``e`` + combining accent) is refused;
    * one script: letters of several scripts (Latin ``acme`` with a Cyrillic ``a``) are refused,
      except Latin with Han/Hiragana/Katakana, Han/Bopomofo or Han/Hangul;
    * no whole-script twins: a code whose letters are all Cyrillic or Greek look-alikes of Latin
      letters (``ace`` written in Cyrillic) is refused;
    * no blank-rendering symbols (Braille pattern blank, object replacement), no combining marks
      next to Latin or ASCII letters (``acme`` + U+0331), no Latin phonetic or small-capital
      letters (a Latin alpha U+0251 for ``a``, small capitals U+1D00..., clicks), no letters of
      scripts that hold Latin look-alikes (Armenian, Cherokee, Coptic, Lisu, Canadian syllabics,
      Tifinagh, Runic, Osage, Vai, ...), and no Katakana letter that looks like a Han ideograph
      next to Han (Katakana E U+30A8 for the Han U+5DE5) or the reverse.

    This is best effort (the complete list of look-alikes is Unicode's confusables data, which this
    package does not ship): only the ASCII-only default guarantees that no two codes look alike.

    :param value: a code (already checked to be a non-empty string).
    :param what: the field name for the message (``meter``, ``account``).
    """
    if value.isascii():
        return None
    scripts: set[str] = set()
    lookalikes_only = True
    marked_latin = False
    previous = ""
    for position, char in enumerate(value, start=1):
        code_point = ord(char)
        category = unicodedata.category(char)
        name = unicodedata.name(char, f"U+{code_point:04X}")
        if (
            category in _REFUSED_CATEGORIES
            or (category == "Zs" and char != " ")
            or (code_point > 0x7F and _ignorable(code_point))
            or char in _BLANK_SYMBOLS
        ):
            return f"{what} contains an invisible or non-printing character ({name} at position {position})"
        if _phonetic(code_point):
            return (
                f"{what} {value!r} contains a Latin phonetic or small-capital letter that looks like an "
                f"ordinary one ({name} at position {position})"
            )
        if (
            category[0] == "M"
            and previous
            and (previous.isascii() or unicodedata.name(previous, "").startswith("LATIN"))
        ):
            marked_latin = True
        previous = char if category[0] != "M" else previous
        if category[0] == "L":
            script = name.split(" ", 1)[0]
            if script in _LOOKALIKE_SCRIPTS:
                return (
                    f"{what} {value!r} contains a letter of a script with Latin look-alikes ({name} at "
                    f"position {position})"
                )
            scripts.add(script)
            if char not in _LATIN_LOOKALIKES:
                lookalikes_only = False
    if "CJK" in scripts and any(char in _KATAKANA_HAN_TWINS for char in value):
        return f"{what} {value!r} mixes Han with a Katakana letter that looks like a Han ideograph"
    if "KATAKANA" in scripts and any(char in _HAN_KATAKANA_TWINS for char in value):
        return f"{what} {value!r} mixes Katakana with a Han ideograph that looks like a Katakana letter"
    if unicodedata.normalize("NFKC", value) != value:
        return (
            f"{what} {value!r} changes under Unicode NFKC normalization (fullwidth or compatibility "
            "characters, or a decomposed accent); write it as "
            f"{unicodedata.normalize('NFKC', value)!r} if that is the code"
        )
    if marked_latin:
        return f"{what} {value!r} puts a combining mark on a Latin letter or digit"
    if len(scripts) > 1 and not any(scripts <= allowed for allowed in _SCRIPT_SETS):
        return f"{what} {value!r} mixes letters of several scripts ({', '.join(sorted(scripts))})"
    if scripts and scripts <= {"CYRILLIC", "GREEK"} and lookalikes_only:
        scripts_named = "/".join(sorted(scripts)).title()
        return f"{what} {value!r} is written in {scripts_named} letters that look like Latin ones"
    return None


# Codes repeat across rows (a handful of meters and accounts), so remember the ones already checked:
# ASCII codes valid under either policy, and non-ASCII codes valid with ``unicode_codes=True``.
_checked_codes: set[str] = set()
_checked_unicode_codes: set[str] = set()
_checked_field_codes: set[str] = set()
_CACHE_LIMIT = 200_000
_FIELD_CODE_EXTRA = frozenset("_$0123456789")


def _code_problem(value: Any, what: str, unicode_codes: bool = False) -> str | None:
    """Why ``value`` is not a valid meter/account code, or None when it is."""
    if type(value) is not str:  # exactly: a NotANumber (a number's text) is no code
        if type(value) is NotANumber:
            return f"{what} must be a string, got the number {str(value)[:40]} ({value.reason})"
        return f"{what} must be a string, got {_type_name(value)}"
    if value in _checked_codes or (unicode_codes and value in _checked_unicode_codes):
        return None
    if not value:
        return f"{what} must not be empty"
    if len(value) > MAX_CODE_LENGTH:
        return f"{what} is {len(value)} characters; at most {MAX_CODE_LENGTH} allowed"
    # isprintable() is a fast, sufficient pre-check; only unusual strings take the slow path.
    if not (value.isprintable() and value[0] != " " and value[-1] != " "):
        for position, char in enumerate(value):
            if unicodedata.category(char) == "Cc":
                return f"{what} contains a control character ({char!r} at position {position + 1})"
        if value[0].isspace() or value[-1].isspace():
            return f"{what} must not start or end with whitespace"
    if not value.isascii():
        if not unicode_codes:
            position, char = next((i, c) for i, c in enumerate(value, start=1) if not c.isascii())
            name = unicodedata.name(char, f"U+{ord(char):04X}")
            return (
                f"{what} {value!r} is not printable ASCII ({name} at position {position}); codes are "
                "ASCII by default so that no two look alike (pass unicode_codes=True to accept other "
                "characters under best-effort look-alike checks)"
            )
        if reason := code_twin_problem(value, what):
            return reason
        if len(_checked_unicode_codes) >= _CACHE_LIMIT:
            _checked_unicode_codes.clear()
        _checked_unicode_codes.add(value)
        return None
    if len(_checked_codes) >= _CACHE_LIMIT:
        _checked_codes.clear()
    _checked_codes.add(value)
    return None


def _field_code_problem(key: Any) -> str | None:
    """Why ``key`` is not a valid m3ter data-field code, or None when it is."""
    if key in _checked_field_codes:
        return None
    if not isinstance(key, str) or not key:
        return "data-field codes must be non-empty strings"
    if len(key) > MAX_CODE_LENGTH:
        return f"data-field code is {len(key)} characters; at most {MAX_CODE_LENGTH} allowed"
    # m3ter's pattern is ^[\p{L}_$][\p{L}_$0-9]*$; ASCII identifiers are the common, fast case.
    if not (key.isascii() and key.isidentifier()) and (
        key[0].isdigit() or not all(char.isalpha() or char in _FIELD_CODE_EXTRA for char in key)
    ):
        return "not a valid data-field code (letters, digits, '_' and '$', not starting with a digit)"
    if not key.isascii() and (reason := code_twin_problem(key, "data-field code")):
        return reason
    if len(_checked_field_codes) >= _CACHE_LIMIT:
        _checked_field_codes.clear()
    _checked_field_codes.add(key)
    return None


_TIMESTAMP = re.compile(
    r"(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(\.\d{1,9})?"
    r"(Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,  # \d alone also matches non-ASCII digits, which m3ter does not read as a date
)
_TIMESTAMP_HINT = "an ISO-8601 date-time with a UTC offset, like 2024-05-01T12:00:00Z"


def _timestamp_problem(value: Any, what: str) -> str | None:
    """Why ``value`` is not an ISO-8601 date-time with offset, or None when it is."""
    if type(value) is not str:
        return f"{what} must be {_TIMESTAMP_HINT}; got {_type_name(value)}"
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        return f"{what} must be {_TIMESTAMP_HINT}; got {value[:40]!r}"
    year, day = int(match.group(1)), int(match.group(3))
    if year == 0:
        return f"{what} {value!r} is not a calendar date (there is no year 0000)"
    if day > 28 and day > calendar.monthrange(year, int(match.group(2)))[1]:
        return f"{what} {value!r} is not a calendar date"
    if value[-1] != "Z" and not 1 < year < 9999:
        try:  # the offset may move the instant out of the years 0001-9999
            timestamp_key(value)
        except (ValueError, OverflowError):
            return f"{what} {value!r} is outside the years 0001-9999 in UTC"
    return None


def timestamp_key(ts: str) -> str:
    """A string that sorts like the instant of a valid ``ts``: UTC ``YYYY-MM-DDTHH:MM:SS[.f]``.

    The common ``...Z`` form costs one slice; other offsets are converted to UTC.
    """
    if ts[-1] == "Z":
        return ts[:-1]
    match = _TIMESTAMP.fullmatch(ts)
    if match is None:
        raise ValueError(f"not a valid timestamp: {ts!r}")
    fraction = match.group(7) or ""
    offset = match.group(8)
    sign = 1 if offset[0] == "+" else -1
    shift = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    base = datetime(year, month, day, hour, minute, second)  # naive, read as UTC below
    # isoformat pads the year to four digits; strftime("%Y") does not on every platform
    return (base - shift).isoformat(timespec="seconds") + fraction


def utc_key_to_iso(key: str) -> str:
    """Turn a :func:`timestamp_key` back into an ISO-8601 UTC timestamp (``...Z``)."""
    return key + "Z"


def cutoff_key(moment: datetime) -> str:
    """The :func:`timestamp_key` of an aware ``datetime`` (for comparisons against measurement keys)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_reason(char: str, index: int) -> str:
    return (
        f"contains a lone surrogate (U+{ord(char):04X} at position {index + 1}), which is not Unicode "
        "text; m3ter cannot store it"
    )


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --- validation ---------------------------------------------------------------------------------


def _string_map_problems(category: str, value: Any, out: list[FieldProblem]) -> None:
    if not isinstance(value, dict):
        out.append(FieldProblem(category, f"must be an object of strings, got {_type_name(value)}"))
        return
    limit = MAX_METADATA_VALUE_LENGTH if category == "metadata" else None
    for key, item in value.items():
        if key not in _checked_field_codes and (reason := _field_code_problem(key)):
            out.append(FieldProblem(f"{category}.{key}", reason))
        if type(item) is not str:
            out.append(FieldProblem(f"{category}.{key}", f"must be a string, got {_type_name(item)}"))
        elif not item.isascii() and (found := _SURROGATE.search(item)):
            out.append(FieldProblem(f"{category}.{key}", _surrogate_reason(found.group(), found.start())))
        elif limit is not None and len(item) > limit:
            out.append(
                FieldProblem(f"{category}.{key}", f"is {len(item)} characters; at most {limit} allowed")
            )


def _number_map_problems(category: str, value: Any, out: list[FieldProblem]) -> None:
    if not isinstance(value, dict):
        out.append(FieldProblem(category, f"must be an object of numbers, got {_type_name(value)}"))
        return
    for key, item in value.items():
        if key not in _checked_field_codes and (reason := _field_code_problem(key)):
            out.append(FieldProblem(f"{category}.{key}", reason))
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                out.append(FieldProblem(f"{category}.{key}", f"must be a finite number, got {item!r}"))
            elif not -MAX_EXACT_INTEGER <= item <= MAX_EXACT_INTEGER:
                out.append(
                    FieldProblem(
                        f"{category}.{key}",
                        "is beyond +-2**53, so a 64-bit floating-point number cannot hold it exactly",
                    )
                )
        elif kind is int:
            if not -MAX_EXACT_INTEGER <= item <= MAX_EXACT_INTEGER:
                out.append(
                    FieldProblem(
                        f"{category}.{key}",
                        "is beyond +-2**53, so a 64-bit floating-point number cannot hold it exactly",
                    )
                )
        elif kind is NotANumber:
            out.append(FieldProblem(f"{category}.{key}", f"{str(item)[:40]}: {item.reason}"))
        else:
            out.append(FieldProblem(f"{category}.{key}", f"must be a number, got {_type_name(item)}"))


@functools.lru_cache(maxsize=4096)
def _days_in_month(year_month: str) -> int:
    return calendar.monthrange(int(year_month[:4]), int(year_month[5:7]))[1]


def _fast_timestamp(value: Any) -> bool:
    """True when ``value`` is certainly a valid timestamp (the common case, no allocation-heavy work)."""
    return (
        type(value) is str
        and _TIMESTAMP.fullmatch(value) is not None
        and "0001" < value[:4] < "9999"  # the edge years need the full check
        and (value[8:10] <= "28" or int(value[8:10]) <= _days_in_month(value[:7]))
    )


def _fast_uid(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_UID_LENGTH and value.isprintable()


# What the quick check does per field; one function with inline loops beats a call per field.
_NUMBERS, _STRINGS, _METADATA, _TIME, _UID = range(5)
_FAST_KINDS: dict[str, int] = {
    "measure": _NUMBERS,
    "cost": _NUMBERS,
    "income": _NUMBERS,
    "who": _STRINGS,
    "where": _STRINGS,
    "what": _STRINGS,
    "other": _STRINGS,
    "metadata": _METADATA,
    "ets": _TIME,
    "uid": _UID,
}

# Rows of one source share a few key layouts: remember, per layout, which fields need a check.
_layouts: dict[tuple[str, ...], Any] = {}
_UNSEEN = object()


def _layout_checks(keys: tuple[str, ...]) -> tuple[tuple[str, int], ...] | None:
    """The quick checks for a key layout, or None when the layout itself is invalid."""
    if not (set(keys) <= TOP_LEVEL_FIELDS and {"meter", "account", "ts"} <= set(keys)):
        checks = None
    else:
        checks = tuple((key, _FAST_KINDS[key]) for key in keys if key in _FAST_KINDS)
    if len(_layouts) >= 1024:
        _layouts.clear()
    _layouts[keys] = checks
    return checks


def certainly_valid(m: dict[str, Any], unicode_codes: bool = False) -> bool:
    """A quick check that is True only for valid measurements; False means "run the full check".

    Cheap enough for every row of a large load: :func:`validate_measurement` runs it first and only
    looks closer (to name the problems) when it says False.

    :param m: a measurement dict.
    :param unicode_codes: accept non-ASCII meter/account codes (see :func:`validate_measurement`).
    """
    keys = tuple(m)
    checks = _layouts.get(keys, _UNSEEN)
    if checks is _UNSEEN:
        checks = _layout_checks(keys)
    if checks is None:
        return False
    if type(m["meter"]) is not str or type(m["account"]) is not str:  # a NotANumber is a str subclass
        return False
    try:
        if m["meter"] not in _checked_codes or m["account"] not in _checked_codes:
            if not unicode_codes:
                return False
            for code in (m["meter"], m["account"]):
                if code not in _checked_codes and code not in _checked_unicode_codes:
                    return False
    except TypeError:  # an unhashable meter/account value
        return False
    if not _fast_timestamp(m["ts"]):
        return False
    field_codes = _checked_field_codes
    for key, kind in checks:
        value = m[key]
        if kind <= _METADATA:
            if type(value) is not dict or not value.keys() <= field_codes:
                return False
            if kind == _NUMBERS:
                for item in value.values():
                    number = type(item)
                    if number is int:
                        if not -MAX_EXACT_INTEGER <= item <= MAX_EXACT_INTEGER:
                            return False
                    # a comparison with NaN is False and the infinities are out of range, so
                    # this one test also refuses every non-finite float
                    elif number is not float or not -MAX_EXACT_INTEGER <= item <= MAX_EXACT_INTEGER:
                        return False
            elif kind == _STRINGS:
                for item in value.values():
                    if type(item) is not str or (not item.isascii() and _SURROGATE.search(item)):
                        return False
            else:
                for item in value.values():
                    if (
                        type(item) is not str
                        or len(item) > MAX_METADATA_VALUE_LENGTH
                        or (not item.isascii() and _SURROGATE.search(item))
                    ):
                        return False
        elif not (_fast_timestamp(value) if kind == _TIME else _fast_uid(value)):
            return False
    return True


# A timestamp that _fast_timestamp certainly accepts: _TIMESTAMP with the year 0002-9998 and a day
# that every year's month has (29 February and the edge years take the per-row check).
_FAST_TIMESTAMP = re.compile(
    r"(?!000[01]|9999)\d{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31)T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,9})?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)
_STR_ONLY = frozenset({str})
_DICT_ONLY = frozenset({dict})
_NUMBER_TYPES = frozenset({int, float})
#: Distinct key layouts of one category's objects that :func:`all_certainly_valid` checks one by one.
_MAX_FIELD_LAYOUTS = 16


def row_snapshot(item: Any) -> Any:
    """A copy of a measurement dict down to its category objects (``item`` itself if no dict).

    An ingest run reads rows a batch (1,024) at a time before it checks and encodes them, so a
    one-shot iterable (a generator) that reuses or changes a dict after yielding it would have every
    row of a batch stored as its last state; a valid measurement nests two levels, so this copy is
    all of it (the scalars are immutable). Deeper containers (invalid anyway) stay shared.
    """
    if type(item) is not dict:
        return item
    return {key: value.copy() if type(value) in (dict, list) else value for key, value in item.items()}


class RowColumns:
    """The columns of a batch of rows, each built once and shared by the checks and the run totals.

    :param items: the rows (measurement dicts; :func:`all_certainly_valid` checks that they are).
    """

    __slots__ = ("_columns", "_keys", "items", "layout")

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        #: the key layout every row shares (in order), once :func:`all_certainly_valid` proved it
        self.layout: tuple[str, ...] | None = None
        self._columns: dict[str, list[Any]] = {}
        self._keys: dict[str, list[tuple[Any, ...]]] = {}

    def column(self, key: str) -> list[Any]:
        """``row[key]`` of every row (every row must have ``key``)."""
        column = self._columns.get(key)
        if column is None:
            column = self._columns[key] = list(map(itemgetter(key), self.items))
        return column

    def key_tuples(self, key: str) -> list[tuple[Any, ...]]:
        """``tuple(row[key])`` of every row: the keys of a category, in order."""
        keys = self._keys.get(key)
        if keys is None:
            keys = self._keys[key] = list(map(tuple, self.column(key)))
        return keys


def all_certainly_valid(
    items: list[Any], unicode_codes: bool = False, columns: RowColumns | None = None
) -> bool:
    """:func:`certainly_valid` for many rows at once: True only when every item is certainly valid.

    The same rules, checked column by column with C-level passes (one Python call per batch instead
    of one per row); it requires the rows to share one key layout (the common case of a file or a
    query) and says False for anything else, which means "check the rows one by one". It never says
    True for a row that :func:`certainly_valid` would refuse.

    :param items: source items (measurement dicts, or anything else: then False).
    :param unicode_codes: as for :func:`certainly_valid`.
    :param columns: the :class:`RowColumns` of ``items``, to share the columns built here (its
        ``layout`` is set when the rows share one).
    """
    count = len(items)
    if not count:
        return True
    if set(map(type, items)) != _DICT_ONLY:
        return False
    keys = tuple(items[0])
    if count > 1 and list(map(tuple, items)).count(keys) != count:
        return False
    columns = columns or RowColumns(items)
    columns.layout = keys
    checks = _layouts.get(keys, _UNSEEN)
    if checks is _UNSEEN:
        checks = _layout_checks(keys)
    if checks is None:
        return False
    for code in ("meter", "account"):
        column = columns.column(code)
        if set(map(type, column)) != _STR_ONLY:
            return False
        if not _checked_codes.issuperset(column) and (
            not unicode_codes or not (_checked_codes | _checked_unicode_codes).issuperset(column)
        ):
            return False
    if not _timestamps_certainly_valid(columns.column("ts")):
        return False
    field_codes = _checked_field_codes
    for key, kind in checks:
        column = columns.column(key)
        if kind > _METADATA:
            if kind == _TIME:
                if not _timestamps_certainly_valid(column):
                    return False
            elif (
                set(map(type, column)) != _STR_ONLY
                or 0 in map(len, column)  # an empty uid
                or max(map(len, column)) > MAX_UID_LENGTH
                or not all(map(str.isprintable, column))
            ):
                return False
            continue
        if set(map(type, column)) != _DICT_ONLY:
            return False
        layouts = set(columns.key_tuples(key))
        if len(layouts) > _MAX_FIELD_LAYOUTS or not all(map(field_codes.issuperset, layouts)):
            return False
        values = list(chain.from_iterable(map(dict.values, column)))
        if not values:
            continue
        kinds = set(map(type, values))
        if kind == _NUMBERS:
            # a comparison with NaN is False and the infinities are out of range: the two passes
            # refuse every non-finite float, as certainly_valid does
            if not kinds <= _NUMBER_TYPES or not (
                all(map(le, repeat(-MAX_EXACT_INTEGER), values))
                and all(map(ge, repeat(MAX_EXACT_INTEGER), values))
            ):
                return False
        elif kinds != _STR_ONLY or (
            not all(map(str.isascii, values)) and _SURROGATE.search("".join(values)) is not None
        ):
            return False  # a lone surrogate stays one when joined: the row-by-row check names it
        elif kind == _METADATA and max(map(len, values)) > MAX_METADATA_VALUE_LENGTH:
            return False
    return True


def _timestamps_certainly_valid(column: list[Any]) -> bool:
    """True when every value of ``column`` passes :func:`_fast_timestamp` (False: look row by row)."""
    return set(map(type, column)) == _STR_ONLY and all(map(_FAST_TIMESTAMP.fullmatch, column))


def validate_measurement(m: Any, unicode_codes: bool = False) -> list[FieldProblem]:
    """Check one measurement against m3ter's ingest rules (see the module docstring).

    :param m: the measurement, as a dict of JSON values.
    :param unicode_codes: accept ``meter``/``account`` codes beyond printable ASCII, under the
        best-effort look-alike checks of :func:`code_twin_problem` (default: ASCII only, which
        guarantees that no two codes look alike).
    :return: every problem found (empty when the measurement is valid).
    """
    if type(m) is not dict:
        return [FieldProblem("", f"a measurement must be an object, got {_type_name(m)}")]
    if certainly_valid(m, unicode_codes):
        return []
    problems: list[FieldProblem] = []
    if not m.keys() <= TOP_LEVEL_FIELDS:
        for key in sorted(map(str, m.keys() - TOP_LEVEL_FIELDS)):
            problems.append(FieldProblem(key, "unknown field; allowed: " + ", ".join(_ORDERED_FIELDS)))
    for required in ("meter", "account", "ts"):
        if required not in m:
            problems.append(FieldProblem(required, "is required"))
    for key, value in m.items():
        if key == "meter" or key == "account":
            if reason := _code_problem(value, key, unicode_codes):
                problems.append(FieldProblem(key, reason))
        elif key == "ts" or key == "ets":
            if reason := _timestamp_problem(value, key):
                problems.append(FieldProblem(key, reason))
        elif key == "uid":
            if type(value) is not str:
                problems.append(FieldProblem(key, f"must be a string, got {_type_name(value)}"))
            elif not 0 < len(value) <= MAX_UID_LENGTH:
                problems.append(FieldProblem(key, f"must be 1-{MAX_UID_LENGTH} characters, got {len(value)}"))
            elif not value.isprintable():
                problems.append(FieldProblem(key, "must not contain control characters"))
        elif key in NUMERIC_CATEGORIES:
            _number_map_problems(key, value, problems)
        elif key in STRING_CATEGORIES:
            _string_map_problems(key, value, problems)
    return problems
