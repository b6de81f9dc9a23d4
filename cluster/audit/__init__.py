"""Vault's audit log as Prometheus metrics: follow the file audit device, classify each refusal, count it."""
