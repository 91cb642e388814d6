"""Repogate's benchmark: `make bench`, or `python -m bench --help` from the repository root.

Starts Repogate (PostgreSQL and Redis) and tiny bare grpc.aio baseline servers, seeds a
bench database, drives each scenario from h2load (or, where every request must differ,
from a Python grpc.aio driver whose ceiling is measured too) and reports throughput,
latency, server CPU and memory, each beside the baseline it is judged against.
"""
