"""Milvus index lifecycle and candidate sources."""
