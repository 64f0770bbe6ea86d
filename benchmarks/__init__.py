"""Benchmarks for event-mesh: ``python -m benchmarks --help``.

Figures are measured here and written to ``benchmarks/results/``; they are never
asserted in unit tests (a smoke run in CI only proves the harness works).
"""
