"""``M3terIngestMeasurementsOperator``: load usage into m3ter from a list, a file or a SQL query.

The operator reads its source as a stream, validates every row before sending anything, gives
rows without a ``uid`` a deterministic one, and submits paced batches through
:class:`~airflow_provider_m3ter.hooks.m3ter.M3terHook`. Progress is checkpointed in Airflow 3.3's
``task_state_store`` so a retry after a crash resumes after the last acknowledged batch. The
return value (XCom) is a small JSON summary, never the data.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_m3ter.client.ingest import IngestRun
from airflow_provider_m3ter.client.ingest_progress import InvalidMeasurementsError
from airflow_provider_m3ter.client.preflight import Preflight
from airflow_provider_m3ter.compat import AirflowFailException
from airflow_provider_m3ter.hooks.pool_pacing import pool_share
from airflow_provider_m3ter.links import M3terConsoleLink, link_task_to_console
from airflow_provider_m3ter.manual_runs import IntervalTemplatesGuard
from airflow_provider_m3ter.operators.mapping import RowMapping, SourceError
from airflow_provider_m3ter.operators.sources import (
    FILE_FORMATS,
    DuplicateKeyError,
    FileSource,
    IterableSource,
    JsonTextSource,
    MeasurementSource,
    NestingError,
    SqlSource,
    loads_strict,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = [
    "CHECKPOINT_KEY",
    "M3terIngestMeasurementsOperator",
    "M3terInvalidMeasurements",
    "TaskStateCheckpoint",
]

#: The ``task_state_store`` key holding an ingest task's progress.
CHECKPOINT_KEY = "m3ter_ingest_checkpoint"
_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class M3terInvalidMeasurements(AirflowFailException):
    """Rows failed validation with ``on_invalid="fail"``: nothing was sent, and retrying cannot help.

    :param error: the run's :class:`~airflow_provider_m3ter.client.ingest_progress.InvalidMeasurementsError`
        (its ``errors`` list the first problems, ``invalid_rows`` counts them all).
    """

    def __init__(self, error: InvalidMeasurementsError) -> None:
        super().__init__(str(error))
        self.error = error


class _Data:
    """Inline ``measurements``, marked as data: Airflow resolves it as is and never renders it.

    ``measurements`` stays a template field so that ``other_task.output`` (an XComArg) is resolved
    and makes the upstream dependency; Airflow resolves XComArgs (and this wrapper) without
    rendering their contents. Nothing in measurement data is ever a Jinja template.
    """

    def __init__(self, value: Any) -> None:
        self.value = value

    def resolve(self, context: Any) -> Any:
        """The data, untouched (Airflow's template rendering calls this)."""
        return self.value

    def __repr__(self) -> str:
        return f"<measurement data: {type(self.value).__name__}>"


class TaskStateCheckpoint:
    """Keeps an ingest checkpoint in Airflow's ``task_state_store`` (one JSON value per task instance).

    :param store: ``context["task_state_store"]`` (Airflow 3.3+).
    :param key: the key to keep the checkpoint under.
    """

    def __init__(self, store: Any, key: str = CHECKPOINT_KEY) -> None:
        self.store = store
        self.key = key

    def load(self) -> dict[str, Any] | None:
        """The saved checkpoint, or None."""
        value = self.store.get(self.key)
        return value if isinstance(value, dict) else None

    def save(self, state: dict[str, Any]) -> None:
        """Save (overwrite) the checkpoint."""
        self.store.set(self.key, state)

    def clear(self) -> None:
        """Remove the checkpoint."""
        self.store.delete(self.key)


class M3terIngestMeasurementsOperator(IntervalTemplatesGuard, BaseOperator):
    """Submit measurements to m3ter's Ingest API from exactly one source.

    Sources (give exactly one):

    * ``measurements``: a list of measurement dicts, inline or from XCom (``other_task.output``);
      a JSON string is parsed.
    * ``source_path``: a JSON Lines, JSON array or CSV file, optionally gzip-compressed; a local
      path, a URL such as ``file:///data/usage.jsonl`` or ``s3://bucket/key`` (through
      ``ObjectStoragePath``), or an ``ObjectStoragePath``. Read as a stream.
    * ``sql`` with ``sql_conn_id``: a query through any Airflow ``DbApiHook`` connection, read
      with ``fetchmany``.

    Flat rows (CSV, SQL, flat dicts) become measurements through ``mapping``; ``meter`` and
    ``account`` fill rows that lack them. ``source_path``, ``sql``, ``sql_parameters``,
    ``meter``, ``account``, ``dead_letter_path`` and ``uid_namespace`` are templated, so
    ``{{ data_interval_start }}`` selects the run's usage. ``measurements`` is data and never a
    template: inline values and values from XCom are sent exactly as given (``"{{ 7*7 }}"`` stays
    that string); an XComArg there is resolved (and makes the upstream dependency).

    :param m3ter_conn_id: the Airflow connection of type ``m3ter``.
    :param measurements: measurement dicts (or flat dicts with ``mapping``), or a JSON string of them.
    :param source_path: the file to read (path, URL or ``ObjectStoragePath``).
    :param source_format: ``jsonl``, ``json`` (array) or ``csv``; ``None`` detects it from the
        suffix or the first bytes.
    :param sql: the query whose rows are the measurements (a ``.sql`` file name is read as a template).
    :param sql_conn_id: the database connection for ``sql`` (its hook must be a ``DbApiHook``).
    :param sql_parameters: bind parameters for ``sql``.
    :param fetch_size: rows fetched per ``fetchmany`` round trip.
    :param mapping: column -> target, where a target is ``meter``, ``account``, ``ts``, ``ets``,
        ``uid`` or ``<category>.<field>`` (``measure.requests``, ``who.user``). Unlisted columns are
        ignored. Without a mapping, flat columns must be named like targets.
    :param meter: Meter code for rows without one.
    :param account: Account code for rows without one.
    :param on_invalid: ``"fail"`` (default) sends nothing if any row is invalid and fails the task
        listing the first problems; ``"skip"`` sends the valid rows and writes the rejected ones,
        with reasons, to ``dead_letter_path``.
    :param dead_letter_path: JSON Lines file for rejected rows (``skip``); default: a file under the
        worker's temp directory named after the DAG run and task. The path is in the summary.
    :param max_errors_reported: how many row problems the failure message lists.
    :param uid_namespace: scopes derived uids; default ``<dag_id>.<task_id>`` (plus the map
        index of a mapped task). Keep it stable so reruns reuse the same uids.
    :param max_in_flight: concurrent ingest requests (1-16). The connection's pacing still applies.
    :param checkpoint: keep progress in ``task_state_store`` so a retry resumes after the last
        acknowledged batch (Airflow 3.3+; ignored where the store does not exist).
    :param progress_interval: seconds between progress log lines.
    :param spill_dir: directory for the temporary file of prepared batches (default: temp dir).
    :param pool_slots_total: the size of the task's ``pool`` when tasks share one organization
        through it: the task then paces at ``pool_slots / pool_slots_total`` of the connection's
        limits (see :mod:`airflow_provider_m3ter.hooks.pool_pacing`). Default: not shared.
    :param deduplicate: ``False`` (default): identical rows without ``uid`` are distinct
        measurements, each stored with its own stable uid (counted in the summary's ``identical``).
        ``True``: the source repeats itself, send each distinct row once (the repeats are counted in
        ``identical`` and ``deduplicated``).
    :param preflight: before sending, look up the meters and accounts the rows use (one Config
        list call per 100 codes) and treat rows m3ter would reject later (unknown meter, a field
        the meter lacks or has in another category, a derived field sent, a required numeric
        field missing) as invalid rows, following ``on_invalid``. ``False`` turns it off.
    :param unknown_accounts: with ``preflight``: ``"fail"`` (default) makes a row whose account
        code m3ter does not know invalid (m3ter would silently create a new account);
        ``"allow"`` lets m3ter create it.
    :param unicode_codes: ``False`` (default): ``meter`` and ``account`` codes must be printable
        ASCII, which guarantees that no two codes look alike (m3ter creates unknown accounts
        silently). ``True``: other characters are accepted under best-effort look-alike checks
        (see the README's "Validation").
    :param kwargs: passed to ``BaseOperator`` (``retries``, ``retry_delay``, ``retry_policy``, ``pool`` ...).
    """

    template_fields: Sequence[str] = (
        "measurements",
        "source_path",
        "sql",
        "sql_parameters",
        "meter",
        "account",
        "dead_letter_path",
        "uid_namespace",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql", "sql_parameters": "json", "measurements": "json"}
    operator_extra_links = (M3terConsoleLink(),)
    ui_color = "#d9ecf2"
    ui_fgcolor = "#0b3d4f"

    def __init__(
        self,
        *,
        m3ter_conn_id: str = "m3ter_default",
        measurements: Iterable[Mapping[str, Any]] | str | None = None,
        source_path: Any = None,
        source_format: str | None = None,
        sql: str | None = None,
        sql_conn_id: str | None = None,
        sql_parameters: Any = None,
        fetch_size: int = 5000,
        mapping: Mapping[str, str] | None = None,
        meter: str | None = None,
        account: str | None = None,
        on_invalid: str = "fail",
        dead_letter_path: str | None = None,
        max_errors_reported: int = 20,
        uid_namespace: str | None = None,
        max_in_flight: int = 1,
        checkpoint: bool = True,
        progress_interval: float = 5.0,
        spill_dir: str | None = None,
        pool_slots_total: int | None = None,
        deduplicate: bool = False,
        preflight: bool = True,
        unknown_accounts: str = "fail",
        unicode_codes: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        where = f"{type(self).__name__}({self.task_id!r})"
        # the share of the organization's limits this task may use (checked at parse time)
        self.limit_share = pool_share(where, self.pool, self.pool_slots, pool_slots_total)
        self.pool_slots_total = pool_slots_total
        given = [name for name, value in (("measurements", measurements), ("source_path", source_path),
                                           ("sql", sql)) if value is not None]  # fmt: skip
        if len(given) != 1:
            raise ValueError(
                f"{where}: give exactly one source: measurements, source_path or sql "
                f"(got {', '.join(given) if given else 'none'})"
            )
        if sql is not None and not sql_conn_id:
            raise ValueError(f"{where}: sql needs sql_conn_id (the database connection to run it on)")
        if source_format is not None and source_format not in FILE_FORMATS:
            raise ValueError(f"{where}: source_format must be one of {', '.join(FILE_FORMATS)} or None")
        if on_invalid not in ("fail", "skip"):
            raise ValueError(f"{where}: on_invalid must be 'fail' or 'skip', got {on_invalid!r}")
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or not 1 <= max_in_flight <= 16
        ):
            raise ValueError(f"{where}: max_in_flight must be an integer from 1 to 16, got {max_in_flight!r}")
        if unknown_accounts not in ("fail", "allow"):
            raise ValueError(f"{where}: unknown_accounts must be 'fail' or 'allow', got {unknown_accounts!r}")
        if not isinstance(fetch_size, int) or fetch_size < 1:
            raise ValueError(f"{where}: fetch_size must be a positive integer, got {fetch_size!r}")
        if not isinstance(deduplicate, bool):
            raise ValueError(f"{where}: deduplicate must be True or False, got {deduplicate!r}")
        if not isinstance(unicode_codes, bool):
            raise ValueError(f"{where}: unicode_codes must be True or False, got {unicode_codes!r}")
        if mapping is not None and not isinstance(mapping, Mapping):
            raise ValueError(f"{where}: mapping must be a dict of column -> target")
        try:
            RowMapping(mapping)  # checks every target now, at DAG parse time
        except SourceError as exc:
            raise ValueError(f"{where}: {exc}") from None
        self.m3ter_conn_id = m3ter_conn_id
        # data, not a template; an XComArg is left to Airflow to resolve
        self.measurements = (
            measurements
            if measurements is None or callable(getattr(measurements, "resolve", None))
            else _Data(measurements)
        )
        self.source_path = source_path
        self.source_format = source_format
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.sql_parameters = sql_parameters
        self.fetch_size = fetch_size
        self.mapping = dict(mapping) if mapping is not None else None
        self.meter = meter
        self.account = account
        self.on_invalid = on_invalid
        self.dead_letter_path = dead_letter_path
        self.max_errors_reported = max_errors_reported
        self.uid_namespace = uid_namespace
        self.max_in_flight = max_in_flight
        self.checkpoint = checkpoint
        self.progress_interval = progress_interval
        self.spill_dir = spill_dir
        self.deduplicate = deduplicate
        self.preflight = bool(preflight)
        self.unknown_accounts = unknown_accounts
        self.unicode_codes = unicode_codes

    # -- pieces -------------------------------------------------------------------------------------

    def build_source(self) -> MeasurementSource:
        """The row source for the (rendered) arguments."""
        mapping = RowMapping(self.mapping, meter=self.meter or None, account=self.account or None)
        if self.source_path is not None:
            return FileSource(self.source_path, self.source_format, mapping)
        if self.sql is not None:
            return SqlSource(str(self.sql_conn_id), self.sql, self.sql_parameters, mapping, self.fetch_size)
        items = self.measurements
        if isinstance(items, _Data):  # not rendered (execute() called directly)
            items = items.value
        if isinstance(items, str):
            try:
                items = loads_strict(items)
            except NestingError:
                # read the array element by element: the deep element becomes a row error
                return JsonTextSource(items, mapping)
            except DuplicateKeyError as exc:
                raise SourceError(f"measurements: {exc}; which value is meant is ambiguous") from None
            except ValueError as exc:
                raise SourceError(f"measurements is a string but not JSON: {exc}") from None
        if isinstance(items, Mapping) or items is None or not isinstance(items, Iterable):
            raise SourceError(
                f"measurements must be a list of measurement objects, got {type(items).__name__}"
            )
        return IterableSource(items, mapping)

    def _namespace(self, context: Context) -> str:
        if self.uid_namespace:
            return str(self.uid_namespace)
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        suffix = f".{map_index}" if isinstance(map_index, int) and map_index >= 0 else ""
        return f"{self.dag_id}.{self.task_id}{suffix}"

    def _dead_letter_path(self, context: Context) -> str:
        if self.dead_letter_path:
            return str(self.dead_letter_path)
        run_id = _UNSAFE_PATH_CHARS.sub("_", str(context.get("run_id") or "run"))
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        name = self.task_id + (f".{map_index}" if isinstance(map_index, int) and map_index >= 0 else "")
        return str(
            Path(tempfile.gettempdir()) / "m3ter-dead-letters" / self.dag_id / run_id / f"{name}.jsonl"
        )

    def checkpoint_store(self, context: Context) -> TaskStateCheckpoint | None:
        """Where this try keeps its progress: ``task_state_store`` when present (override to change)."""
        if not self.checkpoint:
            return None
        store = context.get("task_state_store")  # type: ignore[misc]
        if store is None:
            self.log.info("No task_state_store here (Airflow < 3.3): a retry resends, with the same uids")
            return None
        return TaskStateCheckpoint(store)

    # -- execute ------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """Read, validate and send the source; return the ingest summary (JSON-ready)."""
        from airflow_provider_m3ter.hooks.m3ter import M3terHook

        hook = M3terHook(m3ter_conn_id=self.m3ter_conn_id, limit_share=self.limit_share)
        client = hook.get_client()
        # the "m3ter Console" link: the organization's events, where rejected measurements show
        link_task_to_console(context, client.settings, "event", log=self.log)
        source = self.build_source()
        try_number = getattr(context["ti"], "try_number", 1) or 1
        run = IngestRun(
            client,
            namespace=self._namespace(context),
            on_invalid="skip" if self.on_invalid == "skip" else "fail",
            dead_letter_path=self._dead_letter_path(context) if self.on_invalid == "skip" else None,
            max_in_flight=self.max_in_flight,
            checkpoint=self.checkpoint_store(context),
            max_errors_reported=self.max_errors_reported,
            progress_interval=self.progress_interval,
            spill_dir=self.spill_dir,
            rerun=try_number > 1,
            logger=self.log,
            deduplicate=self.deduplicate,
            preflight=Preflight(client, unknown_accounts=self.unknown_accounts) if self.preflight else None,  # type: ignore[arg-type]
            unicode_codes=self.unicode_codes,
        )
        try:
            with hook.translate_errors():
                summary = run.run(source.rows(), source.name)
        except InvalidMeasurementsError as exc:
            raise M3terInvalidMeasurements(exc) from exc
        finally:
            hook.close()
        if summary.invalid:
            self.log.warning(
                "%d invalid rows were skipped; they are in %s", summary.invalid, summary.dead_letter_path
            )
        return summary.as_dict()
