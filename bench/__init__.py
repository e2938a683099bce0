"""Benchmarks of issue 16: eight scenarios (``bench/<name>.py``) measured with one method
(``bench/_harness.py``), reported by ``bench/_report.py``.

``make bench`` (``python -m bench``) runs them all and writes ``bench/results/<timestamp>.json``,
``bench/REPORT.md`` and ``bench/charts/``; ``python -m bench [--quick] NAME ...`` runs some.
"""
