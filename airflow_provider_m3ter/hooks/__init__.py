"""Airflow hooks of the m3ter provider: ``M3terHook`` lives in :mod:`airflow_provider_m3ter.hooks.m3ter`."""
