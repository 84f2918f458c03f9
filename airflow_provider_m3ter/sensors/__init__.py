"""Sensors for m3ter: job states, entity state, ingest validation events (poke, reschedule, deferrable)."""
