"""Interaction datasets (MovieLens, Open Bandit) loaded from disk, and their mapping to events."""
