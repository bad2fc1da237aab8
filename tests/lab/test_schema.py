"""labs/spine-leaf.clab.yml against the subset of containerlab's JSON schema it uses.

jsonschema is not a dependency; ``validate`` below implements exactly the keywords the
subset (tests/data/clab_schema_subset.json) uses: type, required, properties,
additionalProperties (bool or schema), items, minItems, maxItems, pattern, enum, $ref.
"""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

DATA = Path(__file__).resolve().parents[1] / "data"
LAB = Path(__file__).resolve().parents[2] / "labs" / "spine-leaf.clab.yml"
TYPES = {"object": dict, "array": list, "string": str, "number": (int, float), "boolean": bool}


def validate(value: Any, schema: dict, root: dict, path: str = "$") -> list[str]:
    if "$ref" in schema:
        return validate(value, root["definitions"][schema["$ref"]], root, path)
    errors: list[str] = []
    if "type" in schema and not isinstance(value, TYPES[schema["type"]]):
        return [f"{path}: expected {schema['type']}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not one of {schema['enum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        errors += [f"{path}: missing {k}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                errors += validate(item, props[key], root, f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: unknown key {key!r}")
            elif isinstance(extra, dict):
                errors += validate(item, extra, root, f"{path}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 1 << 30):
            errors.append(f"{path}: {len(value)} items")
        for i, item in enumerate(value):
            errors += validate(item, schema.get("items", {}), root, f"{path}[{i}]")
    return errors


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads((DATA / "clab_schema_subset.json").read_text())


def test_lab_file_is_valid_containerlab(schema):
    doc = yaml.safe_load(LAB.read_text())
    assert validate(doc, schema, schema) == []


@pytest.mark.parametrize(
    ("patch", "error"),
    [
        (
            lambda d: d["topology"]["nodes"]["leaf1"].update(mgmt_ipv4="1.2.3.4"),
            "unknown key 'mgmt_ipv4'",
        ),
        (lambda d: d["topology"]["links"][0].update(endpoints=["leaf1:eth1"]), "1 items"),
        (lambda d: d["topology"]["nodes"]["leaf1"].update(kind="frr"), "not one of"),
        (lambda d: d["topology"]["nodes"]["leaf1"].update(binds=["just-a-file"]), "does not match"),
    ],
)
def test_validator_catches_mistakes(schema, patch, error):
    doc = yaml.safe_load(LAB.read_text())
    patch(doc)
    assert any(error in e for e in validate(doc, schema, schema))
