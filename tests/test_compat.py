"""compat: the one place that knows where each Airflow line keeps a name."""

from __future__ import annotations

import ast
from pathlib import Path

import airflow
import pytest

from airflow_provider_m3ter import compat
from airflow_provider_m3ter.compat import _version_tuple

PACKAGE = Path(compat.__file__).parent

# module prefixes whose contents moved between Airflow 3 lines: only compat.py may import them
MOVED = (
    "airflow.hooks",
    "airflow.exceptions",
    "airflow.configuration",
    "airflow.timetables",
    "airflow.models",
    "airflow.sdk.exceptions",
    "airflow.sdk.configuration",
    "airflow.sdk.log",
    "airflow.sdk._shared",
    "airflow.sdk.execution_time.secrets_masker",
    "airflow.sdk.definitions.retry_policy",
    "airflow.providers.common.compat",
)


def _imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names)
    return found


def test_only_compat_imports_names_that_moved_between_airflow_lines() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py" or "emulator" in path.parts:
            continue
        for line, module, names in _imports(ast.parse(path.read_text(), str(path))):
            moved = any(module == prefix or module.startswith(prefix + ".") for prefix in MOVED)
            # BaseHook moved to airflow.sdk in 3.1, CronDataIntervalTimetable in 3.2
            late_sdk = module == "airflow.sdk" and {"BaseHook", "CronDataIntervalTimetable"} & set(names)
            if moved or late_sdk:
                offenders.append(f"{path.relative_to(PACKAGE)}:{line}: {module} {names}")
    assert offenders == []


def test_no_airflow_import_fallbacks_outside_compat() -> None:
    # a ``try: from airflow... except ImportError`` anywhere else is a version difference that
    # escaped compat (optional non-Airflow packages such as wtforms may still be tried)
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py" or "emulator" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Try):
                continue
            caught = " ".join(ast.unparse(h.type) for h in node.handlers if h.type is not None)
            tried = [m for stmt in node.body for _, m, _ in _imports(stmt)]
            if ("ImportError" in caught or "ModuleNotFoundError" in caught) and any(
                m == "airflow" or m.startswith("airflow.") for m in tried
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.0.6", (3, 0, 6)),
        ("3.3.2", (3, 3, 2)),
        ("3.1.0rc1", (3, 1, 0)),
        ("3.2", (3, 2, 0)),
        ("3.2.1+x.7", (3, 2, 1)),
    ],
)
def test_version_tuple(text: str, expected: tuple[int, int, int]) -> None:
    assert _version_tuple(text) == expected


def test_version_is_the_installed_airflow() -> None:
    assert _version_tuple(airflow.__version__) == compat.AIRFLOW_VERSION
    assert compat.AIRFLOW_VERSION >= (3, 0, 0)


def test_a_registered_secret_is_redacted_in_text() -> None:
    # Airflow 3.0 keeps its masker in airflow.sdk.execution_time.secrets_masker; a lookup that
    # misses it returns the text unredacted, which this catches on every line of the matrix.
    compat.mask_secret("compat-test-secret-5f0c9a")
    assert compat.redact("token=compat-test-secret-5f0c9a;") == "token=***;"
    assert compat.redact("nothing secret here") == "nothing secret here"


def test_exceptions_are_the_ones_this_airflow_raises() -> None:
    assert issubclass(compat.AirflowFailException, compat.AirflowException)
    assert issubclass(compat.AirflowSkipException, compat.AirflowException)
    assert issubclass(compat.AirflowSensorTimeout, compat.AirflowException)
    if compat.AIRFLOW_VERSION >= (3, 2):
        from airflow.sdk import exceptions as sdk_exceptions

        assert compat.AirflowFailException is sdk_exceptions.AirflowFailException
    else:
        from airflow import exceptions as core_exceptions

        assert compat.AirflowFailException is core_exceptions.AirflowFailException


def test_cron_data_interval_timetable_schedules_a_dag() -> None:
    from datetime import datetime, timezone

    from airflow.sdk import DAG

    timetable = compat.CronDataIntervalTimetable("0 1 * * *", timezone="UTC")
    dag = DAG("compat_timetable", schedule=timetable, start_date=datetime(2024, 1, 1, tzinfo=timezone.utc))
    assert dag.timetable is timetable
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
