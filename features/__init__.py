"""Online and offline features: Feast repo definitions, online reads/writes, point-in-time datasets.

``features.rows`` is the contract between the stream processors (which compute rows) and the
stores (which persist them); ``features.ports`` the interfaces they meet at.

* ``schema``        feature names, rows ↔ flat records (pure)
* ``repo``          Feast entities, push/file sources and feature views
* ``store``         ``feature_store``/``apply_repo`` (Feast config per namespace), ``FeastOnlineStore``
* ``redis_layout``  Feast's Redis layout: atomic newer-wins writes, one-round-trip batch reads
* ``feast_wire``    the bytes of that layout (keys, field hashes, values) without importing Feast
* ``offline``       parquet event log, feature history, ``point_in_time_features``
* ``bench``         online store latency/throughput benchmark
"""
