"""DICOM Segmentation (SEG) import and export via highdicom, with the template's codes (R-5.7, R-8.2).

Export builds a BINARY Segmentation with :class:`highdicom.seg.Segmentation` from the series'
own headers (so it references every source image and copies Patient/Study), one segment per
ROI, each with the template label's Segmented Property Category / Type (and modifier, anatomic
region) codes, or Tissue/Tissue without a template, and the ROI colour as the recommended
CIELab display value. Empty frames are omitted. Non-overlapping ROIs are passed as one labelmap
array (the SEG is the same, the memory a fraction of one boolean plane stack per segment).

Import reads the segments with highdicom (labels, codes) and places every frame on the series
grid through :class:`~RTSSBridgeLib.geometry.ImageGeometry`: the frame's ImagePositionPatient
gives its slice (by plane position, like RTSS contours) and its row/column offset, which must
be whole voxels; frames on another orientation or spacing are refused (no silent resampling),
frames off the series are reported. BINARY, FRACTIONAL (thresholded at half the maximum,
reported) and LABELMAP segmentations are read. Segments map to template labels by their codes,
then by their labels through the name rules.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pydicom

from . import __version__
from .errors import InputError
from .fileio import atomic_path
from .labels import Code, LabelSet
from .problems import Severity
from .roi import RoiMask, RoiProblemCode, problem
from .rtss_export import ExportOptions, read_header
from .rtss_import import PLANE_TOLERANCE_MM
from .samples.dicom_writer import save_dataset
from .structures import ReferenceGrid, Roi, RoiSet
from .terminology import SegmentCodes, codes_for, label_for_codes
from .uids import new_uid

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
#: Orientation cosines and pixel spacings of SEG frames must equal the series' within this.
ORIENTATION_TOLERANCE = 1e-4
#: A frame's row/column offset on the series grid must be a whole number of voxels within this.
OFFSET_TOLERANCE_VOXELS = 1e-3

ProgressCallback = Callable[[int, int], None]


def _hd() -> Any:
    try:
        import highdicom
    except ImportError as exc:  # a missing optional-at-import dependency: say what to install
        raise InputError("DICOM SEG needs the Python package highdicom (pip install highdicom)",
                         field="highdicom") from exc
    if str(highdicom.__version__).startswith(("0.1", "0.20", "0.21", "0.22")) and "float_" not in np.__dict__ \
            and int(np.__version__.split(".")[0]) >= 2:
        # highdicom 0.22, the last release for Python 3.9 (Slicer 5.8), still names np.float_, which
        # NumPy 2 removed; Slicer 5.8 ships NumPy 1.26, but a Python 3.9 with NumPy 2 needs the alias.
        np.float_ = np.float64  # type: ignore[attr-defined]
    return highdicom


def srgb_to_dicom_lab(rgb: Sequence[int]) -> List[int]:
    """sRGB 0..255 -> DICOM CIELab (PS3.3 C.10.7.1.1: L* 0..100, a*, b* -128..127 scaled to 0..65535)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124564, 0.3575761, 0.1804375],
                    [0.2126729, 0.7151522, 0.0721750],
                    [0.0193339, 0.1191920, 0.9503041]]) @ linear
    white = np.array([0.95047, 1.0, 1.08883])
    t = xyz / white
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = (116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2]))
    return [int(np.rint(lab[0] * 65535 / 100)), int(np.rint((lab[1] + 128) * 65535 / 255)),
            int(np.rint((lab[2] + 128) * 65535 / 255))]


def dicom_lab_to_srgb(lab: Sequence[int]) -> Tuple[int, int, int]:
    """The inverse of :func:`srgb_to_dicom_lab` (rounded, clipped to 0..255)."""
    L = float(lab[0]) * 100 / 65535
    a = float(lab[1]) * 255 / 65535 - 128
    b = float(lab[2]) * 255 / 65535 - 128
    fy = (L + 16) / 116
    f = np.array([fy + a / 500, fy, fy - b / 200])
    t = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * np.array([0.95047, 1.0, 1.08883])
    linear = np.array([[3.2404542, -1.5371385, -0.4985314],
                       [-0.9692660, 1.8760108, 0.0415560],
                       [0.0556434, -0.2040259, 1.0572252]]) @ t
    linear = np.clip(linear, 0, 1)
    c = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    out = np.clip(np.round(c * 255), 0, 255).astype(int)
    return (int(out[0]), int(out[1]), int(out[2]))


def _concept(hd: Any, code: Code) -> Any:
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def _content_label(text: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in text.upper()).strip("_")
    return (cleaned or "MMANNO")[:16]


def export_seg(rois: Sequence[Roi], grid: ReferenceGrid, out_path: str | os.PathLike[str], *,
               options: Optional[ExportOptions] = None, source_kind: str = "MASKS", source_path: str = "",
               progress: Optional[ProgressCallback] = None) -> RoiSet:
    """Write the mask ROIs as a BINARY DICOM Segmentation referencing every slice of ``grid``.

    Raises :class:`InputError` when no ROI has voxels, a mask is not on the grid, or the series'
    headers cannot be read.
    """
    hd = _hd()
    opts = options or ExportOptions()
    out = os.fspath(out_path)
    shape = grid.geometry.array_shape
    result = RoiSet(source_kind=source_kind, source_path=source_path, geometry=grid.geometry, rois=list(rois),
                    reference=grid)
    kept: List[Roi] = []
    for roi in rois:
        if roi.mask is None:
            roi.add(RoiProblemCode.POINT_ROI, Severity.WARNING, "a point ROI has no voxels and is not written to SEG")
            continue
        if roi.mask.shape != shape:
            raise InputError(f"ROI {roi.name!r}: mask shape {list(roi.mask.shape)} is not the series grid "
                             f"[k, j, i] {list(shape)}", field="mask")
        if roi.mask.is_empty():
            roi.add(RoiProblemCode.EMPTY_MASK, Severity.WARNING,
                    "the mask is empty: a SEG segment needs voxels, so it is not written")
            continue
        kept.append(roi)
    if not kept:
        raise InputError("no ROI has voxels: there is nothing to write as a Segmentation", field="rois")
    if not grid.files:
        raise InputError("the series' files are needed to reference them from the Segmentation", field="series")
    headers = [read_header(path) for path in dict.fromkeys(grid.files)]
    if len(headers) != grid.n_slices:
        raise InputError("multi-frame source images are not supported for SEG export; use RTSS or NIfTI",
                         field="series")
    pixels: np.ndarray
    overlap = np.zeros(shape, dtype=np.uint16)
    overlapping = False
    for number, roi in enumerate(kept, start=1):
        assert roi.mask is not None
        view = overlap[roi.mask.box()]
        if np.any(view[roi.mask.data] != 0):
            overlapping = True
            break
        view[roi.mask.data] = number
    if overlapping:
        pixels = np.zeros((*shape, len(kept)), dtype=bool)
        for number, roi in enumerate(kept):
            assert roi.mask is not None
            index = (*roi.mask.box(), number)
            pixels[index] = roi.mask.data
    else:
        pixels = overlap if len(kept) > 255 else overlap.astype(np.uint8)
    descriptions = []
    for number, roi in enumerate(kept, start=1):
        codes = codes_for(roi.label)
        algorithm = roi.generation_algorithm or opts.default_generation_algorithm or "MANUAL"
        kwargs: Dict[str, Any] = {}
        if algorithm != "MANUAL":
            kwargs["algorithm_identification"] = hd.AlgorithmIdentificationSequence(
                name="unspecified", version="unknown",
                family=hd.sr.CodedConcept(value="123109", scheme_designator="DCM", meaning="Manual Processing"))
        if codes.anatomic_region is not None:
            kwargs["anatomic_regions"] = [_concept(hd, codes.anatomic_region)]
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=roi.name[:64],
            segmented_property_category=_concept(hd, codes.category),
            segmented_property_type=_concept(hd, codes.type),
            algorithm_type=getattr(hd.seg.SegmentAlgorithmTypeValues, algorithm), **kwargs)
        if codes.type_modifier is not None:
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                _concept(hd, codes.type_modifier)]
        description.RecommendedDisplayCIELabValue = srgb_to_dicom_lab(roi.display_color())
        descriptions.append(description)
        if progress is not None:
            progress(number, len(kept) + 1)
    seg = hd.seg.Segmentation(
        source_images=headers, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=opts.series_instance_uid or new_uid(),
        series_number=int(opts.series_number), sop_instance_uid=opts.sop_instance_uid or new_uid(),
        instance_number=int(opts.instance_number), manufacturer=opts.manufacturer,
        manufacturer_model_name=opts.model_name, software_versions=f"mmanno {__version__}",
        device_serial_number="0", content_label=_content_label(opts.structure_set_label),
        content_description=opts.series_description[:64], series_description=opts.series_description[:64],
        omit_empty_frames=True)
    # Patient and study text copied from the images may be Chinese: write UTF-8, as the images do
    # (highdicom 0.22, the Python 3.9 release, leaves the default character set and loses them).
    seg.SpecificCharacterSet = "ISO_IR 192"
    with atomic_path(out) as tmp:
        save_dataset(seg, tmp)
    if progress is not None:
        progress(len(kept) + 1, len(kept) + 1)
    result.written = {"sop_instance_uid": str(seg.SOPInstanceUID), "series_instance_uid": str(seg.SeriesInstanceUID),
                   "study_instance_uid": grid.study_instance_uid, "n_frames": int(seg.NumberOfFrames),
                   "file": out, "overlapping_segments": overlapping}
    return result


# --------------------------------------------------------------------------- import
def _first_code(item: Any, keyword: str) -> Optional[Code]:
    seq = item.get(keyword) if hasattr(item, "get") else None
    if not seq:
        return None
    code = seq[0]
    try:
        return Code(str(code.CodingSchemeDesignator), str(code.CodeValue), str(code.CodeMeaning))
    except (AttributeError, InputError):
        return None


def _frame_attribute(ds: Any, frame: int, sequence: str, keyword: str) -> Any:
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    for groups in ([per_frame[frame]] if per_frame is not None and len(per_frame) > frame else []) + \
            list(ds.get("SharedFunctionalGroupsSequence") or []):
        items = groups.get(sequence)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return None


def import_seg(seg_path: str | os.PathLike[str], grid: ReferenceGrid, label_set: Optional[LabelSet] = None,
               progress: Optional[ProgressCallback] = None) -> RoiSet:
    """Read a DICOM SEG onto ``grid`` (see the module docstring)."""
    hd = _hd()
    path = os.fspath(seg_path)
    if not os.path.isfile(path):
        raise InputError("no such file", file=path)
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise InputError(f"not a readable DICOM file ({type(exc).__name__}: {exc})", file=path) from exc
    if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS_UID:
        raise InputError(f"is not a DICOM Segmentation (SOP Class UID {ds.get('SOPClassUID', 'missing')}); "
                         f"expected {SEG_SOP_CLASS_UID}", file=path, field="SOPClassUID")
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:  # highdicom validates the dataset and raises several types
        raise InputError(f"not a valid Segmentation ({type(exc).__name__}: {exc})", file=path) from exc
    seg_type = str(ds.get("SegmentationType", "BINARY")).upper()
    geometry = grid.geometry
    problems = []
    frame_of_reference = str(ds.get("FrameOfReferenceUID", ""))
    if grid.frame_of_reference_uid and frame_of_reference and frame_of_reference != grid.frame_of_reference_uid:
        problems.append(problem(RoiProblemCode.FRAME_OF_REFERENCE_MISMATCH, Severity.WARNING,
                                f"the Segmentation's Frame of Reference {frame_of_reference} differs from the "
                                f"series' {grid.frame_of_reference_uid}", files=[path]))
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:
        raise InputError(f"pixel data cannot be decoded ({type(exc).__name__}: {exc})", file=path,
                         field="PixelData") from exc
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.shape[0] != n_frames:
        raise InputError(f"holds {pixels.shape[0]} frames but NumberOfFrames is {n_frames}", file=path,
                         field="NumberOfFrames")
    threshold = 1
    if seg_type == "FRACTIONAL":
        maximum = int(ds.get("MaximumFractionalValue", 255) or 255)
        threshold = max(1, (maximum + 1) // 2)
        problems.append(problem(RoiProblemCode.FRACTIONAL_SEGMENT, Severity.INFO,
                                f"FRACTIONAL segmentation: voxels with a value of at least {threshold} of "
                                f"{maximum} are inside", files=[path]))
    spacing = np.asarray(geometry.spacing_mm)
    row_col = np.asarray(geometry.direction_matrix[:, :2])
    placements: Dict[int, List[Tuple[int, int, int, np.ndarray]]] = {}
    outside = 0
    frame_k = grid.frame_ijk[:, 2]
    for f in range(n_frames):
        iop = _frame_attribute(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient")
        ps = _frame_attribute(ds, f, "PixelMeasuresSequence", "PixelSpacing")
        ipp = _frame_attribute(ds, f, "PlanePositionSequence", "ImagePositionPatient")
        if iop is None or ps is None or ipp is None:
            raise InputError(f"frame {f + 1} has no plane orientation, pixel spacing or position", file=path,
                             field="PerFrameFunctionalGroupsSequence")
        cosines = np.asarray([float(v) for v in iop]).reshape(2, 3).T
        if (np.max(np.abs(cosines - row_col)) > ORIENTATION_TOLERANCE
                or abs(float(ps[1]) - spacing[0]) > ORIENTATION_TOLERANCE * max(1.0, spacing[0])
                or abs(float(ps[0]) - spacing[1]) > ORIENTATION_TOLERANCE * max(1.0, spacing[1])):
            raise InputError(f"frame {f + 1} lies on another orientation or pixel spacing than the series; "
                             "resample the segmentation onto the series first", file=path,
                             field="PlaneOrientationSequence")
        ijk = geometry.lps_to_ijk(np.asarray([float(v) for v in ipp]))
        k = int(np.argmin(np.abs(frame_k - ijk[2])))
        if abs(frame_k[k] - ijk[2]) * spacing[2] > PLANE_TOLERANCE_MM:
            outside += 1
            continue
        offset = ijk[:2] - grid.frame_ijk[k, :2]
        if np.max(np.abs(offset - np.round(offset))) > OFFSET_TOLERANCE_VOXELS:
            raise InputError(f"frame {f + 1} is shifted by a fraction of a voxel from the series grid "
                             f"({offset.tolist()}); resample the segmentation onto the series first", file=path,
                             field="ImagePositionPatient")
        i0, j0 = int(np.rint(offset[0])), int(np.rint(offset[1]))
        frame = pixels[f]
        if seg_type == "LABELMAP":
            for value in (int(v) for v in np.unique(frame) if v != 0):
                placements.setdefault(value, []).append((k, j0, i0, frame == value))
        else:
            number = _frame_attribute(ds, f, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
            if number is None:
                raise InputError(f"frame {f + 1} names no segment (SegmentIdentificationSequence)", file=path,
                                 field="SegmentIdentificationSequence")
            placements.setdefault(int(number), []).append((k, j0, i0, frame >= threshold))
        if progress is not None:
            progress(f + 1, n_frames)
    if outside:
        problems.append(problem(RoiProblemCode.SEGMENT_FRAME_OUTSIDE_SERIES, Severity.WARNING,
                                f"{outside} of {n_frames} frames lie on planes where the series has no image: "
                                "clipped", count=outside, files=[path]))
    result = RoiSet(source_kind="SEG", source_path=path, geometry=geometry, rois=[], problems=problems,
                    reference=grid, label_set=label_set,
                    info={"sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
                          "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
                          "segmentation_type": seg_type, "n_frames": n_frames})
    for item in seg.SegmentSequence:  # highdicom's SegmentDescription items
        number = int(item.SegmentNumber)
        codes = None
        category = _first_code(item, "SegmentedPropertyCategoryCodeSequence")
        kind = _first_code(item, "SegmentedPropertyTypeCodeSequence")
        if category is not None and kind is not None:
            type_items = item.get("SegmentedPropertyTypeCodeSequence")
            modifier = _first_code(type_items[0], "SegmentedPropertyTypeModifierCodeSequence")
            region = _first_code(item, "AnatomicRegionSequence")
            codes = SegmentCodes(category, kind, modifier, region)
        name = str(item.get("SegmentLabel", "") or f"Segment {number}")
        color = None
        if "RecommendedDisplayCIELabValue" in item:
            color = dicom_lab_to_srgb([int(v) for v in item.RecommendedDisplayCIELabValue])
        roi = Roi(number=number, name=name, color=color,
                  generation_algorithm=str(item.get("SegmentAlgorithmType", "")),
                  mask=_mask_from_frames(placements.get(number, []), geometry.array_shape))
        if codes is not None:
            roi.codes = codes.to_dict()
            roi.label = label_for_codes(label_set, codes)
        if roi.mask is not None and roi.mask.is_empty():
            roi.add(RoiProblemCode.EMPTY_MASK, Severity.WARNING, "the segment has no voxel on the series")
        result.rois.append(roi)
    if not result.rois:
        raise InputError("holds no segment (SegmentSequence is empty)", file=path, field="SegmentSequence")
    result.map_to_template(label_set)
    return result


def _mask_from_frames(frames: Sequence[Tuple[int, int, int, np.ndarray]], shape: Tuple[int, int, int]) -> RoiMask:
    nk, nj, ni = shape
    pieces = []
    for k, j0, i0, frame in frames:
        rows, cols = frame.shape
        ja, jb = max(j0, 0), min(j0 + rows, nj)
        ia, ib = max(i0, 0), min(i0 + cols, ni)
        if ja >= jb or ia >= ib or not 0 <= k < nk:
            continue
        part = frame[ja - j0: jb - j0, ia - i0: ib - i0]
        if part.any():
            pieces.append((k, ja, ia, part))
    if not pieces:
        return RoiMask.empty(shape)
    k0 = min(p[0] for p in pieces)
    k1 = max(p[0] for p in pieces) + 1
    j0 = min(p[1] for p in pieces)
    j1 = max(p[1] + p[3].shape[0] for p in pieces)
    i0 = min(p[2] for p in pieces)
    i1 = max(p[2] + p[3].shape[1] for p in pieces)
    box = np.zeros((k1 - k0, j1 - j0, i1 - i0), dtype=bool)
    for k, ja, ia, part in pieces:
        box[k - k0, ja - j0: ja - j0 + part.shape[0], ia - i0: ia - i0 + part.shape[1]] |= part
    return RoiMask.from_box(shape, (k0, j0, i0), box)
