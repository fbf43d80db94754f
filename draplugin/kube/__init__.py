"""Thin adapters between the Kubernetes API (kubernetes.aio) and the driver's domain types."""
