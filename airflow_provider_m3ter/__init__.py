"""Apache Airflow provider for m3ter, the usage-based billing platform.

Importing this package is cheap: it pulls in neither Airflow nor ``requests``. Airflow reads
:func:`get_provider_info` through the ``apache_airflow_provider`` entry point.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]

_INTEGRATION = "m3ter"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager (validated against provider_info.schema.json)."""
    from airflow_provider_m3ter.connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR

    return {
        "package-name": "airflow-provider-m3ter",
        "name": "m3ter",
        "description": "`m3ter <https://www.m3ter.com/>`__ usage-based billing: measurement ingest, "
        "meters as code, and sensors for m3ter's jobs and configuration.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://www.m3ter.com/docs/api",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_m3ter.hooks.m3ter"]}
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_m3ter.operators.ingest",
                    "airflow_provider_m3ter.operators.meters",
                    "airflow_provider_m3ter.operators.file_upload",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_m3ter.sensors.jobs",
                    "airflow_provider_m3ter.sensors.entity",
                    "airflow_provider_m3ter.sensors.events",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_m3ter.triggers.jobs",
                    "airflow_provider_m3ter.triggers.entity",
                    "airflow_provider_m3ter.triggers.events",
                ],
            }
        ],
        "connection-types": [
            {
                "connection-type": "m3ter",
                "hook-class-name": "airflow_provider_m3ter.hooks.m3ter.M3terHook",
                "hook-name": "m3ter",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "extra-links": [
            "airflow_provider_m3ter.links.M3terConsoleLink",
        ],
    }
