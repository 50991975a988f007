"""Validation of the project's JSON documents against ``Resources/schemas`` (STYLE habit 4).

One helper for every reader: :func:`validate_document` names the file, the JSON path of the
first violation and the rule, as one :class:`~RTSSBridgeLib.errors.InputError` line.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from typing import Any, Dict, Optional

from . import resources
from .errors import InputError
from .fileio import write_json_atomic


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


def _cache_file() -> Optional[str]:
    base = os.environ.get("MMANNO_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "mmanno")
    return os.path.join(base, "validated-documents-v1.json") if base else None


def _validation_key(raw: bytes, name: str) -> str:
    schema_bytes = resources.schema_path(name).read_bytes()
    return hashlib.sha256(name.encode("utf-8") + b"\0" + schema_bytes + b"\0" + raw).hexdigest()


def _known_valid(key: str) -> bool:
    path = _cache_file()
    try:
        with open(path, encoding="utf-8") as fh:  # type: ignore[arg-type]
            return key in json.load(fh)
    except (OSError, TypeError, ValueError):
        return False


def _remember_valid(key: str) -> None:
    path = _cache_file()
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            with open(path, encoding="utf-8") as fh:
                known = [k for k in json.load(fh) if isinstance(k, str)]
        except (OSError, ValueError):
            known = []
        known = ([k for k in known if k != key] + [key])[-256:]
        write_json_atomic(path, known)
    except (OSError, TypeError):
        pass  # a cache that cannot be written only costs time


def read_json(path: str, name: str) -> Any:
    """Read the JSON file ``path`` and validate it against schema ``name``.

    A document whose exact bytes (with the exact schema) were validated before on this machine is
    not validated again: validating the 620-row PS3.15 profile takes 0.1-0.2 s here, plus the
    jsonschema import, a large share of a short ``mmanno deid`` run. The record of validated
    documents is a list of SHA-256 digests in the user's cache folder (``MMANNO_CACHE_DIR``).
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        document = json.loads(raw.decode("utf-8"))
    except FileNotFoundError as exc:
        raise InputError("no such file", file=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot be read ({type(exc).__name__}: {exc})", file=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", file=str(path),
                         field="JSON") from exc
    key = _validation_key(raw, name)
    if not _known_valid(key):
        validate_document(document, name, str(path))
        _remember_valid(key)
    return document
