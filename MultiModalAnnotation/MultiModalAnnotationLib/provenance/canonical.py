"""Canonical JSON and content hashes of the provenance records (R-5.6).

Canonical JSON here is the JSON Canonicalization Scheme of RFC 8785 (JCS), so that any
implementation of that RFC computes the same bytes, and so the same SHA-256, for an event:

* the output is UTF-8, with no insignificant whitespace (no space, no newline);
* object members are sorted by their names compared as arrays of UTF-16 code units (for names
  without characters above U+FFFF this is the order of Unicode code points); duplicate names are
  impossible (Python dicts);
* strings are written as ECMAScript ``JSON.stringify`` writes them: ``"`` and ``\\`` escaped,
  U+0008, U+0009, U+000A, U+000C, U+000D as ``\\b \\t \\n \\f \\r``, every other character below
  U+0020 as ``\\u00xx`` (lower-case hex), every other character as itself (UTF-8); a lone surrogate
  is refused;
* numbers are IEEE 754 doubles written as ECMAScript ``Number.prototype.toString`` writes them
  (shortest digits that read back to the same double; ``1e+21`` and up and below ``1e-6`` in
  exponent form, ``-0`` as ``0``); NaN and infinities are refused, and so are integers beyond
  ±2^53 (a double could not hold them exactly);
* ``true``, ``false`` and ``null`` as such.

:func:`content_hash` is the SHA-256 (lower-case hex) of those bytes. Python's ``json`` with
``sort_keys`` and compact separators differs from JCS for floats (``1e-07`` vs ``1e-7``, ``1.0`` vs
``1``) and for keys outside the Basic Multilingual Plane, which is why it is not used directly.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, List

#: Largest integer magnitude a double holds exactly (2^53).
MAX_EXACT_INTEGER = 2 ** 53
#: The "previous hash" of the first event of a trail.
GENESIS_HASH = "0" * 64


class CanonicalJSONError(ValueError):
    """A value that has no canonical JSON form (NaN, infinity, a lone surrogate, a non-JSON type,
    an integer beyond 2^53). Remedy: store it as text or as a number a double holds."""


def _number(value: float) -> str:
    """ECMAScript Number::toString of a finite double (ECMA-262 Number::toString, radix 10)."""
    if value == 0:
        return "0"
    if value < 0:
        return "-" + _number(-value)
    # repr gives the shortest digits that read back to the same double, as ECMAScript requires.
    mantissa, _, exponent = repr(float(value)).partition("e")
    integer, _, fraction = mantissa.partition(".")
    significant = (integer + fraction).lstrip("0")
    digits = significant.rstrip("0")
    k = len(digits)
    # value = 0.d1...dk x 10^n (ECMAScript's k and n)
    n = int(exponent or 0) - len(fraction) + (len(significant) - k) + k
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    sign = "+" if n - 1 >= 0 else "-"
    head = digits[0] if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{head}e{sign}{abs(n - 1)}"


def _string(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalJSONError(f"string with a lone surrogate at {exc.start}: no canonical form") from exc
    # json.dumps(ensure_ascii=False) escapes exactly as JSON.stringify does (see the module docstring).
    return json.dumps(text, ensure_ascii=False)


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _write(value: Any, out: List[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_EXACT_INTEGER:
            raise CanonicalJSONError(f"integer {value} is beyond 2^53; store it as text")
        out.append(str(int(value)))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalJSONError(f"{value} has no JSON form")
        if value.is_integer() and abs(value) <= MAX_EXACT_INTEGER:
            out.append(str(int(value)))
        else:
            out.append(_number(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for n, item in enumerate(value):
            if n:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for n, key in enumerate(sorted(value, key=lambda k: _utf16_key(_key(k)))):
            if n:
                out.append(",")
            out.append(_string(_key(key)))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    else:
        raise CanonicalJSONError(f"a {type(value).__name__} is not a JSON value")


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise CanonicalJSONError(f"object member name {key!r} is not a string")
    return key


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical JSON bytes of ``value`` (see the module docstring)."""
    out: List[str] = []
    _write(value, out)
    return "".join(out).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """SHA-256 of bytes as lower-case hex (the hashing of provenance records)."""
    return hashlib.sha256(data).hexdigest()


def content_hash(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``value``."""
    return sha256_hex(canonical_json(value))
