"""Benchmarks run by `make bench`: the service as a separate process, driven from this one."""
