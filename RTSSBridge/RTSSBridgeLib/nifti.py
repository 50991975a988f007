"""NIfTI read/write with the exact affine (R-5.7, Appendix B/C; SPEC "Data structures").

NIfTI maps voxel indices to RAS; the conversion to the project's LPS geometry happens only in
:mod:`RTSSBridgeLib.geometry`. The data block is ``[i, j, k]``; volumes in this project are
``[k, j, i]``, so reading and writing transpose (a view, no copy, for NIfTI's Fortran order).

Precision: NIfTI-1 stores the sform rows and the qform as float32. Writing a geometry to
NIfTI-1 therefore rounds it to float32 (at 500 mm from the origin that is < 3e-5 mm), and
from then on NIfTI -> geometry -> NIfTI is bit-identical. NIfTI-2 (``nifti2=True``) stores
float64 and round-trips a geometry exactly; SimpleITK 2.5 and many tools cannot read it, so
NIfTI-1 is the default.

Which transform is used on read (the NIfTI-1 standard's method 3, then 2, then 1): the sform
when ``sform_code > 0``, else the qform when ``qform_code > 0``, else ``pixdim`` alone (reported).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import nibabel as nib
import numpy as np

from .errors import InputError
from .fileio import atomic_path
from .geometry import ImageGeometry
from .problems import Problem, ProblemCode, Severity

#: qform and sform further apart than this (mm at any corner) are reported.
QFORM_SFORM_TOLERANCE_MM = 1e-3

_XFORM_NAMES = {0: "unknown", 1: "scanner", 2: "aligned", 3: "talairach", 4: "mni", 5: "template"}
NIFTI_INTENT_LABEL = 1002


@dataclass
class NiftiImage:
    """A NIfTI image as a volume ``[k, j, i]`` with its geometry and what the header said."""

    path: str
    voxels: np.ndarray
    geometry: ImageGeometry
    transform_source: str  # "sform", "qform" or "pixdim"
    problems: List[Problem] = field(default_factory=list)
    header: Dict[str, Any] = field(default_factory=dict)

    def summary(self) -> Dict[str, Any]:
        g = self.geometry
        return {
            "series_uid": "",
            "part": 1,
            "n_parts": 1,
            "modality": "",
            "series_description": os.path.basename(self.path),
            "shape": list(g.shape),
            "spacing_mm": list(g.spacing_mm),
            "origin_lps": list(g.origin_lps),
            "direction": [list(r) for r in g.direction],
            "axis_codes": g.axis_codes(),
            "frame_of_reference_uid": "",
            "study_uid": "",
            "n_files": 1,
            "n_frames": g.shape[2],
            "dtype": str(self.voxels.dtype),
            "transform_source": self.transform_source,
            "problems": [p.to_dict() for p in self.problems],
        }


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    name = os.fspath(path).lower()
    return name.endswith((".nii", ".nii.gz"))


def _geometry_of(img: Any, path: str) -> tuple[ImageGeometry, str, List[Problem]]:
    header = img.header
    shape = tuple(int(s) for s in img.shape[:3]) + (1,) * max(0, 3 - len(img.shape))
    problems: List[Problem] = []
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    if sform is not None and int(sform_code) > 0:
        affine, source = np.asarray(sform, dtype=np.float64), "sform"
    elif qform is not None and int(qform_code) > 0:
        affine, source = np.asarray(qform, dtype=np.float64), "qform"
    else:
        zooms = [float(z) if float(z) > 0 else 1.0 for z in header.get_zooms()[:3]]
        zooms += [1.0] * (3 - len(zooms))
        affine, source = np.diag([*zooms, 1.0]), "pixdim"
        problems.append(Problem(ProblemCode.NIFTI_NO_SPATIAL_TRANSFORM, Severity.WARNING,
                                "sform_code and qform_code are 0: no patient orientation; "
                                "pixdim spacing with identity RAS orientation and zero origin used", (path,)))
    try:
        geometry = ImageGeometry.from_ijk_to_ras_matrix(shape, affine)
    except InputError as exc:
        raise InputError(f"{source} is not a rotation with positive spacing ({exc.rule})",
                         file=path, field=source) from exc
    if source == "sform" and qform is not None and int(qform_code) > 0:
        try:
            other = ImageGeometry.from_ijk_to_ras_matrix(shape, np.asarray(qform, dtype=np.float64))
            distance = geometry.max_corner_distance_mm(other)
        except InputError:
            distance = float("inf")
        if distance > QFORM_SFORM_TOLERANCE_MM:
            problems.append(Problem(ProblemCode.NIFTI_QFORM_SFORM_MISMATCH, Severity.WARNING,
                                    f"qform and sform disagree by up to {distance:.4g} mm; the sform is used "
                                    "(ITK-based tools may use the qform)", (path,)))
    return geometry, source, problems


def read_nifti_geometry(path: str | os.PathLike[str]) -> ImageGeometry:
    """Geometry of a NIfTI file from its header only."""
    p = os.fspath(path)
    return _geometry_of(_load(p), p)[0]


def _load(path: str) -> Any:
    if not os.path.isfile(path):
        raise InputError("no such file", file=path)
    try:
        return nib.load(path)
    except Exception as exc:  # nibabel raises several types for corrupt headers
        raise InputError(f"not a readable NIfTI file ({type(exc).__name__}: {exc})", file=path) from exc


def read_nifti(path: str | os.PathLike[str]) -> NiftiImage:
    """Read a NIfTI-1/2 file (``.nii`` or ``.nii.gz``) as a ``[k, j, i]`` volume.

    Scaling (``scl_slope``/``scl_inter``) is applied only when the header sets it, so label
    maps keep their integer type. 2-D images get k = 1; a 4-D image with one volume is
    accepted; more volumes are refused (split them first).
    """
    p = os.fspath(path)
    img = _load(p)
    if len(img.shape) > 3 and int(np.prod(img.shape[3:])) != 1:
        raise InputError(f"has {int(np.prod(img.shape[3:]))} volumes (shape {list(img.shape)}); "
                         "only single 3-D volumes are read", file=p, field="dim")
    geometry, source, problems = _geometry_of(img, p)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise InputError(f"voxel data cannot be read ({type(exc).__name__}: {exc})", file=p) from exc
    data = data.reshape(geometry.shape, order="F") if data.ndim != 3 else data
    voxels = np.ascontiguousarray(data.transpose(2, 1, 0))
    hdr = img.header
    header = {
        "format": "nifti2" if isinstance(img, nib.Nifti2Image) else "nifti1",
        "sform_code": _XFORM_NAMES.get(int(hdr["sform_code"]), str(int(hdr["sform_code"]))),
        "qform_code": _XFORM_NAMES.get(int(hdr["qform_code"]), str(int(hdr["qform_code"]))),
        "intent_code": int(hdr["intent_code"]),
        "descrip": np.asarray(hdr["descrip"]).item().split(b"\0", 1)[0].decode("latin-1", "replace"),
    }
    return NiftiImage(path=p, voxels=voxels, geometry=geometry, transform_source=source,
                      problems=problems, header=header)


def write_nifti(
    path: str | os.PathLike[str],
    voxels: np.ndarray,
    geometry: ImageGeometry,
    *,
    label_map: bool = False,
    description: str = "",
    nifti2: bool = False,
) -> str:
    """Write a ``[k, j, i]`` volume with ``geometry`` to ``path`` atomically.

    The same affine goes into the sform and the qform (both code 1, scanner), units are mm.
    ``label_map`` sets the intent to NIFTI_INTENT_LABEL. Returns the path written.
    """
    p = os.fspath(path)
    if not is_nifti_path(p):
        raise InputError("file name must end with .nii or .nii.gz", file=p)
    arr = np.asarray(voxels)
    if arr.ndim not in (3, 4) or arr.shape[:3] != geometry.array_shape:
        raise InputError(f"voxel array shape {list(arr.shape)} does not match the geometry "
                         f"[k, j, i] = {list(geometry.array_shape)}", file=p, field="voxels")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    data = arr.transpose(2, 1, 0) if arr.ndim == 3 else arr.transpose(2, 1, 0, 3)
    affine = geometry.ijk_to_ras_matrix()
    klass = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    img = klass(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    if label_map:
        img.header.set_intent(NIFTI_INTENT_LABEL)
    if description:
        img.header["descrip"] = description.encode("ascii", "replace")[:79]
    with atomic_path(p) as tmp:
        nib.save(img, os.fspath(tmp))
    return p


def nifti_affine(geometry: ImageGeometry) -> np.ndarray:
    """The NIfTI affine (IJK -> RAS) of a geometry."""
    return geometry.ijk_to_ras_matrix()


def describe_header(path: str | os.PathLike[str]) -> Optional[Dict[str, Any]]:
    """Header summary without reading voxels (None when not NIfTI)."""
    p = os.fspath(path)
    if not is_nifti_path(p):
        return None
    img = _load(p)
    geometry, source, problems = _geometry_of(img, p)
    return {"geometry": geometry.to_dict(), "transform_source": source, "problems": [x.to_dict() for x in problems]}
