"""Benchmarks against the shared yardsticks."""
