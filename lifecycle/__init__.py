"""Model and index lifecycle: the registry of what was trained and indexed, and promotion.

* ``registry``: the folder-with-a-manifest registry (``<data_dir>/registry/<namespace>``): register
  ranker checkpoints and index versions, promote a (model, index) pair; serving watches it
  (``serving.live_state``) and swaps to a promoted pair without a restart.
* ``publish``: what ``aether index`` does: item vectors into a new Milvus collection version, its
  content map, registered and (by default) promoted, old versions garbage-collected.

Between the runtimes and the library (``docs/architecture.md``): it uses ``retrieval`` and
``ranker``; ``serving``, ``streams`` and the CLI use it. Decision and operations:
``docs/lifecycle.md``.
"""
