"""JSON Schema validation of every JSON file MultiModalAnnotation reads or writes (STYLE habit 4).

Schemas live in the shared ``Resources/schemas`` folder (found by
:func:`RTSSBridgeLib.resources.schema_path`), each with a versioned ``$id``. :func:`schema_problems`
turns every violation into one line ``<json path>: <what is wrong>``, sorted by position, so a
command can print them all and a reader can raise on the first.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any, Dict, List

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.resources import schema_path


@cache
def load_schema(name: str) -> Dict[str, Any]:
    """The parsed schema ``Resources/schemas/<name>.schema.json`` (cached)."""
    path = schema_path(name)
    try:
        with open(path, encoding="utf-8") as fh:
            schema: Dict[str, Any] = json.load(fh)
    except ValueError as exc:
        raise InputError(f"schema is not valid JSON ({exc})", file=str(path)) from exc
    return schema


@cache
def _local_schemas() -> Dict[str, Dict[str, Any]]:
    """Every schema of ``Resources/schemas`` by ``$id``: a schema may ``$ref`` another one by its
    ``$id`` (the annotation document refers to its ``report-links`` and ``structured-data`` parts),
    resolved here and never fetched from the network."""
    folder = schema_path("annotation").parent
    found: Dict[str, Dict[str, Any]] = {}
    for path in sorted(folder.glob("*.schema.json")):
        schema = load_schema(path.name[: -len(".schema.json")])
        found[str(schema["$id"])] = schema
    return found


@cache
def _validator(name: str) -> Any:
    import jsonschema

    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    try:
        from referencing import Registry, Resource
    except ImportError:  # jsonschema < 4.18 (no 'referencing'): the older resolver with a local store
        resolver = jsonschema.RefResolver.from_schema(schema, store=_local_schemas())
        return cls(schema, resolver=resolver, format_checker=cls.FORMAT_CHECKER)
    registry = Registry().with_resources((uri, Resource.from_contents(s)) for uri, s in _local_schemas().items())
    return cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)


def json_path(parts: Any) -> str:
    """``labels[3].code`` for the path ``['labels', 3, 'code']`` (``(root)`` when empty)."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


def schema_problems(name: str, data: Any) -> List[str]:
    """Every violation of schema ``name`` by ``data``, one line each (empty when valid)."""
    errors = sorted(_validator(name).iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    lines = []
    for err in errors:
        message = " ".join(str(err.message).split())
        if len(message) > 200:
            message = message[:197] + "..."
        lines.append(f"{json_path(err.absolute_path)}: {message} (schema rule '{err.validator}')")
    return lines


def schema_id(name: str) -> str:
    """The ``$id`` of schema ``name`` (what documents put in their ``schema`` field)."""
    return str(load_schema(name)["$id"])


def read_json(path: str) -> Any:
    """Parse a JSON file; a missing file or a syntax error is one :class:`InputError` line."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise InputError("no such file", file=path) from exc
    except IsADirectoryError as exc:
        raise InputError("is a folder, not a JSON file", file=path) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", file=path) from exc
