"""Offline evaluation: time-respecting protocols, metrics, baselines and reports."""
