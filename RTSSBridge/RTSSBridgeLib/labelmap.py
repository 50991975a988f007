"""NIfTI labelmaps and per-ROI mask files <-> ROI sets (R-5.7, R-6.11, SPEC Appendix B/C).

* :func:`write_labelmap` - one NIfTI holding every mask ROI with its label value (the template's
  stable value when there is a template, see :mod:`RTSSBridgeLib.structures`), exact affine of
  the series, intent NIFTI_INTENT_LABEL.
* :func:`write_split` - one binary NIfTI per ROI, named after the ROI (characters that file
  systems forbid replaced, names made unique), so overlapping ROIs stay exact.
* :func:`read_labelmap` - a labelmap back into ROIs: each value becomes an ROI named after the
  template label with that value.
* :func:`read_masks` - per-ROI mask files into ROIs named after the files.

Files are read with :func:`~RTSSBridgeLib.nifti.read_nifti` and must lie on the reference grid
(:func:`~RTSSBridgeLib.structures.check_same_grid`): masks are never resampled silently.
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from .errors import InputError
from .geometry import ImageGeometry
from .labels import LabelSet
from .nifti import is_nifti_path, mapped_nifti1, read_nifti, write_nifti
from .problems import Severity
from .roi import RoiMask, RoiProblemCode, problem
from .structures import Roi, RoiSet, check_same_grid

#: Characters that Windows, macOS or Linux refuse (or treat specially) in a file name.
_FORBIDDEN = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]')
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)), *(f"LPT{n}" for n in range(1, 10))}


def safe_file_name(name: str, used: Set[str]) -> str:
    """A file name stem for ROI ``name``: forbidden characters become ``_``, no leading dot or
    space, not a reserved device name, at most 120 characters, unique (case-insensitively) among
    ``used`` (``-2``, ``-3`` ... appended); ``used`` is updated."""
    stem = unicodedata.normalize("NFC", str(name))
    stem = _FORBIDDEN.sub("_", stem).strip().strip(".")
    if not stem or stem.upper() in _RESERVED:
        stem = f"ROI_{stem}" if stem else "ROI"
    stem = stem[:120]
    candidate, n = stem, 1
    while candidate.casefold() in used:
        n += 1
        candidate = f"{stem}-{n}"
    used.add(candidate.casefold())
    return candidate


def nifti_stem(path: str) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    base = os.path.basename(path)
    for ext in (".nii.gz", ".nii"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return os.path.splitext(base)[0]


def write_labelmap(roi_set: RoiSet, path: str, description: str = "mmanno labelmap") -> str:
    """Write the labelmap of ``roi_set`` (values assigned if needed) to ``path`` atomically."""
    if not is_nifti_path(path):
        raise InputError("the labelmap file name must end with .nii or .nii.gz", file=path, field="--out")
    if path.lower().endswith(".nii"):  # painted straight into the file's pages (see mapped_nifti1)
        with mapped_nifti1(path, roi_set.geometry, roi_set.labelmap_dtype(), label_map=True,
                           description=description) as target:
            if target is not None:
                roi_set.labelmap(out=target)
        if target is not None:
            return path
    labels = roi_set.labelmap()
    return write_nifti(path, labels, roi_set.geometry, label_map=True, description=description)


def write_split(roi_set: RoiSet, folder: str, compressed: bool = True) -> List[str]:
    """One binary (uint8 0/1) NIfTI per mask ROI in ``folder``; sets each ROI's ``file``."""
    os.makedirs(folder, exist_ok=True)
    used: Set[str] = set()
    written = []
    for roi in roi_set.rois:
        if roi.mask is None:
            continue
        stem = safe_file_name(roi.name, used)
        if stem != roi.name:
            roi.add(RoiProblemCode.RENAMED_FILE, Severity.INFO,
                    f"written as {stem!r}: the ROI name holds characters file names cannot, or repeats another's")
        path = os.path.join(folder, stem + (".nii.gz" if compressed else ".nii"))
        write_nifti(path, roi.mask.full().astype(np.uint8), roi_set.geometry, label_map=True,
                    description=f"mmanno ROI {roi.number}"[:79])
        roi.file = path
        written.append(path)
    return written


def _integer_labels(voxels: np.ndarray, path: str) -> np.ndarray:
    arr = np.asarray(voxels)
    if arr.ndim != 3:
        raise InputError(f"has {arr.ndim} dimensions; a labelmap is one 3-D volume", file=path, field="dim")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise InputError("holds non-integer values; a labelmap holds integer label values", file=path,
                             field="voxels")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind not in "iu":
        raise InputError(f"has voxel type {arr.dtype}; a labelmap holds integers", file=path, field="datatype")
    if arr.dtype.kind == "u" and arr.dtype.itemsize <= 2:
        return arr  # 0..65535 by its type: no pass over the volume needed
    if arr.size and int(arr.min()) < 0:
        raise InputError(f"holds the negative value {int(arr.min())}; label values are 0 (background) to 65535",
                         file=path, field="voxels")
    if arr.size and int(arr.max()) > 65535:
        raise InputError(f"holds the value {int(arr.max())}; label values are at most 65535", file=path,
                         field="voxels")
    return arr


def _mask_of(labels: np.ndarray, path: str) -> Tuple[RoiMask, List[int]]:
    """The ROI of a per-ROI mask volume (0 and one other value) and that value (none when empty).

    Unsigned bytes (what mask files hold) take one pass over the volume - the largest value of
    each slice, which gives the slices used, the value and the empty case at once - then one over
    the slab of used slices for the in-plane box; only the box is compared and copied. The volume
    is usually the file's memory map, so this pass is also the file read. Reading the 13 masks of
    the RTSS benchmark (512 x 512 x 177 each) took 0.15 s so, 0.23 s with a maximum, a count of the
    non-zero voxels and a bounding box each over the whole volume.
    """
    if labels.dtype != np.uint8 or labels.ndim != 3 or not labels.size:
        return _mask_of_any(labels, path)
    nk = labels.shape[0]
    per_slice = labels.reshape(nk, -1).max(axis=1)
    used = np.flatnonzero(per_slice)
    if not len(used):
        return RoiMask.empty(labels.shape), []
    top = int(per_slice.max())
    k0, k1 = int(used[0]), int(used[-1]) + 1
    plane = labels[k0:k1].max(axis=0)
    rows = np.flatnonzero(plane.max(axis=1))
    cols = np.flatnonzero(plane.max(axis=0))
    box = labels[k0:k1, int(rows[0]):int(rows[-1]) + 1, int(cols[0]):int(cols[-1]) + 1]
    if top == 1:
        inside = np.ascontiguousarray(box).view(np.bool_)  # 0/1 bytes are booleans: one copy of the box
    else:
        inside = box != 0
        if int(np.count_nonzero(box == top)) != int(np.count_nonzero(inside)):
            _several_values(box[inside], path)
    return RoiMask(labels.shape, (k0, int(rows[0]), int(cols[0])), inside), [top]


def _mask_of_any(labels: np.ndarray, path: str) -> Tuple[RoiMask, List[int]]:
    """:func:`_mask_of` for any integer type."""
    top = int(labels.max()) if labels.size else 0
    inside = labels != 0
    n_inside = int(np.count_nonzero(inside))
    if n_inside and int(np.count_nonzero(labels == top)) != n_inside:
        _several_values(labels[inside], path)
    return RoiMask.from_full(inside), ([top] if n_inside else [])


def _several_values(inside_values: np.ndarray, path: str) -> None:
    values = [int(v) for v in np.unique(inside_values)]
    raise InputError(f"holds several label values {values[:6]}; a per-ROI mask holds 0 and one value "
                     "(give a labelmap with --template instead)", file=path, field="voxels")


def read_labelmap(path: str, label_set: Optional[LabelSet] = None,
                  reference: Optional[ImageGeometry] = None) -> RoiSet:
    """ROIs of a labelmap: value ``v`` becomes the template label with value ``v`` (named after it),
    or an ROI named ``Label v`` (reported when a template is given and does not know ``v``)."""
    image = read_nifti(path)
    if reference is not None:
        check_same_grid(image.geometry, reference, "the labelmap", path)
    labels = _integer_labels(image.voxels, path)
    geometry = reference or image.geometry
    result = RoiSet(source_kind="NIFTI", source_path=path, geometry=geometry, rois=[], label_set=label_set,
                    info={"transform_source": image.transform_source})
    for p in image.problems:
        result.problems.append(problem(RoiProblemCode.NIFTI_HEADER, p.severity, f"{p.code.value}: {p.message}",
                                       files=[path]))
    from scipy import ndimage  # here: importing scipy.ndimage costs 0.1-0.3 s the other commands do not need

    boxes = ndimage.find_objects(labels.astype(np.int64) if labels.dtype.itemsize > 4 else labels)
    shape = geometry.array_shape
    for index, box in enumerate(boxes):
        if box is None:
            continue
        value = index + 1
        label = label_set.by_value(value) if label_set is not None else None
        name = label.name if label is not None else f"Label {value}"
        roi = Roi(number=value, name=name, label=label, label_value=value,
                  mask=RoiMask.from_box(shape, [b.start for b in box], labels[box] == value))
        if label_set is not None and label is None:
            roi.add(RoiProblemCode.VALUE_NOT_IN_TEMPLATE, Severity.WARNING,
                    f"label value {value} is not a value of template {label_set.template_id} "
                    f"{label_set.version}; exported as {name!r} without template codes")
        result.rois.append(roi)
    if not result.rois:
        raise InputError("holds only background (0): there is no ROI to export", file=path, field="voxels")
    return result


def read_masks(paths: Sequence[str], reference: Optional[ImageGeometry] = None,
               label_set: Optional[LabelSet] = None) -> RoiSet:
    """One ROI per mask file, named after the file (``Left lung.nii.gz`` -> ``Left lung``).

    A mask holds 0 and one other value (1, 255 ...). With a template, names are mapped to
    template labels by its name rules (and reported when they do not map).
    """
    if not paths:
        raise InputError("no mask file given", field="MASK")
    rois: List[Roi] = []
    geometry = reference
    seen: Dict[str, str] = {}
    for number, path in enumerate(paths, start=1):
        image = read_nifti(path)
        if geometry is None:
            geometry = image.geometry
        check_same_grid(image.geometry, geometry, "the mask", path)
        mask, values = _mask_of(_integer_labels(image.voxels, path), path)
        name = nifti_stem(path)
        if name.casefold() in seen:
            raise InputError(f"gives the ROI name {name!r} again (also {seen[name.casefold()]}); ROI names must be "
                             "unique", file=path)
        seen[name.casefold()] = path
        roi = Roi(number=number, name=name, mask=mask, file=path)
        for p in image.problems:
            roi.add(RoiProblemCode.NIFTI_HEADER, p.severity, f"{p.code.value}: {p.message}")
        if not values:
            roi.add(RoiProblemCode.EMPTY_MASK, Severity.WARNING, "the mask file holds only background (0)")
        rois.append(roi)
    assert geometry is not None
    result = RoiSet(source_kind="MASKS", source_path=", ".join(paths), geometry=geometry, rois=rois)
    if label_set is not None:
        result.map_to_template(label_set)
    return result
