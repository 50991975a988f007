"""Test material for RT Structure Set tests: small image series and hand-written structure sets.

The structure sets here are written with plain pydicom, not with :mod:`RTSSBridgeLib.rtss_export`,
so that importer tests do not depend on the exporter, and so that contours can be anything a real
planning system writes: smooth polygons with arbitrary coordinates, holes, several contours per
plane, open contours, points, wrong references, planes between slices.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import UID

from RTSSBridgeLib.dicom_series import scan_dicom
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.roi import RoiMask
from RTSSBridgeLib.samples import write_volume_series
from RTSSBridgeLib.samples.phantom import rotation_matrix
from RTSSBridgeLib.structures import ReferenceGrid, Roi
from RTSSBridgeLib.uids import deterministic_uid

RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
#: The real RTSS files (README of that folder): ``../shared/testdata`` beside the checkout.
TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


def oblique_direction(x_deg: float = 12.0, y_deg: float = 7.0) -> Tuple[Tuple[float, ...], ...]:
    rot = rotation_matrix("x", x_deg) @ rotation_matrix("y", y_deg)
    return tuple(tuple(float(v) for v in row) for row in rot)


#: Small grids the tests use: axial, oblique + anisotropic + non-square, feet-first.
GRIDS: Dict[str, ImageGeometry] = {
    "axial": ImageGeometry((40, 36, 10), (0.9, 0.9, 2.5), (-18.0, -16.0, 30.0)),
    "oblique": ImageGeometry((44, 30, 12), (0.8, 0.6, 1.7), (-20.0, -15.0, 40.0), oblique_direction()),
    "feet_first": ImageGeometry((32, 28, 9), (1.1, 1.1, 3.0), (15.0, -14.0, 90.0),
                                ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, -1.0))),
}


def write_series(folder: Path, geometry: ImageGeometry, *, skip: Sequence[int] = ()) -> Tuple[Path, ReferenceGrid]:
    """A CT series of zeros on ``geometry`` (optionally without some slices) and its reference grid."""
    write_volume_series(folder, geometry, np.zeros(geometry.array_shape, dtype=np.int16), "CT", skip_slices=skip)
    series = scan_dicom(folder).series[0]
    return folder, ReferenceGrid.from_series(series)


@dataclass
class ContourSpec:
    """One contour: LPS points, its type and the SOP Instance UIDs it references."""

    points: np.ndarray
    kind: str = "CLOSED_PLANAR"
    uids: Sequence[str] = ()
    declared: Optional[int] = None  # NumberOfContourPoints to write (default: the true count)
    raw: Optional[str] = None  # ContourData text written as is


@dataclass
class RoiSpec:
    number: int
    name: str
    contours: List[ContourSpec] = field(default_factory=list)
    color: Optional[Tuple[int, int, int]] = (255, 0, 0)
    interpreted_type: str = "ORGAN"
    frame_of_reference_uid: Optional[str] = None
    contour_item: bool = True  # False: no ROI Contour item at all
    contour_sequence: bool = True  # False: an ROI Contour item without Contour Sequence


def circle(grid: ReferenceGrid, k: int, centre_ij: Tuple[float, float], radius: float, n: int = 48,
           phase: float = 0.1, plane_offset_mm: float = 0.0) -> np.ndarray:
    """A polygon around ``centre_ij`` on slice ``k`` of ``grid`` (radius in voxels), in LPS.

    ``phase`` keeps vertices off voxel centres; ``plane_offset_mm`` moves the plane along the normal.
    """
    angles = phase + 2.0 * math.pi * np.arange(n) / n
    ij = np.column_stack([centre_ij[0] + radius * np.cos(angles), centre_ij[1] + 0.8 * radius * np.sin(angles)])
    ijk = np.column_stack([ij + grid.frame_ijk[k, :2], np.full(n, grid.frame_ijk[k, 2])])
    lps = grid.geometry.ijk_to_lps(ijk)
    return lps + plane_offset_mm * grid.geometry.slice_normal()


def write_rtss(path: Path, grid: ReferenceGrid, rois: Sequence[RoiSpec], *,
               referenced_series: Optional[str] = "same", frame_of_reference: Optional[str] = "same",
               series_images: Optional[Sequence[str]] = None, sop_instance_uid: Optional[str] = None,
               decimals: int = 6) -> Path:
    """Write an RTSS with plain pydicom (implicit: nothing from RTSSBridgeLib's exporter)."""
    ds = Dataset()
    meta = FileMetaDataset()
    uid = sop_instance_uid or deterministic_uid("test-rtss", str(path))
    meta.MediaStorageSOPClassUID = UID(RTSTRUCT)
    meta.MediaStorageSOPInstanceUID = UID(uid)
    meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
    ds.file_meta = meta
    ds.SOPClassUID = RTSTRUCT
    ds.SOPInstanceUID = uid
    ds.Modality = "RTSTRUCT"
    ds.PatientName = "Test^Patient"
    ds.PatientID = "T1"
    ds.StudyInstanceUID = grid.study_instance_uid
    ds.SeriesInstanceUID = deterministic_uid("test-rtss-series", str(path))
    ds.StructureSetLabel = "TEST"
    frame_uid = grid.frame_of_reference_uid if frame_of_reference == "same" else frame_of_reference
    if frame_uid is not None:
        frame = Dataset()
        frame.FrameOfReferenceUID = frame_uid
        if referenced_series is not None:
            series = Dataset()
            series.SeriesInstanceUID = grid.series_instance_uid if referenced_series == "same" else referenced_series
            images = grid.sop_instance_uids if series_images is None else series_images
            series.ContourImageSequence = DicomSequence([_image(grid.sop_class_uid, u) for u in images])
            study = Dataset()
            study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
            study.ReferencedSOPInstanceUID = grid.study_instance_uid
            study.RTReferencedSeriesSequence = DicomSequence([series])
            frame.RTReferencedStudySequence = DicomSequence([study])
        ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])
    roi_items, contour_items, observations = [], [], []
    for roi in rois:
        item = Dataset()
        item.ROINumber = roi.number
        item.ReferencedFrameOfReferenceUID = roi.frame_of_reference_uid or frame_uid or ""
        item.ROIName = roi.name
        item.ROIGenerationAlgorithm = "MANUAL"
        roi_items.append(item)
        obs = Dataset()
        obs.ObservationNumber = roi.number
        obs.ReferencedROINumber = roi.number
        obs.RTROIInterpretedType = roi.interpreted_type
        obs.ROIInterpreter = ""
        observations.append(obs)
        if not roi.contour_item:
            continue
        contour_item = Dataset()
        contour_item.ReferencedROINumber = roi.number
        if roi.color is not None:
            contour_item.ROIDisplayColor = list(roi.color)
        if roi.contour_sequence:
            contours = []
            for n, spec in enumerate(roi.contours, start=1):
                c = Dataset()
                if spec.uids:
                    c.ContourImageSequence = DicomSequence([_image(grid.sop_class_uid, u) for u in spec.uids])
                c.ContourGeometricType = spec.kind
                pts = np.asarray(spec.points, dtype=np.float64).reshape(-1, 3)
                c.NumberOfContourPoints = spec.declared if spec.declared is not None else len(pts)
                c.ContourNumber = n
                if spec.raw is not None:  # written as is, even when it is not valid DS
                    data = spec.raw.encode("ascii") + (b" " if len(spec.raw) % 2 else b"")
                    c[0x30060050] = RawDataElement(Tag(0x30060050), "DS", len(data), data, 0, False, True)
                else:
                    c.ContourData = [f"{v:.{decimals}f}" for v in pts.reshape(-1)]
                contours.append(c)
            contour_item.ContourSequence = DicomSequence(contours)
        contour_items.append(contour_item)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    path.parent.mkdir(parents=True, exist_ok=True)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)
    return path


def _image(sop_class: str, uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = uid
    return item


def plastimatch_masks(rtss: Path, series_dir: Path, out: Path) -> Dict[str, Tuple[np.ndarray, ImageGeometry]]:
    """Rasterise ``rtss`` with ``plastimatch convert --xor-contours``: {ROI name: ([k, j, i] bool, geometry)}."""
    import SimpleITK as sitk

    command = ["plastimatch", "convert", "--input", str(rtss), "--referenced-ct", str(series_dir),
               "--output-prefix", str(out), "--prefix-format", "nrrd", "--xor-contours"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    masks: Dict[str, Tuple[np.ndarray, ImageGeometry]] = {}
    for f in sorted(out.glob("*.nrrd")):
        image = sitk.ReadImage(str(f))
        geometry = ImageGeometry(image.GetSize(), image.GetSpacing(), image.GetOrigin(),
                                 np.reshape(image.GetDirection(), (3, 3)))
        masks[f.stem] = (sitk.GetArrayFromImage(image).astype(bool), geometry)
    return masks


def dice_arrays(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def hard_masks(shape: Tuple[int, int, int]) -> List[Roi]:
    """Masks that break naive exporters: touching every border, holes with islands, single voxels,
    diagonal contacts, and a random blob."""
    nk, nj, ni = shape
    border = np.zeros(shape, dtype=bool)
    border[0, :, :] = True  # a whole first slice
    border[nk - 1, :, :3] = True
    border[1:4, 0, :] = True
    border[1:4, nj - 1, ni - 5:] = True
    holes = np.zeros(shape, dtype=bool)
    holes[2:6, 3:15, 4:20] = True
    holes[2:6, 5:13, 6:18] = False
    holes[3:5, 8:10, 10:13] = True
    one = np.zeros(shape, dtype=bool)
    one[nk - 1, nj - 1, ni - 1] = True
    few = np.zeros(shape, dtype=bool)
    few[4, 10, 10] = few[4, 11, 11] = few[4, 10, 12] = few[5, 3, 3] = True
    rng = np.random.default_rng(7)
    blob = rng.random(shape) < 0.35
    return [Roi(1, "Border", RoiMask.from_full(border)), Roi(2, "Holes", RoiMask.from_full(holes)),
            Roi(3, "One voxel", RoiMask.from_full(one)), Roi(4, "Four voxels", RoiMask.from_full(few)),
            Roi(5, "Blob", RoiMask.from_full(blob))]


#: Libraries the RT Structure Set command line must not import (each costs 0.05-0.2 s of a run).
HEAVY_LIBRARIES = ("pydicom", "nibabel", "jsonschema", "scipy")


def run_cli_in_fresh_process(argv: Sequence[str]) -> Tuple[int, List[str]]:
    """Run ``mmanno argv`` in a new interpreter; (exit status, the heavy libraries it imported)."""
    import sys

    code = ("import sys; from MultiModalAnnotationLib.cli import main; "
            f"rc = main({list(argv)!r}); "
            f"print(rc, ','.join(sorted(m for m in {HEAVY_LIBRARIES!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rc, _, loaded = out.strip().splitlines()[-1].partition(" ")
    return int(rc), [m for m in loaded.split(",") if m]
