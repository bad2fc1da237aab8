"""docs/config.md and the pydantic models say the same: every key, both ways."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from announcer.config import Config

DOC = (Path(__file__).parent.parent / "docs" / "config.md").read_text()


def model_keys(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    keys: dict[str, object] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.update(model_keys(annotation, f"{prefix}{name}."))
        else:
            keys[f"{prefix}{name}"] = field.default
    return keys


def documented_rows() -> dict[str, str]:
    rows = re.findall(r"^\| `([a-z_]+(?:\.[a-z_]+)+)` \| `([^`]*)` \|", DOC, re.MULTILINE)
    return dict(rows)


def test_every_model_key_is_documented_with_its_default() -> None:
    rows = documented_rows()
    for key, default in model_keys(Config).items():
        assert key in rows, f"{key} is missing from docs/config.md"
        shown = rows[key]
        if default is None:
            assert shown == "null", key
        elif isinstance(default, bool):
            assert shown == str(default).lower(), key
        elif isinstance(default, str):
            assert shown == (default or '""'), (key, shown, default)
        elif isinstance(default, int | float):
            assert shown in {str(default), f"{default:g}"}, (key, shown, default)


def test_every_documented_key_exists() -> None:
    keys = model_keys(Config)
    for key in documented_rows():
        assert key in keys, f"docs/config.md documents {key}, which the models do not have"
