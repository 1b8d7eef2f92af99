"""Benchmarks that run corral end to end against the bundled provider simulator."""
