"""A real Airflow deployment of the provider, as a user installs it, on loopback.

:class:`Deployment` builds the provider's wheel, installs it into a fresh virtual environment with
exactly the README's install line, and starts the four Airflow 3 components (api-server,
scheduler, dag-processor, triggerer; LocalExecutor, SQLite metadata database) plus the local m3ter
emulator with m3ter's rate limits on. Everything listens on 127.0.0.1 only, and every process is
started here and stopped by its pid.

Used by ``make deploy-test`` and ``make ui-test`` (``deployment/test_*.py``); not part of
``make test``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from airflow_provider_m3ter.emulator import EmulatorProcess

REPO = Path(__file__).resolve().parents[1]
# screenshots and a copy of the processes' logs of the last run (gitignored); M3TER_E2E_ARTIFACTS moves it
ARTIFACTS = Path(os.environ.get("M3TER_E2E_ARTIFACTS") or REPO / "artifacts" / "e2e")
AIRFLOW_VERSION = os.environ.get("AIRFLOW_VERSION", "3.3.2")
# The README's install line for running the example DAGs (kept in sync by test_readme_install_line).
README_INSTALL = 'pip install "apache-airflow=={airflow}" "{wheel}[examples]"'
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def say(text: str) -> None:
    print(f"[deploy {time.strftime('%H:%M:%S')}] {text}", flush=True)


def build_wheel(out: Path) -> Path:
    """Build the provider's wheel from the repository into ``out``; return its path."""
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("airflow_provider_m3ter-*.whl")
    return wheel


def install_venv(venv: Path, wheel: Path) -> None:
    """A fresh venv holding only what the README's install line installs."""
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    line = README_INSTALL.format(airflow=AIRFLOW_VERSION, wheel=wheel)
    say(f"installing into a fresh venv: {line}")
    args = line.split()[2:]
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *(a.strip('"') for a in args)],
        check=True,
    )


class Deployment:
    """The provider installed from its wheel and run by real Airflow components.

    :param work: a scratch directory (Airflow home, logs, venv, dags).
    :param reuse_venv: keep an existing venv in ``work`` (local iteration only; CI builds afresh).
    """

    def __init__(self, work: Path, *, reuse_venv: bool = False) -> None:
        self.work = work
        self.venv = work / "venv"
        self.home = work / "airflow-home"
        self.logs = work / "process-logs"
        self.dags = work / "dags"
        self.data = work / "example-data"
        self.reuse_venv = reuse_venv
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_password = secrets.token_urlsafe(16)
        self.emulator_secret = "emu-" + secrets.token_urlsafe(24)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.emulator_process: EmulatorProcess | None = None
        self._token: str | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def install(self) -> None:
        """Build the wheel and install it (or reuse the venv when asked and present)."""
        wheel = build_wheel(self.work / "dist")
        if self.reuse_venv and (self.venv / "bin" / "airflow").exists():
            say(f"reusing {self.venv}, with the freshly built wheel")
            subprocess.run(
                [str(self.venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
                 "--force-reinstall", str(wheel)],
                check=True,
            )  # fmt: skip
            return
        install_venv(self.venv, wheel)

    def env(self) -> dict[str, str]:
        """The environment every Airflow process of this deployment gets."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV"))}
        base["PATH"] = f"{self.venv / 'bin'}:{base.get('PATH', '/usr/bin:/bin')}"
        return {
            **base,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__SECRET_KEY": self.api_secret_key,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # the example DAGs wait like production; against the emulator a second is plenty
            "M3TER_EXAMPLE_POLL_SECONDS": "1",
            # longer than a worker takes to exit after deferring here (up to ~5 s on 2 busy cores),
            # so Airflow 3.3.2's defer race (apache/airflow#67287) rarely costs a retry
            "M3TER_EXAMPLE_SETTLE_SECONDS": "8",
            "M3TER_EXAMPLE_DATA_DIR": str(self.data),
        }

    def start(self, dag_files: list[Path]) -> None:
        """Install, start the emulator and the four components, and wait until they are up."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.install()
        for path in (self.home, self.logs, self.dags, self.data):
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
        for source in dag_files:
            target = self.dags / source.name
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copy(source, target)
        self.fernet_key = self._venv_python(
            "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"
        )
        self.jwt_secret = secrets.token_urlsafe(32)
        self.api_secret_key = secrets.token_urlsafe(32)
        (self.home / "passwords.json").write_text(json.dumps({"admin": self.admin_password}))
        say("starting the emulator (m3ter's limits on)")
        self.emulator_process = EmulatorProcess(
            limits=True, api_secret=self.emulator_secret, job_step_seconds=1.0
        )
        self.emulator = self.emulator_process.start()
        say("airflow db migrate")
        self.airflow("db", "migrate")
        for component in COMPONENTS:
            self._spawn(
                component,
                ["airflow", component, *(["--port", str(self.port)] if component == "api-server" else [])],
            )
        self.wait_for(
            self._api_healthy, 180, "the api-server, scheduler, dag-processor and triggerer to be healthy"
        )

    def stop(self) -> dict[str, int | None]:
        """Stop every process this deployment started, by pid (SIGTERM, then SIGKILL).

        :return: each process's exit code, by name.
        :raises AssertionError: a process, or a child in a component's process group, is still alive.
        """
        codes: dict[str, int | None] = {}
        stopped = list(self.processes.items())
        for name, process in reversed(stopped):
            codes[name] = _stop(process)
        self.processes.clear()
        if self.emulator_process is not None:
            emulator = self.emulator_process.process
            emulator_pid = emulator.pid if emulator is not None else None
            codes["emulator"] = self.emulator_process.stop()
            if emulator_pid is not None and _alive(emulator_pid):
                raise AssertionError(f"the emulator (pid {emulator_pid}) is still running")
        alive = [f"{name} (pid {process.pid})" for name, process in stopped if _group_alive(process.pid)]
        if alive:
            raise AssertionError(f"still running after stop: {alive}")
        return codes

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(self.work),
            start_new_session=True,  # its own process group: stopping it stops its children
        )
        log.close()
        self.processes[name] = process
        say(f"started {name} (pid {process.pid})")

    def _venv_python(self, code: str) -> str:
        return subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code], check=True, capture_output=True, text=True
        ).stdout.strip()

    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` CLI command of the deployment's venv."""
        return subprocess.run(
            [str(self.venv / "bin" / "airflow"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=check,
            cwd=str(self.work),
        )

    # -- REST API ------------------------------------------------------------------------------

    def token(self) -> str:
        if self._token is None:
            reply = requests.post(
                f"{self.url}/auth/token",
                json={"username": "admin", "password": self.admin_password},
                timeout=30,
            )
            reply.raise_for_status()
            self._token = str(reply.json()["access_token"])
        return self._token

    def api(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201)) -> Any:
        """Call Airflow's public REST API (``/api/v2``) as the admin user."""
        reply = requests.request(
            method,
            f"{self.url}/api/v2/{path.lstrip('/')}",
            json=body,
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=60,
        )
        if reply.status_code not in ok:
            raise AssertionError(f"{method} {path} -> {reply.status_code}: {reply.text[:2000]}")
        return reply.json() if reply.content else None

    def _api_healthy(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")
        try:
            health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        wanted = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        return all((health.get(part) or {}).get("status") == "healthy" for part in wanted)

    def tail(self, name: str, lines: int = 60) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    @staticmethod
    def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
        """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)

    # -- DAGs and runs ------------------------------------------------------------------------

    def wait_dags_parsed(self, dag_ids: list[str], timeout: float = 180) -> None:
        def parsed() -> bool:
            errors = self.api("GET", "importErrors")
            if errors["total_entries"]:
                raise AssertionError(f"import errors: {json.dumps(errors['import_errors'], indent=1)}")
            known = {d["dag_id"] for d in self.api("GET", "dags?limit=100")["dags"]}
            return set(dag_ids) <= known

        self.wait_for(parsed, timeout, f"the dag-processor to parse {dag_ids}", interval=2)

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"dags/{dag_id}", {"is_paused": False})

    def trigger(
        self, dag_id: str, *, logical_date: str | None = None, conf: dict[str, Any] | None = None
    ) -> str:
        """Trigger a run through the REST API (``logical_date`` None: a run without one)."""
        body: dict[str, Any] = {"logical_date": logical_date}
        if conf is not None:
            body["conf"] = conf
        return str(self.api("POST", f"dags/{dag_id}/dagRuns", body)["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"dags/{dag_id}/dagRuns?limit=100&order_by=run_after")["dag_runs"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
        """Wait until the run finishes; return it (its task instances under ``"tasks"``)."""

        def finished() -> dict[str, Any] | None:
            run = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")
            return run if run["state"] in ("success", "failed") else None

        run = self.wait_for(finished, timeout, f"{dag_id} run {run_id}", interval=2)
        run["tasks"] = self.task_instances(dag_id, run_id)
        return dict(run)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        tis = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
        return {ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti for ti in tis}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        reply = self.api(
            "GET",
            f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}?full_content=true",
        )
        content = reply.get("content")
        if isinstance(content, list):
            return "\n".join(
                str(item.get("event", item)) if isinstance(item, dict) else str(item) for item in content
            )
        return str(content)

    def defer_races(self, dag_id: str, run_id: str) -> Counter[str]:
        """Tries the scheduler failed by Airflow 3.3.2's defer race, per task id of one run.

        A deferred task whose trigger fires before the scheduler has processed its worker's exit is
        failed as "state mismatch" (apache/airflow#67287, fixed after 3.3.2); its retry recovers.
        """
        races: Counter[str] = Counter()
        path = self.logs / "scheduler.log"
        for match in _DEFER_RACE.finditer(path.read_text(errors="replace") if path.exists() else ""):
            if match["ti"].startswith(f"{dag_id}.") and match["run"] == run_id:
                races[match["ti"][len(dag_id) + 1 :]] += 1
        return races

    def log_files(self) -> Iterator[Path]:
        """Every log file of the deployment: the components' output and Airflow's task logs."""
        yield from self.logs.glob("*.log")
        yield from (
            p for p in self.home.rglob("*") if p.is_file() and (p.suffix == ".log" or "logs" in p.parts)
        )
        if self.emulator_process is not None and self.emulator_process.log_path is not None:
            yield self.emulator_process.log_path


_DEFER_RACE = re.compile(
    r"reported that the task instance <TaskInstance: (?P<ti>\S+) (?P<run>\S+) \[\w+\][^>]*> finished "
    r"with state success, but the task instance's state attribute is (?:scheduled|queued|running)"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a pid reused by another user's process
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """Whether any process of the process group ``pgid`` still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return False
    return True


def _stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> int | None:
    """SIGTERM the process group started with the process, then SIGKILL what is left."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
    # children that outlived their parent in the same group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.returncode
