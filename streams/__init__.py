"""Kafka topics and codecs, the Faust app and agents, and the pure event-time state machines."""
