"""Kafka topics and codecs, the Faust app and agents, and the pure event-time state machines.

Layers (top to bottom; lower layers import nothing above them and no I/O client):

* ``app`` — the Faust application and its thin agents (``aether worker``); ``build_worker`` — the
  composition root (the only module here that reads the whole ``Settings``).
* ``agents`` (``StreamRuntime``), ``bandit_agent`` (``BanditRuntime``) — the runtimes: call the
  steps, apply their effects in a crash-safe order, commit the state last.
* ``statestore`` (``RedisStateStore``), ``sinks`` (offline log, feature history), ``topics``
  (admin), ``publish`` (the one producer factory), ``routing`` (records on the wrong partition
  for their key are re-produced to the right one) — adapters.
* ``state_port`` — the ``StateStore`` port (what a step loads, one atomic ``StateCommit`` per
  batch) and ``InMemoryStateStore``.
* ``steps`` (interactions with privacy, impressions, catalogue, item updates) and
  ``bandit_steps`` (attribution, posteriors) — one pure step per stream concern,
  ``(state, batch) -> (state, effects)``, and the drivers (``StreamSteps``, ``BanditSteps``:
  decode → load through the port → step) that the runtimes and the harness share.
* ``handlers`` — batch building blocks (decode, admit, fold) under the steps.
* ``user_features`` / ``item_features`` — ``(state, event) -> (state, applied)`` state machines;
  ``privacy`` (opt-out/opt-in/delete register), ``transitions`` (item-to-item increments; the
  store they go to is ``features.transition_store``).
* ``eventtime`` — watermarks, lateness, bounded de-duplication.
* ``testing`` — ``LocalPipeline``: the same steps over the in-memory store, for tests and
  reference runs (``tests/integration/streams/test_step_parity.py`` holds it to the runtime).

Data flow: ``<ns>.events`` (key user) → user features + one item update per applied event →
``<ns>.item-updates`` (key item; also fed by ``<ns>.impressions`` and ``<ns>.items``) → item
features. Applied events also go to the offline log and the item transitions; ``<ns>.privacy``
requests are handled with the events; impressions + rewards → ``<ns>.bandit-outcomes`` (by item) →
bandit posteriors. Definitions and semantics: ``features/FEATURES.md``. Crash-safety argument:
``streams.statestore``, ``streams.agents`` and ``streams.sinks``.
"""
