"""End-to-end scenarios of RTSSBridge: files -> core readers -> scene adapters -> MRML nodes.

Each ``scenario_<name>(scene, workdir)`` writes its own input under ``workdir``, runs the core
and the adapters against ``scene`` (a ``vtkMRMLScene``) and raises ``AssertionError`` naming
what differs. The same functions run in two places: ``Testing/test_scenarios.py`` (pytest, a
real MRML scene from the slicer-core wheel) and ``RTSSBridgeTest.runTest`` inside the Slicer
application (its ``slicer.mrmlScene``), so the headless tests and the in-application self-test
cannot drift apart.

The expected values are derived here from the DICOM attributes and the NIfTI affine as written,
with the formulas of DICOM PS3.3 C.7.6.2 and NIfTI-1, never with :mod:`RTSSBridgeLib.geometry`,
so that a mistake shared by the reader and the adapter still fails.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import nibabel as nib
import numpy as np
import pydicom
import vtk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from ..dicom_series import read_volume, scan_dicom
from ..nifti import read_nifti
from ..problems import Severity
from ..uids import deterministic_uid
from .volumes import (
    ATTR_INSTANCE_UIDS,
    ATTR_SERIES_UID,
    array_from_volume_node,
    geometry_from_volume_node,
    volume_node_from_dicom,
    volume_node_from_nifti,
)

#: How closely a node's IJKToRAS must match the matrix derived from the file (mm per voxel step).
MATRIX_TOLERANCE = 1e-6

_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_LPS_TO_RAS_4 = np.diag([-1.0, -1.0, 1.0, 1.0])


# --------------------------------------------------------------------------- helpers
def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    if axis == "y":
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _ds(value: float, decimals: int) -> str:
    """A DICOM DS string (at most 16 characters) for ``value``."""
    text = f"{value:.{decimals}f}"
    if len(text) > 16:
        raise ValueError(f"DS value {text!r} longer than 16 characters")
    return text


def _save(ds: Dataset, path: Path) -> None:
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:  # pydicom 2.4 (Slicer 5.8)
        ds.is_little_endian = True
        ds.is_implicit_VR = False
        ds.save_as(str(path), write_like_original=False)


def _node_matrix(node: Any) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _assert_matrix(actual: np.ndarray, expected: np.ndarray, what: str, tol: float = MATRIX_TOLERANCE) -> None:
    deviation = float(np.max(np.abs(actual - expected)))
    if deviation > tol:
        raise AssertionError(f"{what}: largest element differs by {deviation:.3g} (> {tol:g})\n"
                             f"actual:\n{np.array2string(actual, precision=8)}\n"
                             f"expected:\n{np.array2string(expected, precision=8)}")


def _assert_voxels(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: array shape {actual.shape} != expected {expected.shape}")
    if not np.array_equal(actual.astype(np.float64), expected.astype(np.float64)):
        bad = np.argwhere(actual.astype(np.float64) != expected.astype(np.float64))
        first = tuple(int(v) for v in bad[0])
        raise AssertionError(f"{what}: {len(bad)} voxel(s) differ, first at [k, j, i] = {first}: "
                             f"{actual[first]} != {expected[first]}")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# --------------------------------------------------------------------------- DICOM writer
def write_oblique_ct_series(
    folder: Path,
    shape_ijk: Tuple[int, int, int] = (7, 5, 4),
    pixel_spacing: Tuple[float, float] = (0.8, 0.55),
    slice_spacing_mm: float = 2.5,
) -> Dict[str, Any]:
    """Write a small oblique, anisotropic CT series with pydicom and return what was written.

    The slices are written in reverse order of position with InstanceNumber counting the other
    way, so a reader that trusts file order or instance numbers fails. Voxel ``(i, j, k)`` holds
    ``10 i + 100 j + 1000 k - 1024`` HU (stored value + RescaleIntercept -1024), so a transposed
    or flipped axis changes values. Returns the expected HU volume ``[k, j, i]``, the expected
    IJK -> RAS matrix (from the DICOM attributes as written) and the UIDs in slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    n_i, n_j, n_k = shape_ijk
    rotation = _rotation("z", 20.0) @ _rotation("x", 15.0) @ _rotation("y", -8.0)
    iop = [_ds(v, 12) for v in (*rotation[:, 0], *rotation[:, 1])]
    row_dir = np.array([float(v) for v in iop[:3]])
    col_dir = np.array([float(v) for v in iop[3:]])
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-61.25, 37.5, -112.75])
    study_uid = deterministic_uid("scenario", "oblique-ct", "study")
    series_uid = deterministic_uid("scenario", "oblique-ct", "series")
    frame_uid = deterministic_uid("scenario", "oblique-ct", "frame")
    hu = np.empty((n_k, n_j, n_i), dtype=np.int16)
    ii, jj = np.meshgrid(np.arange(n_i), np.arange(n_j), indexing="xy")
    positions: List[List[str]] = []
    sop_uids: List[str] = []
    for k in range(n_k):
        hu[k] = (10 * ii + 100 * jj + 1000 * k - 1024).astype(np.int16)
        positions.append([_ds(v, 8) for v in origin + k * slice_spacing_mm * normal])
        sop_uids.append(deterministic_uid("scenario", "oblique-ct", "instance", k))
    for k in reversed(range(n_k)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(_CT_IMAGE_STORAGE)
        meta.MediaStorageSOPInstanceUID = UID(sop_uids[k])
        meta.TransferSyntaxUID = UID(_EXPLICIT_VR_LITTLE_ENDIAN)
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = _CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uids[k]
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = "Scenario^Phantom"
        ds.PatientID = "SCENARIO-0001"
        ds.Modality = "CT"
        ds.SeriesNumber = 3
        ds.SeriesDescription = "oblique anisotropic scenario"
        ds.InstanceNumber = n_k - k
        ds.ImageOrientationPatient = iop
        ds.ImagePositionPatient = positions[k]
        ds.PixelSpacing = [_ds(pixel_spacing[0], 4), _ds(pixel_spacing[1], 4)]
        ds.SliceThickness = _ds(slice_spacing_mm, 4)
        ds.Rows = n_j
        ds.Columns = n_i
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.PixelData = (hu[k].astype(np.int32) + 1024).astype("<i2").tobytes()
        _save(ds, folder / f"slice_{n_k - 1 - k:03d}.dcm")

    # Expected IJK -> LPS from the attributes as written: PixelSpacing is (row spacing = along j,
    # column spacing = along i); the k step is the distance between the first and last slice
    # along the normal divided by n - 1.
    first = np.array([float(v) for v in positions[0]])
    last = np.array([float(v) for v in positions[-1]])
    dz = float(np.dot(normal, last - first)) / (n_k - 1)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, 0] = row_dir * float(pixel_spacing[1])
    ijk_to_lps[:3, 1] = col_dir * float(pixel_spacing[0])
    ijk_to_lps[:3, 2] = normal * dz
    ijk_to_lps[:3, 3] = first
    return {
        "folder": folder,
        "hu": hu,
        "ijk_to_ras": _LPS_TO_RAS_4 @ ijk_to_lps,
        "series_uid": series_uid,
        "sop_uids_in_slice_order": sop_uids,
    }


# --------------------------------------------------------------------------- scenarios
def scenario_dicom_oblique_anisotropic_volume_node(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """DICOM (oblique, anisotropic, shuffled files) -> scan_dicom/read_volume -> volume node.

    The node's IJKToRAS equals the core geometry's ``ijk_to_ras_matrix()`` and the matrix derived
    from the DICOM attributes (both within 1e-6), its voxels equal the written HU values, and
    its attributes list the SOP Instance UIDs in slice order.
    """
    written = write_oblique_ct_series(Path(workdir) / "oblique_ct")
    scan = scan_dicom(str(written["folder"]))
    _check(len(scan.series) == 1, f"expected 1 series, scan found {len(scan.series)}: "
           f"{[s.series_uid for s in scan.series]} (problems: {[p.message for p in scan.problems]})")
    series = scan.series[0]
    errors = [p.message for p in series.problems if p.severity == Severity.ERROR]
    _check(not errors, f"the clean series was reported with errors: {errors}")
    volume = read_volume(series)
    _assert_voxels(volume.voxels, written["hu"], "core voxels vs written HU")
    _assert_matrix(series.geometry.ijk_to_ras_matrix(), written["ijk_to_ras"], "core geometry vs DICOM attributes")

    n_before = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    node = volume_node_from_dicom(scene, volume)
    _check(node.IsA("vtkMRMLScalarVolumeNode"), f"node class is {node.GetClassName()}")
    _check(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_before + 1,
           "volume_node_from_dicom did not add exactly one volume node to the scene")
    _check(node.GetImageData().GetDimensions() == tuple(series.geometry.shape),
           f"image dimensions {node.GetImageData().GetDimensions()} != geometry shape {series.geometry.shape}")
    _assert_matrix(_node_matrix(node), series.geometry.ijk_to_ras_matrix(), "node IJKToRAS vs core geometry")
    _assert_matrix(_node_matrix(node), written["ijk_to_ras"], "node IJKToRAS vs DICOM attributes")
    _assert_voxels(array_from_volume_node(node), written["hu"], "node voxels vs written HU")
    _check(geometry_from_volume_node(node).isclose(series.geometry, tol_mm=1e-6),
           "geometry_from_volume_node does not give back the series geometry")
    _check(node.GetAttribute(ATTR_SERIES_UID) == written["series_uid"],
           f"series UID attribute {node.GetAttribute(ATTR_SERIES_UID)!r} != {written['series_uid']!r}")
    uids = (node.GetAttribute(ATTR_INSTANCE_UIDS) or "").split()
    _check(uids == written["sop_uids_in_slice_order"],
           "DICOM.instanceUIDs is not the list of SOP Instance UIDs in slice (k) order")
    _check(node.GetDisplayNode() is not None, "the volume node has no display node")


def write_oblique_nifti(path: Path) -> Dict[str, Any]:
    """Write an oblique, anisotropic NIfTI-1 label image with nibabel alone; return data and affine."""
    shape_ijk = (6, 5, 4)
    data_ijk = np.zeros(shape_ijk, dtype=np.int16)
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape_ijk), indexing="ij")
    data_ijk[...] = (i + 2 * j + 3 * k) % 5  # labels 0..4, different along every axis
    affine = np.eye(4)
    affine[:3, :3] = (_rotation("y", 25.0) @ _rotation("z", -10.0)) * np.array([0.7, 1.1, 3.0])
    affine[:3, 3] = [12.5, -30.25, 41.0]
    img = nib.Nifti1Image(data_ijk, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    stored = np.asarray(nib.Nifti1Image.from_filename(str(path)).header.get_sform(), dtype=np.float64)  # float32
    return {"path": path, "data_kji": np.ascontiguousarray(data_ijk.transpose(2, 1, 0)), "affine": stored}


def scenario_nifti_volume_and_labelmap_nodes(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """NIfTI (oblique, anisotropic) -> read_nifti -> scalar volume node and labelmap node.

    Both nodes carry the file's sform as IJKToRAS (within 1e-6) and the voxel values in the
    right order; the labelmap is a ``vtkMRMLLabelMapVolumeNode``.
    """
    written = write_oblique_nifti(Path(workdir) / "nifti" / "labels.nii.gz")
    image = read_nifti(written["path"])
    _check(image.transform_source == "sform", f"transform source {image.transform_source!r}, expected 'sform'")
    _assert_voxels(image.voxels, written["data_kji"], "core voxels vs written NIfTI data")
    for label_map, expected_class in ((False, "vtkMRMLScalarVolumeNode"), (True, "vtkMRMLLabelMapVolumeNode")):
        node = volume_node_from_nifti(scene, image, label_map=label_map)
        _check(node.GetClassName() == expected_class,
               f"label_map={label_map}: node class {node.GetClassName()} != {expected_class}")
        _check(node.GetName() == "labels", f"node name {node.GetName()!r}: the .nii.gz suffix was not removed")
        _assert_matrix(_node_matrix(node), written["affine"], f"label_map={label_map}: node IJKToRAS vs NIfTI sform")
        _assert_voxels(array_from_volume_node(node), written["data_kji"], f"label_map={label_map}: node voxels")
        _check(node.GetDisplayNode() is not None, f"label_map={label_map}: no display node")


def scenario_core_geometry_survives_the_scene(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """Volume node -> geometry_from_volume_node -> volume node keeps every voxel centre in place,
    for axis-aligned, feet-first and oblique grids (the adapters' two directions agree)."""
    from ..geometry import ImageGeometry
    from .volumes import volume_node_from_array

    del workdir  # nothing is written to disk
    grids = {
        "axial": ImageGeometry((4, 3, 2), (0.5, 0.75, 2.0), (-10.0, 20.0, 30.0)),
        "feet_first": ImageGeometry((4, 3, 2), (1.0, 1.0, 5.0), (0.0, 0.0, 100.0),
                                    ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0))),
        "oblique": ImageGeometry((4, 3, 2), (0.9, 0.6, 3.0), (5.0, -7.5, 12.0),
                                 tuple(map(tuple, _rotation("x", 30.0) @ _rotation("z", 12.0)))),  # type: ignore[arg-type]
    }
    for name, geometry in grids.items():
        voxels = np.arange(int(np.prod(geometry.array_shape)), dtype=np.float32).reshape(geometry.array_shape)
        node = volume_node_from_array(scene, voxels, geometry, f"scenario {name}")
        back = geometry_from_volume_node(node)
        _check(back.isclose(geometry, tol_mm=1e-9), f"{name}: geometry changed on the way through the node")
        _check(back.axis_codes() == geometry.axis_codes(),
               f"{name}: axis codes {back.axis_codes()} != {geometry.axis_codes()}")
        _assert_voxels(array_from_volume_node(node), voxels, f"{name}: voxels")


def scenarios() -> Dict[str, Callable[[Any, Any], None]]:
    """Every ``scenario_*`` function of this module by name, in definition order."""
    return {name[len("scenario_"):]: func for name, func in globals().items()
            if name.startswith("scenario_") and callable(func)}


__all__: Sequence[str] = ["MATRIX_TOLERANCE", "scenarios", "write_oblique_ct_series", "write_oblique_nifti"]
