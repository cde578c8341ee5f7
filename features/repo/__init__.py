"""The Feast feature repository: entities, sources and feature views (see ``definitions``)."""
