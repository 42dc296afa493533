"""Alerts: rules that turn audit events into alerts, sinks that deliver them, deduplication
by fingerprint with a cooldown, and a ledger that stores every alert."""
