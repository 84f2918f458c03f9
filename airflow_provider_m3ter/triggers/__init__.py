"""Deferrable triggers: async twins of the m3ter sensors' checks (job states, entities, ingest events)."""
