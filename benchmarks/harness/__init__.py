"""The shared benchmark harness: data, models, workloads, the compiled runner,
tuning, and the report and plot writers.

Scripts in `benchmarks/` import it as `harness` (their directory is on
`sys.path` when run as `python benchmarks/<script>.py`).
"""
