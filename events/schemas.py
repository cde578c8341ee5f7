"""The published JSON Schema of every public topic, generated from the models.

``python -m events.schemas`` rewrites ``events/schemas/*.json``; a unit test fails when a model
changes and the published files were not regenerated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from events.models import CatalogItem, DriftDetection, Impression, Interaction, PrivacyRequest

SCHEMA_DIR = Path(__file__).parent / "schemas"

# topic suffix (after "<namespace>.") -> payload model
TOPIC_MODELS: dict[str, type[BaseModel]] = {
    "events": Interaction,
    "items": CatalogItem,
    "privacy": PrivacyRequest,
    "impressions": Impression,
    "drift": DriftDetection,
}


def schema_text(topic: str) -> str:
    model = TOPIC_MODELS[topic]
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"aetherrec/{topic}.json",
        "description": f"One message on the '<namespace>.{topic}' topic. {model.__doc__ or ''}".strip(),
        **model.model_json_schema(mode="validation"),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def schema_path(topic: str) -> Path:
    return SCHEMA_DIR / f"{topic}.json"


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for topic in TOPIC_MODELS:
        schema_path(topic).write_text(schema_text(topic))
        print(f"wrote {schema_path(topic)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
