"""Benchmarks (`rof bench ...`); `rl` against the C yardstick qlearn_ref.c in this package."""
