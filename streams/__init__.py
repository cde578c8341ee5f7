"""Kafka topics and codecs, the Faust app and agents, and the pure event-time state machines.

Layers (top to bottom; lower layers import nothing above them and no I/O client):

* ``app`` / ``agents`` — the Faust application and its thin agents (``aether worker``).
* ``statestore`` (Redis), ``topics`` (admin), ``publish`` (producer) — adapters.
* ``handlers`` — a batch of source records + loaded states → new states and effects.
* ``user_features`` / ``item_features`` — ``(state, event) -> (state, applied)`` state machines.
* ``eventtime`` — watermarks, lateness, bounded de-duplication.
* ``testing`` — the same handlers wired in memory, for tests and reference runs.

Data flow: ``<ns>.events`` (key user) → user features + one item update per applied event →
``<ns>.item-updates`` (key item; also fed by ``<ns>.impressions`` and ``<ns>.items``) → item
features. Feature definitions: ``features/FEATURES.md``. Crash-safety argument:
``streams.statestore`` and ``streams.agents``.
"""
