"""Share one organization's request limits among the tasks of an Airflow pool.

m3ter's limits hold for all the traffic of an organization (per second) and of a source IP (per
rolling window), while a client paces only its own requests. Airflow's way to bound how many tasks
run at once is a pool: a pool of ``N`` slots runs at most ``N`` slot-holders together, across DAGs.
So a task that holds ``k`` of the pool's ``N`` slots may use ``k / N`` of every limit, and the
sum over the tasks the pool lets run together stays within the limits however the scheduler
overlaps them.

A running task cannot read a pool's size in Airflow 3 (workers have no metadata-database access
and the Task Execution API does not serve pools), so the operator is told it:
``pool_slots_total`` must equal the pool's slots. No I/O and no Airflow import here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from airflow_provider_m3ter.client import ClientSettings

__all__ = ["pool_share", "shared_settings"]

_PER_SECOND = ("ingest_requests_per_second", "config_requests_per_second")
_PER_WINDOW = ("ingest_requests_per_window", "config_requests_per_window")


def pool_share(task_id: str, pool: str | None, pool_slots: int, pool_slots_total: int | None) -> float:
    """The share of the organization's limits a task may use: ``pool_slots / pool_slots_total``.

    :param task_id: for error messages.
    :param pool: the task's pool (``BaseOperator.pool``).
    :param pool_slots: slots the task takes (``BaseOperator.pool_slots``, default 1).
    :param pool_slots_total: the pool's size, or None for a task that does not share (share 1).
    :return: a number in (0, 1].
    :raises ValueError: ``pool_slots_total`` is not a positive integer, is smaller than
        ``pool_slots``, or is given for a task in Airflow's ``default_pool``/no pool.
    """
    if pool_slots_total is None:
        return 1.0
    if isinstance(pool_slots_total, bool) or not isinstance(pool_slots_total, int) or pool_slots_total < 1:
        raise ValueError(f"{task_id}: pool_slots_total must be a positive integer, got {pool_slots_total!r}")
    if not pool or pool == "default_pool":
        raise ValueError(
            f"{task_id}: pool_slots_total={pool_slots_total} needs the task in its own pool "
            "(pool='m3ter_ingest', say): default_pool is shared with every other task"
        )
    if pool_slots > pool_slots_total:
        raise ValueError(
            f"{task_id}: the task takes {pool_slots} slots of pool {pool!r}, more than its "
            f"pool_slots_total={pool_slots_total}"
        )
    return pool_slots / pool_slots_total


def shared_settings(settings: ClientSettings, share: float) -> ClientSettings:
    """``settings`` with every client-side limit scaled by ``share`` (a limit switched off stays off).

    Per-second limits become ``limit * share``; per-window counts become ``floor(limit * share)``
    (at least 1), so ``N`` tasks with share ``1/N`` never add up to more than the limit.

    :param settings: the connection's settings.
    :param share: in (0, 1]; 1 returns ``settings`` unchanged.
    :raises ValueError: ``share`` is outside (0, 1].
    """
    if not 0 < share <= 1 or math.isnan(share):
        raise ValueError(f"share of the limits must be in (0, 1], got {share!r}")
    if share == 1:
        return settings
    changes: dict[str, Any] = {}
    for name in _PER_SECOND:
        value = getattr(settings, name)
        if value is not None:
            changes[name] = value * share
    for name in _PER_WINDOW:
        value = getattr(settings, name)
        if value is not None:
            changes[name] = max(1, math.floor(value * share))
    return dataclasses.replace(settings, **changes)
