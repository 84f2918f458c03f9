"""``python -m airflow_provider_m3ter.emulator``: run the local m3ter."""

from __future__ import annotations

import sys

from airflow_provider_m3ter.emulator.options import parse_options
from airflow_provider_m3ter.emulator.server import run

if __name__ == "__main__":
    sys.exit(run(parse_options()))
