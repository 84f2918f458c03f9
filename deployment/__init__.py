"""Deployment and browser tests: the provider's wheel under real Airflow components (not ``make test``)."""
