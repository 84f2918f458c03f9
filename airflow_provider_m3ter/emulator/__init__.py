"""A local stand-in for m3ter's Config and Ingest APIs, for tests, demos and benchmarks.

It is an independent implementation of m3ter's documented behaviour and imports nothing from the
rest of ``airflow_provider_m3ter``. Start it with ``python -m airflow_provider_m3ter.emulator`` or,
from Python, ``with EmulatorProcess() as emu: ...``. Importing this package is cheap: the web
framework is only imported by the server process.
"""

from __future__ import annotations

from airflow_provider_m3ter.emulator.options import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_API_SECRET,
    DEFAULT_ORG_ID,
    EmulatorOptions,
)
from airflow_provider_m3ter.emulator.process import Emulator, EmulatorError, EmulatorProcess

__all__ = [
    "DEFAULT_ACCESS_KEY_ID",
    "DEFAULT_API_SECRET",
    "DEFAULT_ORG_ID",
    "Emulator",
    "EmulatorError",
    "EmulatorOptions",
    "EmulatorProcess",
]
