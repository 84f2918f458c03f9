"""A plain-Python client for m3ter's Config and Ingest APIs (no Airflow import anywhere in here).

The common case is one call::

    from airflow_provider_m3ter.client import ClientSettings, M3terClient

    with M3terClient(ClientSettings(org_id=..., access_key_id=..., api_secret=...)) as client:
        meter = client.find_meter_by_code("api_calls")
"""

from __future__ import annotations

from airflow_provider_m3ter.client.core import M3terClient
from airflow_provider_m3ter.client.errors import (
    M3terBreaksConfigurationError,
    M3terConfigurationError,
    M3terError,
    M3terFinalError,
    M3terPayloadTooLargeError,
    M3terTransientError,
)
from airflow_provider_m3ter.client.pacing import RateLimiter
from airflow_provider_m3ter.client.settings import ClientSettings
from airflow_provider_m3ter.client.stats import ClientStats

__all__ = [
    "ClientSettings",
    "ClientStats",
    "M3terBreaksConfigurationError",
    "M3terClient",
    "M3terConfigurationError",
    "M3terError",
    "M3terFinalError",
    "M3terPayloadTooLargeError",
    "M3terTransientError",
    "RateLimiter",
]
