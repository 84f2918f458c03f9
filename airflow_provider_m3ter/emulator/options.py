"""Start-up options of the emulator, shared by the command line and :class:`EmulatorProcess`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_ORG_ID = "00000000-0000-4000-8000-000000000001"
DEFAULT_ACCESS_KEY_ID = "emulator-access-key"
DEFAULT_API_SECRET = "emulator-api-secret"  # noqa: S105 - a well-known local test credential
FAULT_KINDS = ("500", "502", "504", "429", "drop", "drop_after")


@dataclass
class EmulatorOptions:
    """Everything that can be set when the emulator starts.

    :param host: interface both listeners bind to.
    :param port: Config API port (0 picks a free port).
    :param ingest_port: Ingest API port (0 picks a free port).
    :param org_id: the one organization this emulator serves.
    :param access_key_id: the Access Key ID accepted by ``/oauth/token``.
    :param api_secret: the API Secret accepted by ``/oauth/token``.
    :param token_ttl: lifetime of issued tokens in seconds (``expires_in``).
    :param limits: whether rate limits are enforced.
    :param org_rps: per-organization requests per second, per API (Config and Ingest separately).
    :param ingest_window_requests: per-IP ingest requests allowed in one rolling window.
    :param config_window_requests: per-IP Config API requests allowed in one rolling window.
    :param window_seconds: length of the rolling window.
    :param job_mode: ``time`` (jobs move one state per ``job_step_seconds``) or ``manual``.
    :param job_step_seconds: seconds per job state in ``time`` mode.
    :param upload_url_ttl: seconds an upload URL stays valid.
    :param fault_rate: share of matching requests that get a fault.
    :param fault_kinds: faults drawn from when ``fault_rate`` fires.
    :param fault_seed: seed of the fault random generator (same seed, same faults).
    :param fault_target: ``ingest``, ``config``, ``token`` or ``all``.
    :param retry_after: ``Retry-After`` value sent with injected 429s (None: no header).
    :param latency_ms: delay added to every matching request.
    :param validation_delay: seconds between ingest and the asynchronous validation against meters.
    :param snapshot: JSON file loaded at start and written on shutdown and on request.
    :param access_log: print one line per request on stderr.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    ingest_port: int = 8081
    org_id: str = DEFAULT_ORG_ID
    access_key_id: str = DEFAULT_ACCESS_KEY_ID
    api_secret: str = field(default=DEFAULT_API_SECRET, repr=False)
    token_ttl: int = 18000
    limits: bool = False
    org_rps: int = 50
    ingest_window_requests: int = 5000
    config_window_requests: int = 20000
    window_seconds: float = 300.0
    job_mode: str = "time"
    job_step_seconds: float = 1.0
    upload_url_ttl: float = 60.0
    fault_rate: float = 0.0
    fault_kinds: list[str] = field(default_factory=lambda: ["500", "502", "504", "429", "drop"])
    fault_seed: int = 0
    fault_target: str = "all"
    retry_after: str | None = None
    latency_ms: float = 0.0
    validation_delay: float = 0.05
    snapshot: str | None = None
    access_log: bool = False

    def faults_body(self) -> dict[str, Any]:
        """The start-up faults in the shape of ``POST /_emulator/faults``."""
        return {
            "seed": self.fault_seed,
            "rate": self.fault_rate,
            "kinds": list(self.fault_kinds),
            "target": self.fault_target,
            "retry_after": self.retry_after,
            "latency_ms": self.latency_ms,
        }

    def limits_body(self) -> dict[str, Any]:
        """The start-up limits in the shape of ``POST /_emulator/limits``."""
        return {
            "enabled": self.limits,
            "org_rps": self.org_rps,
            "ingest_window_requests": self.ingest_window_requests,
            "config_window_requests": self.config_window_requests,
            "window_seconds": self.window_seconds,
        }

    def to_argv(self) -> list[str]:
        """The command-line arguments that reproduce these options (for a subprocess)."""
        argv: list[str] = []
        defaults = EmulatorOptions()
        for item in fields(self):
            value = getattr(self, item.name)
            if value == getattr(defaults, item.name) and item.name not in ("port", "ingest_port"):
                continue
            flag = "--" + item.name.replace("_", "-")
            if isinstance(value, bool):
                argv += [flag, "on" if value else "off"]
            elif isinstance(value, list):
                argv += [flag, ",".join(value)]
            elif value is not None:
                argv += [flag, str(value)]
        return argv


def _on_off(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("on", "true", "1", "yes"):
        return True
    if lowered in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


def _kinds(text: str) -> list[str]:
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault kinds {unknown}; choose from {', '.join(FAULT_KINDS)}"
        )
    return kinds


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m airflow_provider_m3ter.emulator`` argument parser."""
    d = EmulatorOptions()
    p = argparse.ArgumentParser(
        prog="python -m airflow_provider_m3ter.emulator",
        description="A local stand-in for m3ter's Config and Ingest APIs.",
    )
    p.add_argument("--host", default=d.host, help="interface to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="Config API port; 0 = any free port")
    p.add_argument(
        "--ingest-port", type=int, default=d.ingest_port, help="Ingest API port; 0 = any free port"
    )
    p.add_argument("--org-id", default=d.org_id, help="organization id served")
    p.add_argument("--access-key-id", default=d.access_key_id, help="accepted Access Key ID")
    p.add_argument("--api-secret", default=d.api_secret, help="accepted API Secret")
    p.add_argument("--token-ttl", type=int, default=d.token_ttl, help="token lifetime in seconds")
    p.add_argument("--limits", type=_on_off, default=d.limits, help="enforce rate limits: on|off")
    p.add_argument("--org-rps", type=int, default=d.org_rps, help="per-org requests/second, per API")
    p.add_argument("--ingest-window-requests", type=int, default=d.ingest_window_requests)
    p.add_argument("--config-window-requests", type=int, default=d.config_window_requests)
    p.add_argument("--window-seconds", type=float, default=d.window_seconds, help="rolling window length")
    p.add_argument("--job-mode", choices=["time", "manual"], default=d.job_mode)
    p.add_argument("--job-step-seconds", type=float, default=d.job_step_seconds)
    p.add_argument("--upload-url-ttl", type=float, default=d.upload_url_ttl, help="upload URL validity (s)")
    p.add_argument("--fault-rate", type=float, default=d.fault_rate, help="share of requests faulted")
    p.add_argument("--fault-kinds", type=_kinds, default=d.fault_kinds, help="comma-separated fault kinds")
    p.add_argument("--fault-seed", type=int, default=d.fault_seed)
    p.add_argument("--fault-target", choices=["ingest", "config", "token", "all"], default=d.fault_target)
    p.add_argument("--retry-after", default=d.retry_after, help="Retry-After value on injected 429s")
    p.add_argument("--latency-ms", type=float, default=d.latency_ms, help="delay added to each request")
    p.add_argument("--validation-delay", type=float, default=d.validation_delay)
    p.add_argument("--snapshot", default=d.snapshot, help="state file loaded at start, saved at stop")
    p.add_argument("--access-log", type=_on_off, default=d.access_log, help="log each request: on|off")
    return p


def parse_options(argv: list[str] | None = None) -> EmulatorOptions:
    """Parse command-line arguments into :class:`EmulatorOptions`.

    :param argv: the arguments (defaults to ``sys.argv[1:]``).
    """
    namespace = build_parser().parse_args(argv)
    return EmulatorOptions(**vars(namespace))
