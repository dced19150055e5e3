"""Benchmarks of pneumoscan: each script writes a JSON record to ``bench/results`` (see bench/README.md)."""
