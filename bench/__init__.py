"""Benchmarks: balance (a deterministic simulation of the dispatch policies, no broker)."""
