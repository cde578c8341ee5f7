"""pymilvus quirks in one place: importing it safely, and classifying its errors."""

from __future__ import annotations

import logging
import os
from typing import Any


def import_pymilvus() -> Any:
    """Import pymilvus with a file-path ``MILVUS_URI`` hidden from it.

    pymilvus reads ``MILVUS_URI`` itself at import time and rejects anything that is not an
    ``http(s)://`` address; our settings use the same variable for Milvus Lite file paths too.
    """
    import sys

    if "pymilvus" in sys.modules:
        return sys.modules["pymilvus"]
    value = os.environ.get("MILVUS_URI")
    hide = value is not None and "://" not in value
    if hide:
        del os.environ["MILVUS_URI"]
    try:
        import pymilvus
    finally:
        if hide and value is not None:
            os.environ["MILVUS_URI"] = value
    # pymilvus logs every failed call with a traceback at ERROR, including the UNIMPLEMENTED
    # alias calls of Milvus Lite that ``ItemIndex`` expects and handles; our errors say enough.
    logging.getLogger("pymilvus.decorators").setLevel(logging.CRITICAL)
    return pymilvus


def is_not_found(exc: Exception) -> bool:
    text = str(exc).lower()
    return getattr(exc, "code", None) == 100 or "not found" in text or "not exist" in text


def is_unimplemented(exc: Exception) -> bool:
    code = getattr(exc, "code", None)
    code_name = getattr(code() if callable(code) else code, "name", "")
    return code_name == "UNIMPLEMENTED" or "UNIMPLEMENTED" in str(exc)
