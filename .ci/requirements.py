#!/usr/bin/env python3
"""Print the project's requirements without apache-airflow, one per line (for `make matrix`).

The matrix installs Airflow lines that ``pyproject.toml`` does not claim (to show their status), so
it installs the project with ``--no-deps`` and its other requirements from here.
Usage: requirements.py [EXTRA ...]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
wanted = list(project["dependencies"])
for extra in sys.argv[1:]:
    wanted += project["optional-dependencies"][extra]
for requirement in wanted:  # none holds a space: the Makefile splits this output on whitespace
    if re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower() != "apache-airflow":
        print(requirement)
