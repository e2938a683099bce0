"""Profiling drivers: a fixed number of requests driven in-process, for instruction counts."""
