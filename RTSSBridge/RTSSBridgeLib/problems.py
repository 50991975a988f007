"""Problems found while reading inputs: a code, a severity, a one-line message and the files.

Loading never stops at the first defect of a real series: it reports every problem it meets
(R-6.3 "every missing, corrupt, malformed ... item is logged") and loads what can be loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, Iterable, Tuple


class Severity(str, Enum):
    """How much a problem matters to a reader of the loaded data."""

    ERROR = "error"  # data missing or unusable (a slice gap, an undecodable series)
    WARNING = "warning"  # loaded, but something is off (non-uniform spacing, a split series)
    INFO = "info"  # worth knowing, nothing wrong (a 2-D image without patient geometry)


class ProblemCode(str, Enum):
    """Closed vocabulary of what the DICOM/NIfTI readers report."""

    NOT_DICOM = "NOT_DICOM"
    UNREADABLE = "UNREADABLE"
    TRUNCATED = "TRUNCATED"
    NON_IMAGE_OBJECT = "NON_IMAGE_OBJECT"
    NO_PIXEL_DATA = "NO_PIXEL_DATA"
    MISSING_UID = "MISSING_UID"
    MISSING_SLICES = "MISSING_SLICES"
    DUPLICATE_POSITION = "DUPLICATE_POSITION"
    NONUNIFORM_SPACING = "NONUNIFORM_SPACING"
    GANTRY_TILT = "GANTRY_TILT"
    INCONSISTENT_ORIENTATION = "INCONSISTENT_ORIENTATION"
    INCONSISTENT_PIXEL_SPACING = "INCONSISTENT_PIXEL_SPACING"
    INCONSISTENT_SIZE = "INCONSISTENT_SIZE"
    INCONSISTENT_FRAME_OF_REFERENCE = "INCONSISTENT_FRAME_OF_REFERENCE"
    MULTI_VOLUME_SERIES = "MULTI_VOLUME_SERIES"
    MISSING_GEOMETRY = "MISSING_GEOMETRY"
    INVALID_GEOMETRY = "INVALID_GEOMETRY"
    NO_PATIENT_GEOMETRY = "NO_PATIENT_GEOMETRY"
    NO_PIXEL_SPACING = "NO_PIXEL_SPACING"
    UNDECODABLE_TRANSFER_SYNTAX = "UNDECODABLE_TRANSFER_SYNTAX"
    UNSUPPORTED_PIXEL_FORMAT = "UNSUPPORTED_PIXEL_FORMAT"
    MONOCHROME1_INVERTED = "MONOCHROME1_INVERTED"
    NIFTI_NO_SPATIAL_TRANSFORM = "NIFTI_NO_SPATIAL_TRANSFORM"
    NIFTI_QFORM_SFORM_MISMATCH = "NIFTI_QFORM_SFORM_MISMATCH"


@dataclass(frozen=True)
class Problem:
    """One defect of an input, with the files it concerns (paths as given to the reader)."""

    code: ProblemCode
    severity: Severity
    message: str
    files: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", " ".join(str(self.message).split()))
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "code": self.code.value,
            "severity": self.severity.value,
            "message": self.message,
            "files": list(self.files),
        }


def worst_severity(problems: Iterable[Problem]) -> Severity | None:
    order = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}
    worst = None
    for p in problems:
        if worst is None or order[p.severity] > order[worst]:
            worst = p.severity
    return worst
