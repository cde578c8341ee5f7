"""The embedded default stack: Tansu (Kafka protocol), Redis, Milvus Lite and the namespace's topics
and Feast project, started on loopback by ``aether stack up`` for development, tests and the demo.

It sits above the library (it creates the topics ``streams.topics`` names and applies the Feast repo
of ``features``) and below the shell and the benchmarks, which start it. Production points the
settings at real services instead and starts nothing here.
"""
