"""Benchmarks: load and latency scenarios, each printing ratios, not only absolute times.

Run all with `make bench` (``python -m bench``), one with ``python -m bench.<name>``.
Results land in ``bench/results/<name>.json``.
"""
