"""Kafka topics and codecs, the Faust app and agents, and the pure event-time state machines.

Layers (top to bottom; lower layers import nothing above them and no I/O client):

* ``app`` / ``agents`` — the Faust application and its thin agents (``aether worker``).
* ``bootstrap`` — the composition root (``aether worker``); ``bandit_agent`` — the bandit agents.
* ``statestore`` (Redis), ``sinks`` (offline log, feature history, transitions), ``topics``
  (admin), ``publish`` (producer) — adapters.
* ``handlers`` — a batch of source records + loaded states → new states and effects.
* ``user_features`` / ``item_features`` — ``(state, event) -> (state, applied)`` state machines;
  ``privacy`` (opt-out/opt-in/delete register), ``transitions`` (item-to-item increments).
* ``eventtime`` — watermarks, lateness, bounded de-duplication.
* ``testing`` — the same handlers wired in memory, for tests and reference runs.

Data flow: ``<ns>.events`` (key user) → user features + one item update per applied event →
``<ns>.item-updates`` (key item; also fed by ``<ns>.impressions`` and ``<ns>.items``) → item
features. Applied events also go to the offline log and the item transitions; ``<ns>.privacy``
requests are handled with the events; impressions + rewards → ``<ns>.bandit-outcomes`` (key item) →
bandit posteriors. Definitions and semantics: ``features/FEATURES.md``. Crash-safety argument:
``streams.statestore``, ``streams.agents`` and ``streams.sinks``.
"""
