"""A throwaway PostgreSQL server for tests: Debian's ``postgresql`` binaries, started on loopback.

The server runs from a fresh data directory in the system temp dir, as the ``postgres`` user when
the tests run as root (``initdb`` refuses root), with trust authentication on 127.0.0.1 only, and
is stopped (``-m immediate``) when the session ends. ``.ci/run`` installs the package when missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are (the newest Debian cluster version), or None."""
    found = None
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)):
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            found = path
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server() -> Iterator[str]:
    """Start a server; yield a libpq connection string for it; stop and remove it afterwards.

    :raises RuntimeError: PostgreSQL is not installed or does not start (the message says why).
    """
    binaries = bindir()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
    base = Path(tempfile.mkdtemp(prefix="m3ter-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root and there is no 'postgres' user to run the server") from None
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()
    try:
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        subprocess.run(
            [*prefix, *initdb, "-E", "UTF8", "--no-sync", "--locale=C"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off"
        pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log")]
        subprocess.run(
            [*prefix, *pg_ctl, "-w", "-t", "60", "-o", options, "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        stderr = getattr(exc, "stderr", b"") or b""
        reason = f"{stderr.decode(errors='replace')[-500:]} {log[-500:]}"
        raise RuntimeError(f"PostgreSQL did not start: {reason}") from exc
    try:
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    finally:
        subprocess.run(
            [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)
