"""Online and offline features: Feast repo definitions, online reads/writes, point-in-time datasets.

``features.rows`` is the contract between the stream processors (which compute rows) and the
stores (which persist them).
"""
