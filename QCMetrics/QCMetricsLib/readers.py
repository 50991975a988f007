"""Case readers: what ``qc compare`` and ``qc batch`` accept as REF and TEST (R-10.2, R-5.7).

A reader turns a path (and optionally an image series folder) into a :class:`LabeledVolume`: the
labels (value, name, code) and their masks on one voxel grid (:class:`ImageGeometry`). Readers
form a small registry, tried in order; each says whether it can read a path. Built in:

* :class:`NiftiLabelmapReader` - one NIfTI labelmap (``.nii``/``.nii.gz``, integer values, 0 is
  background). Label names come from a Slicer colour table beside it (``<stem>.ctbl`` or
  ``<stem>_ColorTable.txt``: ``value name r g b a`` per line) or, inside a sample case, from
  ``case.json``; otherwise "label <value>";
* :class:`NiftiMaskFolderReader` - a folder of binary NIfTI masks on one grid, one per label
  (file stem = ROI name), e.g. an export of overlapping structures.

* :class:`RtssReader` - an RT Structure Set rasterised on its image series (``--series``) by
  RTSSBridge's importer.

Annotation packages belong to MultiModalAnnotation, which QCMetrics must not import: its command
line registers their reader with :func:`register_reader` at start-up
(``MultiModalAnnotationLib.qc_readers``), as it installs the template loader.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Tuple

import numpy as np
from scipy import ndimage

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.nifti import is_nifti_path, read_nifti

from .kernels import Box, box_voxels


@dataclass(frozen=True)
class LabelEntry:
    """One label of a volume: its value in the labelmap (or its index among masks), display name
    and template code when known."""

    value: int
    name: str
    code: Optional[str] = None

    @property
    def display(self) -> str:
        return self.code or self.name


@dataclass
class LabeledVolume:
    """Labels and their masks on one grid. Exactly one of ``labelmap`` (``[k, j, i]`` integers) and
    ``masks`` (value -> boolean ``[k, j, i]``) is set. ``image`` is an optional grey-level volume on
    the same grid (for report thumbnails)."""

    source: str
    geometry: ImageGeometry
    labels: List[LabelEntry]
    labelmap: Optional[np.ndarray] = None
    masks: Optional[Dict[int, np.ndarray]] = None
    values_are_codes: bool = True  # label values are the template's stable values (labelmaps)
    reader: str = ""
    image: Optional[np.ndarray] = None
    notes: List[str] = field(default_factory=list)
    _boxes: Optional[Dict[int, Optional[Box]]] = None
    _counts: Optional[Dict[int, int]] = None

    def __post_init__(self) -> None:
        if (self.labelmap is None) == (self.masks is None):
            raise ValueError("a LabeledVolume needs exactly one of labelmap and masks")
        shape = self.geometry.array_shape
        arrays = [self.labelmap] if self.labelmap is not None else list((self.masks or {}).values())
        for array in arrays:
            if array is not None and tuple(array.shape) != shape:
                raise InputError(f"voxel array shape {list(array.shape)} does not match the grid {list(shape)}",
                                 file=self.source, field="shape")
        values = [e.value for e in self.labels]
        if len(set(values)) != len(values):
            raise InputError("label values repeat", file=self.source, field="labels")

    def entry(self, value: int) -> LabelEntry:
        for e in self.labels:
            if e.value == value:
                return e
        raise KeyError(value)

    def _index(self) -> None:
        if self._boxes is not None:
            return
        boxes: Dict[int, Optional[Box]] = {}
        counts: Dict[int, int] = {}
        if self.labelmap is not None:
            lab = self.labelmap
            if lab.dtype.kind not in "iu":
                lab = lab.astype(np.int64)
            top = int(lab.max(initial=0))
            found = ndimage.find_objects(lab, max_label=top) if top > 0 else []
            # counted inside each label's box: np.bincount of the whole image casts it to int64 first
            # (0.45 s for a 512x512x140 uint8 labelmap, against 0.04 s for the boxes of two lungs)
            for e in self.labels:
                box = found[e.value - 1] if 0 < e.value <= len(found) else None
                boxes[e.value] = box
                counts[e.value] = int(np.count_nonzero(lab[box] == e.value)) if box is not None else 0
        else:
            from .kernels import bounding_box

            for e in self.labels:
                m = (self.masks or {})[e.value]
                boxes[e.value] = bounding_box(m)
                counts[e.value] = int(np.count_nonzero(m))
        self._boxes, self._counts = boxes, counts

    def box(self, value: int) -> Optional[Box]:
        self._index()
        assert self._boxes is not None
        return self._boxes.get(value)

    def count(self, value: int) -> int:
        self._index()
        assert self._counts is not None
        return self._counts.get(value, 0)

    def getter(self, value: int) -> Callable[[Box], np.ndarray]:
        """``get(sub_box) -> boolean mask`` of one label."""
        if self.labelmap is not None:
            lab = self.labelmap
            return lambda s: lab[s] == value
        mask = (self.masks or {})[value]
        return lambda s: np.asarray(mask[s], dtype=bool)

    def mask_of(self, values: List[int]) -> np.ndarray:
        """Full boolean mask of the union of some labels."""
        if self.labelmap is not None:
            return np.isin(self.labelmap, values) if values else np.zeros(self.labelmap.shape, dtype=bool)
        out = np.zeros(self.geometry.array_shape, dtype=bool)
        for v in values:
            out |= (self.masks or {})[v]
        return out


class Reader(Protocol):
    """What a case reader provides."""

    name: str
    description: str

    def can_read(self, path: str, series: Optional[str] = None) -> bool: ...

    def read(self, path: str, series: Optional[str] = None) -> LabeledVolume: ...


_COLOR_LINE = re.compile(r"^\s*(\d+)\s+(\S+)(?:\s+(\d+)\s+(\d+)\s+(\d+)(?:\s+(\d+))?)?\s*$")


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _color_table_names(path: Path) -> Dict[int, str]:
    stem = _stem(path)
    for candidate in (path.with_name(stem + ".ctbl"), path.with_name(stem + "_ColorTable.txt")):
        if candidate.is_file():
            names: Dict[int, str] = {}
            for n, line in enumerate(candidate.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                m = _COLOR_LINE.match(line)
                if not m:
                    raise InputError(f"line {n} is not 'value name r g b a'", file=str(candidate), field="line")
                names[int(m.group(1))] = m.group(2)
            return names
    return {}


def _sample_case_names(path: Path) -> Dict[int, Tuple[str, Optional[str]]]:
    """Label names and codes of a sample case's ground-truth labelmap from its validated case.json."""
    for parent in list(path.resolve().parents)[:3]:
        manifest = parent / "case.json"
        if manifest.is_file():
            from RTSSBridgeLib.samples import validate_manifest

            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
                validate_manifest(data)
            except (InputError, ValueError):
                return {}  # names are a convenience: an unreadable manifest is not used (validated on read)
            rel = path.resolve().relative_to(parent).as_posix()
            for entry in data.get("ground_truth", []):
                if entry.get("path") == rel:
                    return {int(label["value"]): (str(label.get("name", "")), label.get("code"))
                            for label in entry.get("labels", [])}
    return {}


class NiftiLabelmapReader:
    name = "nifti-labelmap"
    description = "one NIfTI labelmap (.nii/.nii.gz), integer values, 0 = background"

    def can_read(self, path: str, series: Optional[str] = None) -> bool:
        return os.path.isfile(path) and is_nifti_path(path)

    def read(self, path: str, series: Optional[str] = None) -> LabeledVolume:
        image = read_nifti(path)
        data = image.voxels
        if data.dtype.kind == "f":
            if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
                raise InputError("voxel values are not whole numbers: not a labelmap", file=path, field="datatype")
            data = data.astype(np.int64)
        if data.dtype.kind not in "ui" or data.dtype == np.bool_:
            data = data.astype(np.int64) if data.dtype != np.bool_ else data.astype(np.uint8)
        if data.size and int(data.min()) < 0:
            raise InputError(f"negative label value {int(data.min())}", file=path, field="voxels")
        if data.size and int(data.max()) > 65535:
            raise InputError(f"label value {int(data.max())} above 65535", file=path, field="voxels")
        values = [int(v) for v in np.unique(data) if v != 0]
        p = Path(path)
        names = _color_table_names(p)
        from_case = _sample_case_names(p) if not names else {}
        labels = []
        for v in values:
            if v in names:
                labels.append(LabelEntry(v, names[v]))
            elif v in from_case:
                name, code = from_case[v]
                labels.append(LabelEntry(v, name or f"label {v}", code))
            else:
                labels.append(LabelEntry(v, f"label {v}"))
        notes = [f"{pr.code.value}: {pr.message}" for pr in image.problems]
        return LabeledVolume(path, image.geometry, labels, labelmap=data, reader=self.name, notes=notes)


class NiftiMaskFolderReader:
    name = "nifti-mask-folder"
    description = "a folder of binary NIfTI masks on one grid, one per label (file stem = ROI name)"

    def can_read(self, path: str, series: Optional[str] = None) -> bool:
        return os.path.isdir(path) and any(is_nifti_path(f) for f in os.listdir(path))

    def read(self, path: str, series: Optional[str] = None) -> LabeledVolume:
        files = sorted(f for f in os.listdir(path) if is_nifti_path(f))
        geometry: Optional[ImageGeometry] = None
        masks: Dict[int, np.ndarray] = {}
        labels: List[LabelEntry] = []
        for n, name in enumerate(files, start=1):
            full = os.path.join(path, name)
            image = read_nifti(full)
            if geometry is None:
                geometry = image.geometry
            elif not image.geometry.isclose(geometry, 1e-3):
                raise InputError(f"mask is not on the grid of the folder's first mask ({files[0]}): all masks "
                                 "of a folder must share one grid", file=full, field="geometry")
            values = np.unique(image.voxels)
            if not set(values.tolist()) <= {0, 1}:
                raise InputError(f"not a binary mask (values {values[:6].tolist()})", file=full, field="voxels")
            masks[n] = image.voxels != 0
            labels.append(LabelEntry(n, _stem(Path(name))))
        assert geometry is not None
        return LabeledVolume(path, geometry, labels, masks=masks, values_are_codes=False, reader=self.name)


class RtssReader:
    """An RT Structure Set rasterised on its image series with RTSSBridge's importer (the same
    even-odd, voxel-centre rule as ``mmanno rtss import``); ``--series`` names the image folder.
    ROI numbers are not template values, so labels match by template code (ROI names mapped by
    the template), then ROI name. POINT ROIs and ROIs without contours carry no mask and are noted."""

    name = "rtss"
    description = "an RT Structure Set file (needs --series: the folder of its image series)"

    def can_read(self, path: str, series: Optional[str] = None) -> bool:
        if not os.path.isfile(path) or is_nifti_path(path):
            return False
        try:
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
        except Exception:  # not DICOM at all: another reader's input, or none's
            return False
        return str(ds.get("Modality", "")) == "RTSTRUCT" or str(ds.get("SOPClassUID", "")) == RTSS_SOP_CLASS

    def read(self, path: str, series: Optional[str] = None) -> LabeledVolume:
        from RTSSBridgeLib.rtss_import import import_rtss

        if not series:
            raise InputError("an RT Structure Set is compared on its image series: give --series DIR", file=path,
                             field="--series")
        roi_set = import_rtss(path, series)
        masks: Dict[int, np.ndarray] = {}
        labels: List[LabelEntry] = []
        notes = [p.line() for p in roi_set.problems]
        for roi in roi_set.rois:
            notes += [p.line() for p in roi.problems]
            if roi.mask is None:
                notes.append(f"ROI {roi.number} {roi.name!r} has no mask (points or no contours): not compared")
                continue
            masks[roi.number] = roi.mask.full()
            labels.append(LabelEntry(roi.number, roi.name, roi.label.code if roi.label is not None else None))
        return LabeledVolume(path, roi_set.geometry, labels, masks=masks, values_are_codes=False, reader=self.name,
                             notes=notes)


RTSS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"

READERS: List[Reader] = [RtssReader(), NiftiLabelmapReader(), NiftiMaskFolderReader()]


def register_reader(reader: Reader, first: bool = True) -> None:
    """Add a reader (RTSS, annotation package...); ``first`` puts it before the built-in ones."""
    if any(r.name == reader.name for r in READERS):
        raise ValueError(f"a reader named {reader.name!r} is already registered")
    if first:
        READERS.insert(0, reader)
    else:
        READERS.append(reader)


def read_labeled_volume(path: str, series: Optional[str] = None) -> LabeledVolume:
    """Read REF or TEST with the first reader that accepts it (InputError naming the formats when
    none does)."""
    from RTSSBridgeLib.cliutil import run_reader_hooks

    run_reader_hooks()  # readers registered by higher modules (annotation packages)
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputError("no such file or folder", file=p)
    for reader in READERS:
        if reader.can_read(p, series):
            return reader.read(p, series)
    accepted = "; ".join(f"{r.name} ({r.description})" for r in READERS)
    raise InputError(f"no reader accepts this input; accepted: {accepted}", file=p)


def image_diagonal_mm(geometry: ImageGeometry) -> float:
    """Length of the grid's diagonal between corner voxel centres (the worst-case distance)."""
    corners = geometry.corners_lps()
    return float(np.linalg.norm(corners[-1] - corners[0]))


def label_voxel_fraction(volume: LabeledVolume, value: int) -> float:
    box = volume.box(value)
    return volume.count(value) / max(box_voxels(box), 1)


def attach_series_image(volume: LabeledVolume, series: str) -> None:
    """Use the image series as the background of the report thumbnails when it is on the grid."""
    from RTSSBridgeLib.dicom_series import read_volume, scan_dicom

    if not os.path.isdir(series):
        raise InputError("not a folder", file=series, field="--series")
    scan = scan_dicom(series)
    for found in scan.series:
        if found.geometry.isclose(volume.geometry, 1e-3):
            volume.image = read_volume(found).voxels
            return
    volume.notes.append("no series of --series is on the reference grid: thumbnails without the image")
