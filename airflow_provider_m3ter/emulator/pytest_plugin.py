"""pytest fixtures for the emulator.

Opt in with ``pytest_plugins = ["airflow_provider_m3ter.emulator.pytest_plugin"]``.

- ``m3ter_emulator_server`` (session): one emulator subprocess on free ports.
- ``m3ter_emulator`` (function): the same emulator, reset before the test.
- ``m3ter_emulator_factory`` (function): ``factory(**options)`` starts extra emulators with special
  start-up options; they are stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_m3ter.emulator.process import Emulator, EmulatorProcess


@pytest.fixture(scope="session")
def m3ter_emulator_server() -> Iterator[Emulator]:
    """One emulator for the whole session (a subprocess on free ports)."""
    with EmulatorProcess() as emulator:
        yield emulator


@pytest.fixture
def m3ter_emulator(m3ter_emulator_server: Emulator) -> Emulator:
    """The session emulator with all state, faults and limits reset for this test.

    :param m3ter_emulator_server: the session emulator.
    """
    m3ter_emulator_server.reset()
    return m3ter_emulator_server


@pytest.fixture
def m3ter_emulator_factory() -> Iterator[Callable[..., Emulator]]:
    """A function that starts an emulator with given options (stopped after the test)."""
    started: list[EmulatorProcess] = []

    def start(**options: Any) -> Emulator:
        process = EmulatorProcess(**options)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()
