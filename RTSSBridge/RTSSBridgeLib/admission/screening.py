"""Screening of received files before anything parses them (R-6.3.3).

Every file of a delivery is classified from its size, its name and its first bytes only:

* ``dicom`` - a DICOM file (``DICM`` after the 128-byte preamble, or a bare data set starting
  with a group 0002/0008 tag) whose preamble holds no executable content;
* ``data`` - a file of an expected non-image kind (JSON, CSV, spreadsheet, text report, NIfTI ...)
  that the profile allows; it is never loaded as an image;
* ``rejected`` - everything that must not be opened by a DICOM reader: a DICOM file whose
  preamble is a Windows PE / ELF / Mach-O header, a script or a zip (the known DICOM/executable
  polyglots, CVE-2019-11687), an executable, a script, an archive, a non-DICOM file named like a
  DICOM file (``.dcm``, or no extension in an image folder), an empty, oversized or truncated
  file. Rejected files are copied to the check's quarantine folder and never loaded.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from enum import Enum
from typing import Optional, Sequence, Tuple


class ScreenCode(str, Enum):
    """Why a received file is rejected (or what kind of data file it is)."""

    POLYGLOT_PREAMBLE = "POLYGLOT_PREAMBLE"
    EXECUTABLE = "EXECUTABLE"
    SCRIPT = "SCRIPT"
    ARCHIVE = "ARCHIVE"
    NOT_DICOM = "NOT_DICOM"
    EMPTY_FILE = "EMPTY_FILE"
    OVERSIZE = "OVERSIZE"
    TRUNCATED = "TRUNCATED"
    UNEXPECTED_FILE = "UNEXPECTED_FILE"


@dataclass(frozen=True)
class Screening:
    """The verdict on one file: ``kind`` is ``dicom``, ``data`` or ``rejected``; ``code`` and
    ``detail`` say why a file is rejected (one line, no file content quoted)."""

    path: str
    kind: str
    size: int
    code: Optional[ScreenCode] = None
    detail: str = ""

    @property
    def rejected(self) -> bool:
        return self.kind == "rejected"


#: Executable headers (PE "MZ", ELF, Mach-O 32/64 both byte orders, Mach-O fat / Java class).
EXECUTABLE_MAGIC: Tuple[Tuple[bytes, str], ...] = (
    (b"MZ", "Windows PE/DOS executable header 'MZ'"),
    (b"\x7fELF", "ELF executable header"),
    (b"\xfe\xed\xfa\xce", "Mach-O executable header"), (b"\xfe\xed\xfa\xcf", "Mach-O executable header"),
    (b"\xce\xfa\xed\xfe", "Mach-O executable header"), (b"\xcf\xfa\xed\xfe", "Mach-O executable header"),
    (b"\xca\xfe\xba\xbe", "Mach-O universal binary or Java class header"),
)
ARCHIVE_MAGIC: Tuple[Tuple[int, bytes, str], ...] = (
    (0, b"PK\x03\x04", "zip archive"), (0, b"PK\x05\x06", "empty zip archive"), (0, b"\x1f\x8b", "gzip stream"),
    (0, b"7z\xbc\xaf\x27\x1c", "7-Zip archive"), (0, b"Rar!\x1a\x07", "RAR archive"), (0, b"BZh", "bzip2 stream"),
    (0, b"\xfd7zXZ\x00", "xz stream"), (257, b"ustar", "tar archive"), (0, b"MSCF", "cabinet archive"),
)
SCRIPT_MAGIC: Tuple[Tuple[bytes, str], ...] = (
    (b"#!", "script ('#!' interpreter line)"), (b"<?php", "PHP script"), (b"<script", "HTML script"),
    (b"%PDF", "PDF document"),
)
SCRIPT_EXTENSIONS = frozenset({
    ".sh", ".bash", ".zsh", ".csh", ".bat", ".cmd", ".ps1", ".psm1", ".vbs", ".vbe", ".js", ".jse", ".wsf", ".hta",
    ".py", ".pyc", ".pl", ".rb", ".php", ".lua", ".jar", ".exe", ".dll", ".so", ".dylib", ".msi", ".scr", ".com",
    ".app", ".apk", ".lnk", ".reg", ".elf", ".bin",
})
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic", ".ima"})
#: Data files a delivery may carry beside the images (clinical tables, reports, ground truth).
DEFAULT_ALLOWED_DATA = ("*.json", "*.csv", "*.tsv", "*.txt", "*.xlsx", "*.xls", "*.nii", "*.nii.gz", "*.nrrd",
                        "*.md", "LICENSE*", "README*")
DEFAULT_MAX_FILE_MB = 4096.0
#: Smallest possible Part 10 file: preamble, DICM, one file meta element header.
_MIN_PART10 = 132 + 12


def _extension(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        return ".nii.gz"
    return os.path.splitext(lower)[1]


def _allowed(name: str, patterns: Sequence[str]) -> bool:
    lower = name.lower()
    return any(fnmatch.fnmatch(lower, p.lower()) for p in patterns)


def _looks_like_bare_dataset(head: bytes) -> bool:
    """A data set without preamble: starts with a little-endian group 0002 or 0008 tag and then
    either an explicit VR or an implicit 4-byte length."""
    return len(head) >= 8 and head[1] == 0 and head[0] in (0x02, 0x08) and head[3] == 0


def screen_bytes(path: str, head: bytes, size: int, allowed_data: Sequence[str] = DEFAULT_ALLOWED_DATA,
                 max_file_mb: float = DEFAULT_MAX_FILE_MB) -> Screening:
    """Classify a file from its name, its size and its first bytes (at least 512 when it has them)."""
    name = os.path.basename(path)
    ext = _extension(name)
    if size == 0:
        return Screening(path, "rejected", size, ScreenCode.EMPTY_FILE, "the file is empty")
    if size > max_file_mb * 1024 * 1024:
        return Screening(path, "rejected", size, ScreenCode.OVERSIZE,
                         f"{size / 1048576:.0f} MB is more than the {max_file_mb:g} MB a received file may have")
    has_dicm = len(head) >= 132 and head[128:132] == b"DICM"
    if has_dicm:
        preamble = head[:128]
        for magic, what in EXECUTABLE_MAGIC:
            if preamble.startswith(magic):
                return Screening(path, "rejected", size, ScreenCode.POLYGLOT_PREAMBLE,
                                 f"the 128-byte DICOM preamble holds an executable header ({what}): "
                                 "a DICOM/executable polyglot")
        for magic, what in SCRIPT_MAGIC:
            if preamble.startswith(magic):
                return Screening(path, "rejected", size, ScreenCode.POLYGLOT_PREAMBLE,
                                 f"the 128-byte DICOM preamble holds a script or document header ({what}): "
                                 "a DICOM polyglot")
        if preamble.startswith(b"PK\x03\x04"):
            return Screening(path, "rejected", size, ScreenCode.POLYGLOT_PREAMBLE,
                             "the 128-byte DICOM preamble holds a zip header: a DICOM/archive polyglot")
        if b"PE\x00\x00" in preamble:
            return Screening(path, "rejected", size, ScreenCode.POLYGLOT_PREAMBLE,
                             "the 128-byte DICOM preamble holds a PE signature: a DICOM/executable polyglot")
        if size < _MIN_PART10:
            return Screening(path, "rejected", size, ScreenCode.TRUNCATED,
                             f"only {size} bytes: the file ends inside the file meta header (truncated)")
        return Screening(path, "dicom", size)
    for magic, what in EXECUTABLE_MAGIC:
        if head.startswith(magic):
            return Screening(path, "rejected", size, ScreenCode.EXECUTABLE, f"an executable file ({what})")
    if _looks_like_bare_dataset(head) and ext not in SCRIPT_EXTENSIONS:
        return Screening(path, "dicom", size)
    for offset, magic, what in ARCHIVE_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            if _allowed(name, allowed_data) and ext not in DICOM_EXTENSIONS:
                return Screening(path, "data", size)  # .nii.gz, .xlsx (a zip) ...
            return Screening(path, "rejected", size, ScreenCode.ARCHIVE,
                             f"a {what}: archives are not opened at admission; unpack and send the files")
    if ext in SCRIPT_EXTENSIONS:
        return Screening(path, "rejected", size, ScreenCode.SCRIPT,
                         f"a file of kind '{ext}' (script or program) where images and records are expected")
    for magic, what in SCRIPT_MAGIC:
        if head.lstrip()[:len(magic)].lower() == magic.lower():
            if magic == b"%PDF" and _allowed(name, allowed_data):
                return Screening(path, "data", size)
            return Screening(path, "rejected", size, ScreenCode.SCRIPT, f"a {what} where images are expected")
    if ext in DICOM_EXTENSIONS:
        if len(head) >= 128 and not any(head[:128]) and size < _MIN_PART10:
            return Screening(path, "rejected", size, ScreenCode.TRUNCATED,
                             f"only {size} bytes: the file ends before the 'DICM' marker (truncated)")
        kind = "text" if _mostly_text(head) else "binary data"
        return Screening(path, "rejected", size, ScreenCode.NOT_DICOM,
                         f"named {ext} but it is not DICOM (no 'DICM' marker at byte 128; the content is {kind})")
    if _allowed(name, allowed_data):
        return Screening(path, "data", size)
    if not ext:
        kind = "text" if _mostly_text(head) else "binary data"
        return Screening(path, "rejected", size, ScreenCode.NOT_DICOM,
                         f"a file without extension that is not DICOM (the content is {kind})")
    return Screening(path, "rejected", size, ScreenCode.UNEXPECTED_FILE,
                     f"a '{ext}' file is neither DICOM nor a data file the profile allows")


def _mostly_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        if exc.start >= len(head) - 4:  # a multi-byte character cut at the end of the sample
            return True
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable / len(head) > 0.9


HEAD_BYTES = 4096


def screen_file(path: str, allowed_data: Sequence[str] = DEFAULT_ALLOWED_DATA,
                max_file_mb: float = DEFAULT_MAX_FILE_MB) -> Screening:
    """Classify the file at ``path`` (reads at most the first 4 KiB)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        return Screening(path, "rejected", 0, ScreenCode.NOT_DICOM, f"cannot be read ({exc.strerror})")
    return screen_bytes(path, head, size, allowed_data, max_file_mb)
