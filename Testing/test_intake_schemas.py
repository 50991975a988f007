"""The JSON documents of admission and de-identification (STYLE habit 4): versioned schemas with
a description and an example for every property, built-in profiles that validate, and the
validation cache that never trusts changed bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

import jsonschema
import pytest

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.jsonschemas import load_schema, read_json
from RTSSBridgeLib.resources import resources_dir

SCHEMAS = ["admission-profile", "admission-report", "deid-profile", "deid-record", "deid-operation",
           "pseudonym-registry", "leak-report"]


def _undocumented(node: Any, path: str, missing: List[str]) -> None:
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            if "description" not in sub or "examples" not in sub:
                missing.append(f"{path}/{name}")
        for key, sub in node.items():
            _undocumented(sub, f"{path}/{key}", missing)
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            _undocumented(sub, f"{path}[{i}]", missing)


@pytest.mark.parametrize("name", SCHEMAS)
def test_schema_is_versioned_and_documented(name: str) -> None:
    """Every schema has a versioned $id, is a valid JSON Schema, and documents every property."""
    schema = load_schema(name)
    assert schema["$id"] == f"https://multimodalannotation.github.io/schemas/{name}/v1"
    jsonschema.validators.validator_for(schema).check_schema(schema)
    missing: List[str] = []
    _undocumented(schema, "", missing)
    assert missing == []


@pytest.mark.parametrize("folder,schema", [("deid", "deid-profile"), ("admission", "admission-profile")])
def test_builtin_profiles_validate(folder: str, schema: str) -> None:
    """The shipped profiles validate against their schema (directly, without any cache)."""
    files = sorted((resources_dir() / "profiles" / folder).glob("*.json"))
    assert len(files) >= 2
    for path in files:
        jsonschema.validate(json.loads(path.read_text(encoding="utf-8")), load_schema(schema))


def test_validation_cache_never_trusts_changed_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A validated document is remembered by the SHA-256 of its bytes (and its schema's): an edited
    copy is validated again and its error reported."""
    monkeypatch.setenv("MMANNO_CACHE_DIR", str(tmp_path / "cache"))
    source = resources_dir() / "profiles" / "admission" / "generic.json"
    good = tmp_path / "good.json"
    good.write_bytes(source.read_bytes())
    assert read_json(str(good), "admission-profile")["name"] == "generic"
    assert len(json.loads((tmp_path / "cache" / "validated-documents-v1.json").read_text())) == 1
    doc = json.loads(source.read_text(encoding="utf-8"))
    doc["version"] = "one"
    good.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InputError, match=r"good\.json: schema: version"):
        read_json(str(good), "admission-profile")
