"""Validation of the project's JSON documents against ``Resources/schemas`` (STYLE habit 4).

One helper for every reader: :func:`validate_document` names the file, the JSON path of the
first violation and the rule, as one :class:`~RTSSBridgeLib.errors.InputError` line.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any, Dict, Optional

from . import resources
from .errors import InputError


@cache
def load_schema(name: str) -> Dict[str, Any]:
    """The parsed schema ``Resources/schemas/<name>.schema.json``."""
    with open(resources.schema_path(name), encoding="utf-8") as fh:
        schema: Dict[str, Any] = json.load(fh)
    return schema


def schema_id(name: str) -> str:
    """The ``$id`` of a schema (what documents put in their ``schema`` field)."""
    return str(load_schema(name)["$id"])


def validate_document(document: Any, name: str, file: Optional[str] = None) -> None:
    """Raise :class:`InputError` naming the first violation of ``document`` against schema ``name``."""
    import jsonschema

    schema = load_schema(name)
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise InputError(f"{where}: {err.message} (schema {schema['$id']})", file=file or f"<{name}>",
                         field="schema")


def read_json(path: str, name: str) -> Any:
    """Read the JSON file ``path`` and validate it against schema ``name``."""
    try:
        with open(path, encoding="utf-8") as fh:
            document = json.load(fh)
    except FileNotFoundError as exc:
        raise InputError("no such file", file=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot be read ({type(exc).__name__}: {exc})", file=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", file=str(path),
                         field="JSON") from exc
    validate_document(document, name, str(path))
    return document
