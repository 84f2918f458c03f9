"""Airflow names only the tests use, where the supported Airflow lines keep them in different places.

The package's own version differences live in ``airflow_provider_m3ter.compat``; these are the
test-only ones (DAG bags, DAG serialization, building Connections from a URI or JSON).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_m3ter.compat import AIRFLOW_VERSION


def dag_bag(dag_folder: str) -> Any:
    """Airflow's ``DagBag`` over ``dag_folder`` (``airflow.dag_processing.dagbag`` from 3.2)."""
    if AIRFLOW_VERSION >= (3, 2):
        from airflow.dag_processing.dagbag import DagBag
    else:
        from airflow.models.dagbag import DagBag
    return DagBag(dag_folder=dag_folder)


def dag_serialization() -> Any:
    """What serializes DAGs for the API server: ``DagSerialization`` (3.2+) or ``SerializedDAG``."""
    if AIRFLOW_VERSION >= (3, 2):
        from airflow.serialization.serialized_objects import DagSerialization

        return DagSerialization
    from airflow.serialization.serialized_objects import SerializedDAG

    return SerializedDAG


def connection_from_uri(conn_id: str, uri: str) -> Any:
    """A Connection parsed from an Airflow connection URI (the task SDK's where it can parse one)."""
    from airflow.sdk import Connection

    if AIRFLOW_VERSION >= (3, 2):
        return Connection(conn_id=conn_id, uri=uri)
    if hasattr(Connection, "from_uri"):  # 3.1
        return Connection.from_uri(uri, conn_id=conn_id)
    from airflow.models.connection import Connection as CoreConnection  # 3.0

    return CoreConnection(conn_id=conn_id, uri=uri)


def connection_from_json(value: str, conn_id: str | None = None) -> Any:
    """A Connection from its JSON form (``AIRFLOW_CONN_*`` values)."""
    from airflow.sdk import Connection

    if hasattr(Connection, "from_json"):
        return Connection.from_json(value, conn_id=conn_id)
    from airflow.models.connection import Connection as CoreConnection  # 3.0

    return CoreConnection.from_json(value, conn_id=conn_id)
