"""Benchmarks: each module measures one thing for real and returns a flat dict of metrics."""
