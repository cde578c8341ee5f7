"""The catalogue agent's content writer embeds only updates from ``embed_catalogue_from_ms`` on
(the catalogue before it was indexed in batch), and builds nothing while there is nothing to
embed."""

from __future__ import annotations

import contextlib

import numpy as np

from events.models import CatalogItem
from streams.catalogue_content import CatalogueContent

T0 = 1_700_000_000_000


class Encoder:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def encode(self, texts, progress=False):
        self.texts += list(texts)
        return np.ones((len(texts), 4), dtype=np.float32)


class Collection:
    def __init__(self) -> None:
        self.rows: list = []

    def upsert(self, rows) -> int:
        self.rows += list(rows)
        return len(rows)


def item(item_id: str, t: int) -> CatalogItem:
    return CatalogItem(item_id=item_id, title=f"Film {item_id}", categories=["Drama"],
                       event_id=f"{item_id}@{t}", event_time=t)  # fmt: skip


def test_updates_before_the_from_time_are_not_embedded() -> None:
    encoder, collection = Encoder(), Collection()
    built: list[str] = []

    @contextlib.contextmanager
    def index():
        built.append("index")
        yield collection

    def make_encoder() -> Encoder:
        built.append("encoder")
        return encoder

    content = CatalogueContent(index, make_encoder, from_ms=T0)
    assert content.write([item("old", T0 - 1)]) == 0
    assert built == []  # nothing to embed: no model loaded, no Milvus opened
    assert content.write([item("old2", T0 - 5), item("new", T0), item("newer", T0 + 9)]) == 2
    assert [row.item_id for row in collection.rows] == ["new", "newer"]
    assert len(encoder.texts) == 2 and built == ["encoder", "index"]


def test_a_preloaded_encoder_is_loaded_once_and_used_by_the_first_update() -> None:
    encoder, collection = Encoder(), Collection()
    loads: list[str] = []

    def make_encoder() -> Encoder:
        loads.append("encoder")
        return encoder

    content = CatalogueContent(lambda: contextlib.nullcontext(collection), make_encoder)
    content.preload()
    # The update waits for the background load if it is still going, and never starts another.
    assert content.write([item("a", T0)]) == 1
    assert content.write([item("b", T0 + 1)]) == 1
    assert loads == ["encoder"] and len(encoder.texts) == 2
    assert [row.item_id for row in collection.rows] == ["a", "b"]
