"""ROI sets: what every conversion (RTSS, DICOM SEG, NIfTI labelmap) reads and writes (R-5.3, R-5.7, R-6.11).

* :class:`ReferenceGrid` - the image series ROIs are drawn on: its geometry, the position and SOP
  Instance UID of every slice (in the ``k`` order of the loaded volume), and the series' UIDs.
  Built from a scanned :class:`~RTSSBridgeLib.dicom_series.DicomSeries` (headers only) or from a
  geometry and a list of UIDs (a volume node in the scene, a sample case being written).
* :class:`Roi` - one ROI: number, name, colour, RT attributes, template label, its
  :class:`~RTSSBridgeLib.roi.RoiMask` (or points for POINT ROIs) and its problems.
* :class:`RoiSet` - the ROIs of one file on one grid, with the file-level problems and the JSON
  sidecar (``Resources/schemas/roi-conversion.schema.json``).

Label values (R-5.3 semantic consistency): with a template every ROI whose name maps to a template
label gets that label's stable value, the same in every case; several ROIs may share one (all
metastases are ``METASTASIS``); ROIs the template does not know get values above the template's
largest, with a warning. Without a template ROIs are numbered 1, 2, ... in file order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError
from .geometry import ImageGeometry
from .labels import Code, LabelInfo, LabelSet
from .problems import Severity
from .roi import RoiMask, RoiProblem, RoiProblemCode, problem

#: ``$id`` of the JSON Schema of conversion sidecars and ``--json`` output.
SCHEMA_ID = "https://multimodalannotation.github.io/schemas/roi-conversion/v1"
#: The mask grid of an export may differ from the series geometry by this much (NIfTI-1 stores
#: the affine in float32: about 3e-5 mm at 500 mm from the origin).
GRID_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class ReferenceGrid:
    """The image series ROIs refer to, slice by slice.

    ``frame_ijk[k]`` is the continuous voxel index of slice ``k``'s ImagePositionPatient in
    ``geometry`` (``(0, 0, k)`` for a regular series; other values for a missing slice, uneven
    spacing or gantry tilt), so contours are matched and drawn against the slice actually stored
    at ``k``. ``frame_numbers[k]`` is the 1-based frame of a multi-frame file (0 for single-frame).
    """

    geometry: ImageGeometry
    frame_ijk: np.ndarray
    sop_instance_uids: Tuple[str, ...]
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    modality: str = ""
    frame_numbers: Tuple[int, ...] = ()
    files: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = self.geometry.shape[2]
        ijk = np.asarray(self.frame_ijk, dtype=np.float64)
        if ijk.shape != (n, 3):
            raise InputError(f"needs one position per slice ({n}), got shape {list(ijk.shape)}", field="frame_ijk")
        if len(self.sop_instance_uids) != n:
            raise InputError(f"needs one SOP Instance UID per slice ({n}), got {len(self.sop_instance_uids)}",
                             field="sop_instance_uids")
        object.__setattr__(self, "frame_ijk", ijk)
        if not self.frame_numbers:
            object.__setattr__(self, "frame_numbers", (0,) * n)

    @property
    def n_slices(self) -> int:
        return self.geometry.shape[2]

    @property
    def slice_spacing_mm(self) -> float:
        """Median distance between neighbouring slices (the geometry's k spacing for one slice)."""
        if self.n_slices < 2:
            return float(self.geometry.spacing_mm[2])
        steps = np.diff(self.frame_ijk[:, 2]) * self.geometry.spacing_mm[2]
        return float(np.median(np.abs(steps)))

    def index_of_uid(self) -> Dict[str, int]:
        """SOP Instance UID -> slice index (multi-frame files: the first frame)."""
        out: Dict[str, int] = {}
        for k, uid in enumerate(self.sop_instance_uids):
            out.setdefault(uid, k)
        return out

    def summary(self) -> Dict[str, Any]:
        return {
            "series_instance_uid": self.series_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "modality": self.modality,
            "n_slices": self.n_slices,
            "geometry": self.geometry.to_dict(),
        }

    @classmethod
    def from_series(cls, series: Any) -> ReferenceGrid:
        """From a :class:`~RTSSBridgeLib.dicom_series.DicomSeries` (headers only)."""
        geometry: ImageGeometry = series.geometry
        positions = []
        for frame in series.frames:
            if frame.position is None:
                raise InputError("a slice has no ImagePositionPatient: ROIs need a 3-D series",
                                 file=frame.path, field="ImagePositionPatient")
            positions.append(frame.position)
        return cls(
            geometry=geometry,
            frame_ijk=geometry.lps_to_ijk(np.asarray(positions, dtype=np.float64)),
            sop_instance_uids=tuple(f.sop_instance_uid for f in series.frames),
            sop_class_uid=series.sop_class_uid,
            series_instance_uid=series.series_uid,
            study_instance_uid=series.study_uid,
            frame_of_reference_uid=series.frame_of_reference_uid,
            modality=series.modality,
            frame_numbers=tuple(f.frame_index + 1 if f.n_frames_in_file > 1 else 0 for f in series.frames),
            files=tuple(f.path for f in series.frames),
        )

    @classmethod
    def from_geometry(cls, geometry: ImageGeometry, sop_instance_uids: Sequence[str], *, sop_class_uid: str = "",
                      series_instance_uid: str = "", study_instance_uid: str = "",
                      frame_of_reference_uid: str = "", modality: str = "") -> ReferenceGrid:
        """A regular series: slice ``k`` at ``geometry.slice_position_lps(k)``."""
        n = geometry.shape[2]
        ijk = np.zeros((n, 3))
        ijk[:, 2] = np.arange(n)
        return cls(geometry, ijk, tuple(sop_instance_uids), sop_class_uid, series_instance_uid, study_instance_uid,
                   frame_of_reference_uid, modality)


@dataclass
class Roi:
    """One ROI with its mask (or points), attributes and the problems met converting it."""

    number: int
    name: str
    mask: Optional[RoiMask] = None
    color: Optional[Tuple[int, int, int]] = None
    label: Optional[LabelInfo] = None
    interpreted_type: str = ""
    generation_algorithm: str = ""
    description: str = ""
    points_lps: Optional[np.ndarray] = None
    problems: List[RoiProblem] = field(default_factory=list)
    n_contours: int = 0
    label_value: Optional[int] = None
    labelmap_voxel_count: Optional[int] = None
    codes: Dict[str, Any] = field(default_factory=dict)  # codes found in the file (category, type ...)
    file: Optional[str] = None  # the per-ROI file written or read

    @property
    def kind(self) -> str:
        return "points" if self.points_lps is not None and self.mask is None else "mask"

    def voxel_count(self) -> int:
        return self.mask.count() if self.mask is not None else 0

    def add(self, code: RoiProblemCode, severity: Severity, message: str, count: int = 1) -> None:
        self.problems.append(problem(code, severity, message, roi_number=self.number, roi_name=self.name,
                                     count=count))

    def display_color(self) -> Tuple[int, int, int]:
        """The colour to show: the file's, else the template's, else a stable colour from the number."""
        if self.color is not None:
            return self.color
        if self.label is not None:
            return self.label.color
        return default_color(self.number)

    def to_dict(self, geometry: Optional[ImageGeometry] = None) -> Dict[str, Any]:
        volume = None
        if geometry is not None and self.mask is not None:
            volume = round(self.voxel_count() * geometry.voxel_volume_mm3, 4)
        points = None
        if self.points_lps is not None:
            points = [[round(float(v), 4) for v in p] for p in np.asarray(self.points_lps).reshape(-1, 3)]
        return {
            "number": int(self.number),
            "name": self.name,
            "kind": self.kind,
            "label_value": self.label_value,
            "label_code": self.label.code if self.label is not None else None,
            "label_name": self.label.name if self.label is not None else None,
            "color": list(self.display_color()),
            "interpreted_type": self.interpreted_type,
            "generation_algorithm": self.generation_algorithm,
            "n_contours": int(self.n_contours),
            "voxel_count": self.voxel_count() if self.mask is not None else None,
            "labelmap_voxel_count": self.labelmap_voxel_count,
            "volume_mm3": volume,
            "points_lps": points,
            "file": self.file,
            "warnings": [p.to_dict() for p in self.problems],
        }


def default_color(number: int) -> Tuple[int, int, int]:
    """A stable, distinguishable colour for ROI ``number`` when neither file nor template gives one."""
    palette = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255))
    return palette[(max(int(number), 1) - 1) % len(palette)]


@dataclass
class RoiSet:
    """The ROIs of one file on one reference grid, with the problems that concern the whole file."""

    source_kind: str  # RTSTRUCT, SEG, NIFTI, MASKS
    source_path: str
    geometry: ImageGeometry
    rois: List[Roi]
    problems: List[RoiProblem] = field(default_factory=list)
    reference: Optional[ReferenceGrid] = None
    info: Dict[str, Any] = field(default_factory=dict)
    label_set: Optional[LabelSet] = None
    written: Dict[str, Any] = field(default_factory=dict)  # identifiers of a file an export wrote

    def all_problems(self) -> List[RoiProblem]:
        """File-level problems, then each ROI's, in ROI order."""
        out = list(self.problems)
        for roi in self.rois:
            out.extend(roi.problems)
        return out

    def by_name(self, name: str) -> Roi:
        for roi in self.rois:
            if roi.name == name:
                return roi
        raise KeyError(f"no ROI named {name!r}; have {[r.name for r in self.rois]}")

    def map_to_template(self, label_set: Optional[LabelSet]) -> None:
        """Map ROI names to template labels (R-8.2 name rules) and assign labelmap values."""
        self.label_set = label_set
        assign_label_values(self.rois, label_set, self.problems)

    def labelmap_dtype(self) -> np.dtype:
        """uint8 when every label value fits, else uint16 (what :meth:`labelmap` returns)."""
        if any(r.label_value is None for r in self.rois if r.mask is not None):
            assign_label_values(self.rois, self.label_set, self.problems)
        top = max((int(r.label_value) for r in self.rois if r.mask is not None and r.label_value is not None),
                  default=0)
        return np.dtype(np.uint8 if top < 256 else np.uint16)

    def labelmap(self, out: Optional[np.ndarray] = None) -> np.ndarray:
        """A ``[k, j, i]`` labelmap of the mask ROIs with their ``label_value`` (uint8 or uint16),
        painted into ``out`` when given (zeros, of :meth:`labelmap_dtype`: a memory-mapped file).

        Larger ROIs are painted first so that smaller ones stay visible where they overlap (a body
        contour holds every organ); each ROI's ``labelmap_voxel_count`` says how much of it the
        labelmap shows and an ``OVERLAP_IN_LABELMAP`` warning names what hides the rest.
        """
        dtype = self.labelmap_dtype()
        masks = [r for r in self.rois if r.mask is not None and r.label_value is not None]
        if out is None:
            out = np.zeros(self.geometry.array_shape, dtype=dtype)
        elif out.shape != self.geometry.array_shape or out.dtype.newbyteorder("=") != dtype:
            raise ValueError(f"labelmap target {out.shape} {out.dtype} is not {self.geometry.array_shape} {dtype}")
        order = sorted(masks, key=lambda r: (-r.voxel_count(), r.number))
        # Two slabs of slices painted by two threads (numpy releases the GIL while copying and
        # counting): 0.08 s -> 0.045 s on the 13 ROIs of the benchmark CT.
        nk = out.shape[0]
        slabs = [(0, nk)] if nk < 8 else [(0, nk // 2), (nk // 2, nk)]
        if len(slabs) == 1:
            hidden_per_slab = [_paint(out, order, *slabs[0])]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=len(slabs)) as pool:
                hidden_per_slab = list(pool.map(lambda slab: _paint(out, order, *slab), slabs))
        for index, roi in enumerate(order):
            mask = roi.mask
            assert mask is not None
            if not mask.data.size:
                roi.labelmap_voxel_count = 0
                continue
            hidden = sum(h[index] for h in hidden_per_slab)
            roi.labelmap_voxel_count = mask.count() - hidden
            roi.problems = [p for p in roi.problems if p.code != RoiProblemCode.OVERLAP_IN_LABELMAP]
            if hidden:
                # Only ROIs painted later can hide this one; testing their boxes is far cheaper than
                # listing the values under a body contour (0.15 s on the benchmark CT).
                above = [r for r in order[index + 1:] if r.label_value != roi.label_value and r.mask is not None
                         and _overlap(mask, r.mask)]
                covering = sorted({int(r.label_value) for r in above})  # type: ignore[arg-type]
                roi.add(RoiProblemCode.OVERLAP_IN_LABELMAP, Severity.INFO,
                        f"{hidden} of its {mask.count()} voxels show label value(s) {covering} "
                        f"({', '.join(r.name for r in above)}) in the labelmap, which holds one label per voxel; "
                        "the per-ROI files (--split) are exact", count=hidden)
        return out

    def to_dict(self, operation: str, outputs: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """The JSON sidecar / ``--json`` document (validated against the schema by the caller)."""
        problems = self.all_problems()
        return {
            "schema": SCHEMA_ID,
            "operation": operation,
            "source": {"kind": self.source_kind, "path": self.source_path, **_json_safe(self.info)},
            "reference_series": self.reference.summary() if self.reference is not None
            else {"series_instance_uid": None, "study_instance_uid": None, "frame_of_reference_uid": None,
                  "modality": None, "n_slices": self.geometry.shape[2], "geometry": self.geometry.to_dict()},
            "template": {"template_id": self.label_set.template_id, "version": self.label_set.version}
            if self.label_set is not None else None,
            "outputs": {**dict(outputs or {}), **_json_safe(self.written)},
            "rois": [r.to_dict(self.geometry) for r in self.rois],
            "problems": [p.to_dict() for p in self.problems],
            "n_warnings": sum(1 for p in problems if p.severity != Severity.INFO),
            "n_errors": sum(1 for p in problems if p.severity == Severity.ERROR),
        }


def _paint(out: np.ndarray, order: Sequence[Roi], k_lo: int, k_hi: int) -> List[int]:
    """Paint slices ``k_lo:k_hi`` of ``out`` with the ROIs in ``order`` (later ones on top); the
    number of each ROI's voxels in those slices that show another value afterwards."""
    parts: List[Optional[Tuple[np.ndarray, Tuple[slice, ...]]]] = []
    for roi in order:
        mask = roi.mask
        if mask is None or not mask.data.size:
            parts.append(None)
            continue
        a, b = max(k_lo, mask.offset[0]), min(k_hi, mask.offset[0] + mask.data.shape[0])
        if a >= b:
            parts.append(None)
            continue
        data = mask.data[a - mask.offset[0]: b - mask.offset[0]]
        box = (slice(a, b), *mask.box()[1:])
        np.copyto(out[box], int(roi.label_value), where=data)  # type: ignore[arg-type]
        parts.append((data, box))
    hidden = []
    for index, (roi, part) in enumerate(zip(order, parts)):
        # Only a box painted later can hide voxels: without one overlapping, nothing is counted.
        if part is None or not any(later is not None and _boxes_meet(part[1], later[1])
                                   for later in parts[index + 1:]):
            hidden.append(0)
        else:
            hidden.append(int(np.count_nonzero(part[0] & (out[part[1]] != roi.label_value))))
    return hidden


def _boxes_meet(a: Tuple[slice, ...], b: Tuple[slice, ...]) -> bool:
    return all(max(x.start, y.start) < min(x.stop, y.stop) for x, y in zip(a, b))


def _overlap(a: RoiMask, b: RoiMask) -> bool:
    """True when two masks on the same grid share a voxel."""
    if not a.data.size or not b.data.size:
        return False
    lo = [max(x, y) for x, y in zip(a.offset, b.offset)]
    hi = [min(x + n, y + m) for x, n, y, m in zip(a.offset, a.data.shape, b.offset, b.data.shape)]
    if any(h <= q for q, h in zip(lo, hi)):
        return False
    sa = tuple(slice(q - o, h - o) for q, h, o in zip(lo, hi, a.offset))
    sb = tuple(slice(q - o, h - o) for q, h, o in zip(lo, hi, b.offset))
    da, db = a.data[sa], b.data[sb]
    # A few slices at a time, stopping at the first shared voxel: an organ inside a body contour
    # is found in the first slices (the whole box took 0.038 s for the 12 ROIs under BODY).
    return any(bool(np.any(da[k:k + 8] & db[k:k + 8])) for k in range(0, da.shape[0], 8))


def _json_safe(info: Mapping[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = [v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for v in value]
        else:
            out[key] = str(value)
    return out


def assign_label_values(rois: Sequence[Roi], label_set: Optional[LabelSet],
                        file_problems: Optional[List[RoiProblem]] = None) -> None:
    """Give every mask ROI a labelmap value (see the module docstring) and its template label."""
    mask_rois = [r for r in rois if r.mask is not None]
    if label_set is None:
        for value, roi in enumerate(mask_rois, start=1):
            if roi.label is None:
                roi.label_value = value
            else:
                roi.label_value = roi.label.value
        return
    next_free = max((lab.value for lab in label_set.labels), default=0) + 1
    used: Dict[int, List[Roi]] = {}
    for roi in mask_rois:
        if roi.label is None:
            roi.label = label_set.map_name(roi.name)
        if roi.label is None:
            roi.label_value = next_free
            next_free += 1
            roi.add(RoiProblemCode.NAME_NOT_IN_TEMPLATE, Severity.WARNING,
                    f"the name matches no label or name rule of template {label_set.template_id} "
                    f"{label_set.version}; labelmap value {roi.label_value} given outside the template's values")
        else:
            roi.label_value = roi.label.value
        used.setdefault(int(roi.label_value), []).append(roi)
    for value, group in used.items():
        if len(group) > 1 and file_problems is not None and group[0].label is not None:
            file_problems.append(problem(
                RoiProblemCode.DUPLICATE_TEMPLATE_LABEL, Severity.INFO,
                f"{len(group)} ROIs ({', '.join(r.name for r in group)}) map to template label {group[0].label.code} "
                f"and share labelmap value {value}; the per-ROI files (--split) keep them apart", count=len(group)))


def code_dict(code: Optional[Code]) -> Optional[Dict[str, str]]:
    """JSON form of a code (scheme, value, meaning)."""
    if code is None:
        return None
    return {"scheme": code.scheme, "value": code.value, "meaning": code.meaning}


@lru_cache(maxsize=1)
def load_schema() -> Dict[str, Any]:
    from .resources import schema_path

    with open(schema_path("roi-conversion"), encoding="utf-8") as fh:
        schema: Dict[str, Any] = json.load(fh)
    return schema


def validate_report(document: Mapping[str, Any], file: str = "roi-conversion report") -> None:
    """Raise :class:`InputError` naming the first schema violation of a conversion document."""
    import jsonschema

    schema = load_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise InputError(f"{where}: {err.message}", file=file, field="schema")


def read_report(path: str) -> Dict[str, Any]:
    """Read and validate a conversion sidecar written by this package."""
    if not os.path.isfile(path):
        raise InputError("no such file", file=path)
    try:
        with open(path, encoding="utf-8") as fh:
            document: Dict[str, Any] = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"not readable JSON ({exc})", file=path) from exc
    validate_report(document, path)
    return document


def check_same_grid(mask_geometry: ImageGeometry, reference: ImageGeometry, what: str, file: str = "") -> None:
    """Refuse a mask whose grid is not the reference series' grid (no silent resampling)."""
    if mask_geometry.shape != reference.shape:
        raise InputError(f"{what} has shape {list(mask_geometry.shape)} but the series has {list(reference.shape)} "
                         "(i, j, k); masks must be on the series grid", file=file or None, field="shape")
    distance = mask_geometry.max_corner_distance_mm(reference)
    if distance > GRID_TOLERANCE_MM:
        raise InputError(f"{what} is {distance:.4g} mm away from the series grid at a corner (tolerance "
                         f"{GRID_TOLERANCE_MM:g} mm): another grid or orientation; resample it onto the series first",
                         file=file or None, field="geometry")
