"""Every example in docs/mqtt-contract.md is valid under its JSON Schema and accepted by the parser,
and the schemas agree with the parser on what they reject."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from telemetry.contract import Invalid, parse

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMAS = {name: json.loads((DOCS / "mqtt" / f"{name}.schema.json").read_text()) for name in
           ("status", "metrics", "events")}
REGISTRY = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values()).with_resources(
    (f"{name}.schema.json", Resource.from_contents(schema)) for name, schema in SCHEMAS.items())


def validator(channel: str) -> Draft202012Validator:
    return Draft202012Validator(SCHEMAS[channel], registry=REGISTRY)


def documented_examples() -> list[tuple[str, dict]]:
    text = (DOCS / "mqtt-contract.md").read_text()
    examples = []
    for section in re.split(r"^### ", text, flags=re.M)[1:]:
        channel = section.split()[0]
        for block in re.findall(r"```json\n(.*?)```", section, flags=re.S):
            examples.append((channel, json.loads(block)))
    return examples


EXAMPLES = documented_examples()


def test_every_channel_has_worked_examples():
    assert {channel for channel, _ in EXAMPLES} == {"status", "metrics", "events"}


@pytest.mark.parametrize(("channel", "payload"), EXAMPLES)
def test_documented_example_is_valid_for_schema_and_parser(channel, payload):
    for schema in SCHEMAS.values():
        Draft202012Validator.check_schema(schema)
    validator(channel).validate(payload)
    parse(f"labshare/v1/dev-1/{channel}", json.dumps(payload).encode(), 1_795_572_000_000_000_000)


@pytest.mark.parametrize(("channel", "payload"), [
    ("status", {"state": "on"}),
    ("status", {"state": "idle", "ts": "2026-11-25T10:00:00"}),
    ("status", {"state": "idle", "detail": "x" * 501}),
    ("metrics", {"values": {}}),
    ("metrics", {"values": {"Power": 1}}),
    ("metrics", {"values": {"power_w": "812"}}),
    ("metrics", {"batch": []}),
    ("metrics", {"batch": [{"values": {"x": 1}}] * 1001}),
    ("events", {"type": "alarm"}),
    ("events", {"id": "1", "type": "alarm", "samples": -1}),
])
def test_schema_and_parser_both_reject(channel, payload):
    assert not validator(channel).is_valid(payload)
    with pytest.raises(Invalid):
        parse(f"labshare/v1/dev-1/{channel}", json.dumps(payload).encode(), 1_795_572_000_000_000_000)
