"""The secret key and everything derived from it: keyed pseudonyms, UIDs and date offsets (R-6.4, R-7.3).

Every pseudonym is an HMAC-SHA256 of the original value under the key, so the same key gives
the same pseudonyms in every run and on every machine (a case de-identified twice, or in two
batches, keeps its case identifier, its UIDs and its date offset), a different key gives
unrelated ones, and nobody without the key can recompute or reverse them. The key file is the
secret: it is kept apart from the data, with owner-only permissions, like the pseudonym
registry.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import hashlib
import hmac
import os
import re
import secrets
import stat
from typing import Dict, Optional, Tuple

from ..errors import InputError
from ..uids import keyed_uid
from .profile import PseudonymFormat

MIN_KEY_BYTES = 16
_HEX = re.compile(r"^[0-9a-fA-F]+$")


def generate_key_file(path: str) -> str:
    """Write a new 256-bit key as hexadecimal text to ``path`` (created with mode 0600; never
    overwritten). Returns the key's fingerprint."""
    key = secrets.token_bytes(32)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise InputError("key file exists already; a key is never overwritten (choose another path)",
                         file=path, field="--key") from exc
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.hex() + "\n")
    return Keyring(key).fingerprint


def read_key_file(path: str) -> bytes:
    """The key in ``path``: hexadecimal text (64 digits from :func:`generate_key_file`) or raw bytes.

    Raises :class:`InputError` when the file is missing, empty, or holds fewer than 16 bytes of
    key material.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 16)
    except FileNotFoundError as exc:
        raise InputError("no such key file (make one with 'mmanno deid keygen KEYFILE')", file=path,
                         field="--key") from exc
    except OSError as exc:
        raise InputError(f"key file cannot be read ({exc.strerror})", file=path, field="--key") from exc
    text = data.strip()
    key = data
    if text and _HEX.match(text.decode("latin-1")) and len(text) % 2 == 0:
        key = binascii.unhexlify(text)
    if len(key) < MIN_KEY_BYTES:
        raise InputError(f"key has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed (make one with "
                         "'mmanno deid keygen KEYFILE')", file=path, field="--key")
    return key


def key_file_is_private(path: str) -> bool:
    """True when nobody but the owner may read the key file (POSIX permissions)."""
    if os.name != "posix":
        return True
    return not os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO)


class Keyring:
    """Keyed derivations of one key (cheap to copy into worker processes)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise InputError(f"key has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed", field="key")
        self.key = bytes(key)
        self._uids: Dict[str, str] = {}

    @property
    def fingerprint(self) -> str:
        """A public name of the key (16 hex digits): equal fingerprints, same key. It reveals nothing
        about the key or the data."""
        return hmac.new(self.key, b"mmanno key fingerprint", hashlib.sha256).hexdigest()[:16]

    def digest(self, purpose: str, value: bytes) -> bytes:
        return hmac.new(self.key, purpose.encode("ascii") + b"\x1f" + value, hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        """The keyed pseudonym of a UID (cached: a study's UIDs repeat in every file)."""
        got = self._uids.get(uid)
        if got is None:
            if len(self._uids) > 200_000:
                self._uids.clear()
            got = self._uids[uid] = keyed_uid(self.key, uid)
        return got

    def pseudonym(self, purpose: str, value: bytes, fmt: PseudonymFormat, max_length: int = 64) -> str:
        """``prefix`` + ``digits`` decimal digits of the keyed hash of ``value``."""
        number = int.from_bytes(self.digest(purpose, value), "big") % (10 ** fmt.digits)
        prefix = fmt.prefix
        if fmt.keep_leading_letters:
            match = re.match(rb"[A-Za-z]{1,4}", value)
            prefix = match.group(0).decode("ascii").upper() if match else fmt.prefix
        return f"{prefix}{number:0{fmt.digits}d}"[:max_length]

    def date_offset_days(self, patient: bytes, low: int, high: int) -> int:
        """The patient's date offset, in ``[low, high]`` (the same for every date of that patient)."""
        span = high - low + 1
        return low + int.from_bytes(self.digest("date-shift", patient), "big") % span


# --------------------------------------------------------------------------- dates
def shift_da(value: str, days: int, generalise: Optional[str]) -> Optional[str]:
    """One DA value (``YYYYMMDD``, or the old ``YYYY.MM.DD``) moved by ``days`` and truncated.

    Returns None when the value is not a date (the caller blanks it: an unparsed date is never
    left as it was).
    """
    text = value.strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        day = _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8])) + _dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    if generalise == "year":
        day = day.replace(month=1, day=1)
    elif generalise == "month":
        day = day.replace(day=1)
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def shift_dt(value: str, days: int, generalise: Optional[str]) -> Optional[str]:
    """One DT value: the date part moved (and truncated); time and offset kept. None if unparsable."""
    text = value.strip()
    if len(text) < 8:
        return None
    date = shift_da(text[:8], days, generalise)
    return None if date is None else date + text[8:]


def transform_dates(raw: str, vr: str, days: int, generalise: Optional[str]) -> Tuple[str, int]:
    """Every value of a (multi-valued) DA/DT string transformed; returns (text, n_unparsable).

    Unparsable values become empty so that nothing of the original survives.
    """
    out = []
    bad = 0
    shift = shift_da if vr == "DA" else shift_dt
    for part in raw.split("\\"):
        if not part.strip():
            out.append("")
            continue
        got = shift(part, days, generalise)
        if got is None:
            bad += 1
            got = ""
        out.append(got)
    return "\\".join(out), bad
