"""Regions of interest on an image grid: cropped masks and what conversions report (R-5.3, R-5.7, R-6.3).

Every converter of this package (RT Structure Set, NIfTI labelmap, DICOM SEG) produces and consumes
the same two things:

* :class:`RoiMask` - a boolean mask of one ROI on a full ``[k, j, i]`` grid, stored cropped to its
  bounding box. A body contour on a 512 x 512 x 177 CT fills most of the volume, but the other
  ROIs of a structure set occupy a few per cent of it; cropping keeps a whole structure set in a
  fraction of the memory eleven full masks would take (the RTSS benchmark measures it).
* :class:`RoiProblem` - one structured warning about one ROI or about the whole file: a code from
  :class:`RoiProblemCode`, a severity, a one-line message, the ROI and how many contours it
  concerns. It is the sibling of :class:`~RTSSBridgeLib.problems.Problem` (series loading), with
  the same ``to_dict`` shape plus the ROI, so the command line's JSON sidecar and the Slicer panel
  list both kinds alike. Nothing an importer meets is dropped silently: it is repaired, clipped or
  skipped, and always reported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError
from .problems import Severity

ShapeKJI = Tuple[int, int, int]


class RoiProblemCode(str, Enum):
    """Closed vocabulary of what ROI importers and exporters report (values are stable JSON strings)."""

    # --- the file and its references
    SOP_INSTANCE_UID_IS_SERIES_UID = "SOP_INSTANCE_UID_IS_SERIES_UID"
    NO_REFERENCED_SERIES = "NO_REFERENCED_SERIES"
    REFERENCED_SERIES_NOT_FOUND = "REFERENCED_SERIES_NOT_FOUND"
    SERIES_CHOSEN_BY_FRAME_OF_REFERENCE = "SERIES_CHOSEN_BY_FRAME_OF_REFERENCE"
    FRAME_OF_REFERENCE_MISMATCH = "FRAME_OF_REFERENCE_MISMATCH"
    NO_FRAME_OF_REFERENCE = "NO_FRAME_OF_REFERENCE"
    UNRESOLVED_SERIES_IMAGES = "UNRESOLVED_SERIES_IMAGES"
    ROI_WITHOUT_CONTOUR_ITEM = "ROI_WITHOUT_CONTOUR_ITEM"
    CONTOUR_ITEM_WITHOUT_ROI = "CONTOUR_ITEM_WITHOUT_ROI"
    DUPLICATE_ROI_NUMBER = "DUPLICATE_ROI_NUMBER"
    # --- one ROI
    EMPTY_ROI = "EMPTY_ROI"
    EMPTY_MASK = "EMPTY_MASK"
    MATCHED_BY_POSITION = "MATCHED_BY_POSITION"
    REFERENCE_POSITION_MISMATCH = "REFERENCE_POSITION_MISMATCH"
    CONTOURS_OUTSIDE_SERIES = "CONTOURS_OUTSIDE_SERIES"
    CLIPPED_IN_PLANE = "CLIPPED_IN_PLANE"
    OFF_SLICE_PLANE = "OFF_SLICE_PLANE"
    NON_PLANAR_CONTOUR = "NON_PLANAR_CONTOUR"
    OPEN_CONTOUR = "OPEN_CONTOUR"
    TOO_FEW_POINTS = "TOO_FEW_POINTS"
    MALFORMED_CONTOUR_DATA = "MALFORMED_CONTOUR_DATA"
    POINT_COUNT_MISMATCH = "POINT_COUNT_MISMATCH"
    UNSUPPORTED_GEOMETRIC_TYPE = "UNSUPPORTED_GEOMETRIC_TYPE"
    POINT_ROI = "POINT_ROI"
    ROI_FRAME_OF_REFERENCE_MISMATCH = "ROI_FRAME_OF_REFERENCE_MISMATCH"
    NAME_NOT_IN_TEMPLATE = "NAME_NOT_IN_TEMPLATE"
    VALUE_NOT_IN_TEMPLATE = "VALUE_NOT_IN_TEMPLATE"
    CODE_NOT_IN_TEMPLATE = "CODE_NOT_IN_TEMPLATE"
    DUPLICATE_TEMPLATE_LABEL = "DUPLICATE_TEMPLATE_LABEL"
    OVERLAP_IN_LABELMAP = "OVERLAP_IN_LABELMAP"
    RENAMED_FILE = "RENAMED_FILE"
    SEGMENT_FRAME_OUTSIDE_SERIES = "SEGMENT_FRAME_OUTSIDE_SERIES"
    FRACTIONAL_SEGMENT = "FRACTIONAL_SEGMENT"
    NIFTI_HEADER = "NIFTI_HEADER"
    UNREADABLE_ELEMENT = "UNREADABLE_ELEMENT"


@dataclass(frozen=True)
class RoiProblem:
    """One defect met while converting ROIs (a sibling of :class:`~RTSSBridgeLib.problems.Problem`).

    ``count`` says how many contours (or frames, or voxels, as the message states) are concerned,
    so that a structure set with 400 unresolved references gives one line per ROI, not 400.
    """

    code: RoiProblemCode
    severity: Severity
    message: str
    roi_number: Optional[int] = None
    roi_name: Optional[str] = None
    count: int = 1
    files: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", " ".join(str(self.message).split()))
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))

    def to_dict(self) -> Dict[str, Any]:
        """JSON form: the keys of :meth:`Problem.to_dict` plus ``roi_number``, ``roi_name`` and ``count``."""
        return {
            "code": self.code.value,
            "severity": self.severity.value,
            "message": self.message,
            "roi_number": self.roi_number,
            "roi_name": self.roi_name,
            "count": int(self.count),
            "files": list(self.files),
        }

    def line(self) -> str:
        """One line for logs, the command line and the panel (ROI names are not patient data)."""
        who = f"ROI {self.roi_number} {self.roi_name!r}: " if self.roi_number is not None or self.roi_name else ""
        return f"[{self.severity.value}] {self.code.value}: {who}{self.message}"


def problem(code: RoiProblemCode, severity: Severity, message: str, *, roi_number: Optional[int] = None,
            roi_name: Optional[str] = None, count: int = 1, files: Sequence[str] = ()) -> RoiProblem:
    """Shorthand constructor used by the converters."""
    return RoiProblem(code, severity, message, roi_number, roi_name, count, tuple(files))


class RoiMask:
    """A boolean mask of one ROI on a ``[k, j, i]`` grid of ``shape``, stored cropped.

    ``data[a, b, c]`` is voxel ``[offset[0] + a, offset[1] + b, offset[2] + c]`` of the full grid;
    voxels outside the stored box are False. An empty mask stores a ``(0, 0, 0)`` array.

    Examples
    --------
    >>> full = np.zeros((4, 5, 6), dtype=bool); full[1, 2, 3] = True
    >>> m = RoiMask.from_full(full)
    >>> m.offset, m.data.shape, m.count()
    ((1, 2, 3), (1, 1, 1), 1)
    """

    __slots__ = ("_count", "data", "offset", "shape")

    def __init__(self, shape: Sequence[int], offset: Sequence[int], data: np.ndarray) -> None:
        shape_t = tuple(int(s) for s in shape)
        offset_t = tuple(int(o) for o in offset)
        arr = np.asarray(data)
        if len(shape_t) != 3 or any(s < 1 for s in shape_t):
            raise InputError(f"must be three positive integers, got {list(shape)}", field="mask.shape")
        if arr.ndim != 3 or len(offset_t) != 3:
            raise InputError(f"mask data must be 3-D with a 3-D offset, got {arr.shape} at {list(offset)}",
                             field="mask.data")
        if arr.dtype != np.bool_:
            arr = arr.astype(bool)
        if arr.size and any(o < 0 or o + n > s for o, n, s in zip(offset_t, arr.shape, shape_t)):
            raise InputError(f"box at {list(offset_t)} of size {list(arr.shape)} leaves the grid {list(shape_t)}",
                             field="mask.offset")
        self.shape: ShapeKJI = (shape_t[0], shape_t[1], shape_t[2])
        self.offset: ShapeKJI = (offset_t[0], offset_t[1], offset_t[2]) if arr.size else (0, 0, 0)
        self.data: np.ndarray = arr if arr.size else np.zeros((0, 0, 0), dtype=bool)
        self._count: Optional[int] = None  # the data is never changed after construction

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, shape: Sequence[int]) -> RoiMask:
        return cls(shape, (0, 0, 0), np.zeros((0, 0, 0), dtype=bool))

    @classmethod
    def from_full(cls, full: np.ndarray) -> RoiMask:
        """Crop a full-grid mask (any dtype; non-zero is inside) to its bounding box."""
        arr = np.asarray(full)
        if arr.ndim != 3:
            raise InputError(f"must be a 3-D [k, j, i] array, got shape {list(arr.shape)}", field="mask")
        inside = arr if arr.dtype == np.bool_ else arr != 0
        box = bounding_box(inside)
        if box is None:
            return cls.empty(arr.shape)
        return cls(arr.shape, [b.start for b in box], np.ascontiguousarray(inside[box]))

    @classmethod
    def from_box(cls, shape: Sequence[int], offset: Sequence[int], data: np.ndarray) -> RoiMask:
        """A mask from a box that may hold empty margins: shrunk to the tight bounding box."""
        box = bounding_box(np.asarray(data, dtype=bool))
        if box is None:
            return cls.empty(shape)
        tight = np.ascontiguousarray(np.asarray(data, dtype=bool)[box])
        return cls(shape, [o + b.start for o, b in zip(offset, box)], tight)

    # ------------------------------------------------------------------ views
    def full(self) -> np.ndarray:
        """The mask on the whole grid (a new bool array)."""
        out = np.zeros(self.shape, dtype=bool)
        if self.data.size:
            out[self.box()] = self.data
        return out

    def box(self) -> Tuple[slice, slice, slice]:
        """Slices of the stored box in the full array."""
        return tuple(slice(o, o + n) for o, n in zip(self.offset, self.data.shape))  # type: ignore[return-value]

    def count(self) -> int:
        """Number of voxels inside."""
        if self._count is None:
            self._count = int(np.count_nonzero(self.data))
        return self._count

    def is_empty(self) -> bool:
        return self.count() == 0

    def slices_k(self) -> List[int]:
        """Slice indices k that hold at least one voxel of the ROI."""
        if not self.data.size:
            return []
        used = np.nonzero(self.data.any(axis=(1, 2)))[0]
        return [int(k) + self.offset[0] for k in used]

    def same_as(self, other: RoiMask) -> bool:
        """Exactly the same voxels on the same grid."""
        if self.shape != other.shape:
            return False
        if self.count() != other.count():
            return False
        if self.count() == 0:
            return True
        return bool(np.array_equal(self.full()[self.box()], other.full()[self.box()]))

    def paint(self, target: np.ndarray, value: int) -> None:
        """Write ``value`` into ``target`` (a full ``[k, j, i]`` array) where the mask is set."""
        if target.shape != self.shape:
            raise InputError(f"target shape {list(target.shape)} is not the mask grid {list(self.shape)}",
                             field="labelmap")
        if self.data.size:
            view = target[self.box()]
            view[self.data] = value

    def __repr__(self) -> str:
        return f"RoiMask(shape={self.shape}, offset={self.offset}, box={self.data.shape}, voxels={self.count()})"


def bounding_box(mask: np.ndarray) -> Optional[Tuple[slice, ...]]:
    """Tight bounding box of the non-zero voxels of a 3-D array, or None when there is none.

    Two passes over the volume (the slices used, then the in-plane extent of those slices only)
    instead of one per axis.
    """
    if mask.ndim != 3:
        raise InputError(f"must be a 3-D array, got shape {list(mask.shape)}", field="mask")
    slices = np.nonzero(mask.any(axis=(1, 2)))[0]
    if not len(slices):
        return None
    k0, k1 = int(slices[0]), int(slices[-1]) + 1
    plane: np.ndarray = np.asarray(mask[k0:k1].any(axis=0))
    rows = np.nonzero(plane.any(axis=1))[0]
    cols = np.nonzero(plane.any(axis=0))[0]
    return (slice(k0, k1), slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))


def dice(a: RoiMask, b: RoiMask) -> float:
    """Dice coefficient of two masks on the same grid (1.0 when both are empty).

    A self-check for conversions (round trips, agreement with plastimatch); the QC metrics proper,
    with their definitions and reports, live in QCMetrics.
    """
    if a.shape != b.shape:
        raise InputError(f"masks on different grids {list(a.shape)} and {list(b.shape)}", field="mask.shape")
    na, nb = a.count(), b.count()
    if na + nb == 0:
        return 1.0
    box = _union_box(a, b)
    fa = _in_box(a, box)
    fb = _in_box(b, box)
    return 2.0 * int(np.count_nonzero(fa & fb)) / float(na + nb)


def _union_box(a: RoiMask, b: RoiMask) -> Tuple[slice, ...]:
    boxes = [m.box() for m in (a, b) if m.data.size]
    return tuple(slice(min(bx[d].start for bx in boxes), max(bx[d].stop for bx in boxes)) for d in range(3))


def _in_box(mask: RoiMask, box: Tuple[slice, ...]) -> np.ndarray:
    out = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
    if mask.data.size:
        local = tuple(slice(o - s.start, o - s.start + n) for o, n, s in zip(mask.offset, mask.data.shape, box))
        out[local] = mask.data
    return out


def worst(problems: Iterable[RoiProblem]) -> Optional[Severity]:
    """The most severe severity among ``problems`` (None when there are none)."""
    order = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}
    found = None
    for p in problems:
        if found is None or order[p.severity] > order[found]:
            found = p.severity
    return found
