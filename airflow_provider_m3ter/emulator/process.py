"""Run the emulator as a subprocess and talk to its admin API: :class:`EmulatorProcess`, :class:`Emulator`.

Only the standard library is used here, so importing this module is cheap.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from airflow_provider_m3ter.emulator.options import EmulatorOptions


class EmulatorError(RuntimeError):
    """The emulator could not start, or an admin call failed."""


class Emulator:
    """A handle on a running emulator: its URLs and credentials, and admin helpers.

    :param config_url: base URL of the Config listener.
    :param ingest_url: base URL of the Ingest listener.
    :param org_id: the organization it serves.
    :param access_key_id: the Access Key ID it accepts.
    :param api_secret: the API Secret it accepts.
    """

    def __init__(
        self, config_url: str, ingest_url: str, org_id: str, access_key_id: str, api_secret: str
    ) -> None:
        self.config_url = config_url
        self.ingest_url = ingest_url
        self.org_id = org_id
        self.access_key_id = access_key_id
        self.api_secret = api_secret

    def __repr__(self) -> str:
        urls = f"config_url={self.config_url!r}, ingest_url={self.ingest_url!r}"
        return f"Emulator({urls}, org_id={self.org_id!r})"

    # ---- admin API -------------------------------------------------------------------------
    def admin(self, method: str, path: str, json_body: Any = None, **kwargs: Any) -> Any:
        """Call the admin API and return its decoded JSON answer.

        :param method: HTTP method.
        :param path: path under ``/_emulator/`` (for example ``stats``) or an absolute path.
        :param json_body: JSON body to send (also accepted as ``json=``).
        :param kwargs: ``json`` as an alias of ``json_body``.
        """
        if "json" in kwargs:
            json_body = kwargs.pop("json")
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        url = self.config_url + (path if path.startswith("/") else "/_emulator/" + path)
        data = None if json_body is None else json.dumps(json_body).encode()
        request = urllib.request.Request(url, data=data, method=method.upper())  # noqa: S310
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback URL
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise EmulatorError(f"{method} {path} -> {exc.code}: {detail}") from None
        return json.loads(raw) if raw else None

    def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats``."""
        result: dict[str, Any] = self.admin("GET", "stats")
        return result

    def measurements(self, **filters: Any) -> list[dict[str, Any]]:
        """Stored measurements in arrival order.

        :param filters: optional ``meter``, ``account``, ``offset``, ``limit``.
        """
        query = urllib.parse.urlencode({k: v for k, v in filters.items() if v is not None})
        answer = self.admin("GET", "measurements" + (f"?{query}" if query else ""))
        data: list[dict[str, Any]] = answer["data"]
        return data

    def reset(self, keep_tokens: bool = False) -> None:
        """Clear all state; faults, limits and job mode go back to their start-up values.

        :param keep_tokens: keep issued tokens valid.
        """
        self.admin("POST", "reset", {"keep_tokens": keep_tokens})

    def set_faults(self, **body: Any) -> dict[str, Any]:
        """Replace the fault plan (see ``POST /_emulator/faults``).

        :param body: ``seed``, ``rate``, ``kinds``, ``sequence``, ``retry_after``, ``target``,
            ``path_regex``, ``latency_ms``, ``list_413_above_page_size``.
        """
        result: dict[str, Any] = self.admin("POST", "faults", body)
        return result

    def clear_faults(self) -> None:
        """Remove every fault."""
        self.admin("POST", "faults", {})

    def set_limits(self, **body: Any) -> dict[str, Any]:
        """Replace the rate limits (see ``POST /_emulator/limits``).

        :param body: ``enabled``, ``org_rps``, ``ingest_window_requests``,
            ``config_window_requests``, ``window_seconds``.
        """
        result: dict[str, Any] = self.admin("POST", "limits", body)
        return result

    def secrets(self) -> dict[str, list[str]]:
        """Every credential handed out so far: ``access_tokens``, ``upload_tokens``, ``upload_headers``."""
        result: dict[str, list[str]] = self.admin("GET", "secrets")
        return result

    def expire_tokens(self) -> None:
        """Make every issued token expired (its next use gets 403)."""
        self.admin("POST", "tokens/expire")

    def advance_job(
        self, job_id: str, status: str | None = None, outcome: str | None = None
    ) -> dict[str, Any]:
        """Step a job one state, or to ``status``.

        :param job_id: the job id (any kind).
        :param status: a state to move to directly.
        :param outcome: ``succeeded`` or ``failed``: how the job ends.
        """
        body = {k: v for k, v in {"status": status, "outcome": outcome}.items() if v is not None}
        result: dict[str, Any] = self.admin("POST", f"jobs/{job_id}/advance", body)
        return result

    def set_job_outcome(self, kind: str, outcome: str) -> None:
        """Make jobs of ``kind`` created from now on end with ``outcome``.

        :param kind: ``fileupload``, ``billjob`` or ``dataexport``.
        :param outcome: ``succeeded`` or ``failed``.
        """
        self.admin("POST", "jobs/outcome", {"kind": kind, "outcome": outcome})

    def set_job_mode(self, mode: str, step_seconds: float | None = None) -> None:
        """Switch job progression to ``time`` or ``manual``.

        :param mode: ``time`` or ``manual``.
        :param step_seconds: seconds per state in ``time`` mode.
        """
        self.admin("POST", "jobs/mode", {"mode": mode, "step_seconds": step_seconds})

    def job(self, job_id: str) -> dict[str, Any]:
        """Any job with its kind, outcome and row problems.

        :param job_id: the job id.
        """
        result: dict[str, Any] = self.admin("GET", f"jobs/{job_id}")
        return result

    def validate_now(self) -> int:
        """Run the asynchronous measurement validation now; returns how many were checked."""
        return int(self.admin("POST", "validate")["validated"])

    def tamper(self, match: dict[str, Any], *, drop: bool = False, set: dict[str, Any] | None = None) -> int:
        """Drop or alter stored measurements (``POST /_emulator/measurements/tamper``); returns matches.

        :param match: top-level fields the measurements must equal (``{}``: all).
        :param drop: remove them.
        :param set: top-level fields to replace in them.
        """
        body: dict[str, Any] = {"match": match, "drop": drop}
        if set:
            body["set"] = set
        return int(self.admin("POST", "measurements/tamper", body)["matched"])

    def snapshot(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """Save the state to ``path`` (default: the ``--snapshot`` file).

        :param path: the file to write.
        """
        result: dict[str, Any] = self.admin("POST", "snapshot", {"path": None if path is None else str(path)})
        return result

    def token(self) -> str:
        """Fetch a bearer token the normal way (``POST /oauth/token``)."""
        basic = base64.b64encode(f"{self.access_key_id}:{self.api_secret}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - loopback URL
            self.config_url + "/oauth/token",
            data=b"grant_type=client_credentials",
            method="POST",
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback URL
            return str(json.loads(response.read())["access_token"])

    # ---- Airflow connection ----------------------------------------------------------------
    def connection(self) -> dict[str, Any]:
        """The Airflow connection (type ``m3ter``) pointing at this emulator, as a dict."""
        return {
            "conn_type": "m3ter",
            "host": self.config_url,
            "login": self.access_key_id,
            "password": self.api_secret,
            "extra": {"org_id": self.org_id, "ingest_url": self.ingest_url},
        }

    def connection_json(self) -> str:
        """The connection as JSON, usable as ``AIRFLOW_CONN_M3TER_DEFAULT``."""
        return json.dumps(self.connection())

    def connection_uri(self) -> str:
        """The connection as an Airflow URI (the Config URL, scheme included, is the encoded host)."""
        quote = urllib.parse.quote
        query = urllib.parse.urlencode({"org_id": self.org_id, "ingest_url": self.ingest_url})
        return (
            f"m3ter://{quote(self.access_key_id, safe='')}:{quote(self.api_secret, safe='')}"
            f"@{quote(self.config_url, safe='')}/?{query}"
        )

    def airflow_env(self, conn_id: str = "m3ter_default") -> dict[str, str]:
        """Environment variables that define the connection for an Airflow process.

        :param conn_id: the connection id (``m3ter_default`` -> ``AIRFLOW_CONN_M3TER_DEFAULT``).
        """
        return {f"AIRFLOW_CONN_{conn_id.upper()}": self.connection_json()}


class EmulatorProcess:
    """The emulator in a subprocess on free ports: ``with EmulatorProcess(**options) as emu: ...``.

    :param options: start-up options (``port`` and ``ingest_port`` default to 0 here).
    :param startup_timeout: seconds to wait for the ready line.
    :param overrides: any :class:`EmulatorOptions` field, for example ``job_mode="manual"``.
    """

    def __init__(
        self, options: EmulatorOptions | None = None, *, startup_timeout: float = 30.0, **overrides: Any
    ) -> None:
        base = options or EmulatorOptions(port=0, ingest_port=0)
        self.options = replace(base, **overrides)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[str] | None = None
        self.emulator: Emulator | None = None
        self.log_path: Path | None = None

    def start(self) -> Emulator:
        """Start the subprocess and wait until it announces its URLs."""
        command = [sys.executable, "-m", "airflow_provider_m3ter.emulator", *self.options.to_argv()]
        log_fd, log_name = tempfile.mkstemp(prefix="m3ter-emulator-", suffix=".log")
        self.log_path = Path(log_name)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log_fd, stdin=subprocess.DEVNULL, text=True, env=env
        )
        os.close(log_fd)
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(self.startup_timeout)
        if not line or not line[0].strip():
            self.stop()
            raise EmulatorError(f"the emulator did not start; its log:\n{self.read_log()}")
        ready = json.loads(line[0])
        self.emulator = Emulator(
            ready["config_url"],
            ready["ingest_url"],
            ready["org_id"],
            self.options.access_key_id,
            self.options.api_secret,
        )
        return self.emulator

    def read_log(self) -> str:
        """What the emulator wrote to stderr so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the subprocess gracefully (SIGTERM, so a snapshot is saved), killing it if needed.

        :param timeout: seconds to wait before killing it.
        """
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self.log_path is not None and exc is None:
            self.log_path.unlink(missing_ok=True)
