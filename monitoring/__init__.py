"""Drift monitoring, pure: river detectors over event-time windows of outcome, input, exposure,
prediction and pipeline signals. No I/O client is imported here; the worker feeds it and persists
its state (``streams``), benchmarks replay streams through it (``benchmarks.drift``).
"""
