"""Operators of the m3ter provider, one module per job.

* :mod:`airflow_provider_m3ter.operators.ingest`: ``M3terIngestMeasurementsOperator`` (row sources
  in :mod:`airflow_provider_m3ter.operators.sources`, row mapping in
  :mod:`airflow_provider_m3ter.operators.mapping`).
* :mod:`airflow_provider_m3ter.operators.meters`: ``M3terSyncMetersOperator``.
* :mod:`airflow_provider_m3ter.operators.file_upload`: ``M3terFileUploadOperator``.

Import from the module you need; this package imports none of them, so loading one stays cheap.
"""
