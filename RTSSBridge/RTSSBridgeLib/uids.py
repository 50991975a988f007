"""UID generation: the one place where the project makes DICOM UIDs (STYLE habit 10).

Deterministic UIDs (sample cases) are derived from their inputs with SHA-512 under the ``2.25``
root (DICOM PS3.5 B.2: a UUID-derived decimal), exactly as
``pydicom.uid.generate_uid(prefix=None, entropy_srcs=...)`` does; random UIDs use the same root.
Pseudonymised UIDs (de-identification, R-7.3) are keyed: an HMAC-SHA256 of the original UID under
the project's secret key, so the same key maps a UID the same way in every file and every run
(references between objects keep resolving) while nobody without the key can recompute or
reverse the mapping, and no lookup table has to be kept.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

_MAX_UID_LENGTH = 64


def deterministic_uid(*parts: object) -> str:
    """A ``2.25.<decimal>`` UID that depends only on ``parts`` (stable across runs and machines)."""
    digest = hashlib.sha512("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    value = int.from_bytes(digest[:16], "big")  # 128 bits like a UUID
    uid = f"2.25.{value}"
    assert len(uid) <= _MAX_UID_LENGTH
    return uid


def keyed_uid(key: bytes, uid: str) -> str:
    """The pseudonym of ``uid`` under ``key``: ``2.25.<first 128 bits of HMAC-SHA256(key, uid)>``."""
    digest = hmac.new(key, b"uid\x1f" + uid.encode("ascii", "replace"), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def new_uid() -> str:
    """A fresh random UID (``2.25.<uuid4 as decimal>``)."""
    return f"2.25.{uuid.uuid4().int}"


def is_valid_uid(uid: str) -> bool:
    """True when ``uid`` follows DICOM PS3.5 §9.1: digits and dots, no leading zeros, ≤ 64 chars."""
    if not uid or len(uid) > _MAX_UID_LENGTH:
        return False
    return all(c.isdigit() and (len(c) == 1 or c[0] != "0") for c in uid.split("."))
