"""Benchmarks run with pytest-benchmark: `make bench`. Peers are skipped when not installed."""
