"""End-to-end scenarios of structure import/export through the scene (RTSS, DICOM SEG, NIfTI).

Like :mod:`.scenarios`, each ``scenario_<name>(scene, workdir)`` writes its own input, runs the
core and the adapters against ``scene`` and raises ``AssertionError`` naming what differs; pytest
(``Testing/test_mrml_segmentations.py``, a real MRML scene from slicer-core) and
``RTSSBridgeTest`` inside Slicer run the same functions. Expected masks are the ones the scenario
draws itself; terminology strings are checked with Slicer's own parser.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import slicer

from ..dicom_series import read_volume, scan_dicom
from ..geometry import ImageGeometry
from ..labels import Code, LabelInfo, LabelSet, NameRule
from ..roi import RoiMask
from ..rtss_export import export_rtss
from ..rtss_import import import_rtss
from ..samples.dicom_writer import write_volume_series
from ..structures import ReferenceGrid, Roi
from .segmentations import (
    export_segmentation,
    import_file_to_scene,
    roi_set_from_segmentation_node,
)
from .volumes import volume_node_from_dicom


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def template() -> LabelSet:
    """A two-label template with codes, as MultiModalAnnotation would hand it down."""
    anatomy = Code("SCT", "123037004", "Anatomical Structure")
    return LabelSet.from_labels(
        [LabelInfo("LUNG_LEFT", "Left lung", 1, (194, 105, 66), category=anatomy, type=Code("SCT", "39607008", "Lung"),
                   type_modifier=Code("SCT", "7771000", "Left"), rt_interpreted_type="ORGAN"),
         LabelInfo("NODULE", "Lung nodule", 20, (255, 0, 0),
                   category=Code("SCT", "49755003", "Morphologically Altered Structure"),
                   type=Code("SCT", "27925004", "Nodule"), rt_interpreted_type="GTV")],
        template_id="scenario", version="1", name_rules=[NameRule("Lung_L", "LUNG_LEFT"),
                                                         NameRule("Nodule*", "NODULE", "glob")])


def write_case(workdir: Path) -> Tuple[Path, ImageGeometry, List[Roi]]:
    """An oblique, anisotropic CT series and three ROIs: a lung with a hole touching the border,
    a 1-voxel nodule, and a box."""
    rotation = _rotation("x", 14.0) @ _rotation("y", -9.0)
    geometry = ImageGeometry((30, 24, 8), (0.8, 0.7, 2.0), (-12.0, -9.0, 20.0),
                             tuple(tuple(float(v) for v in row) for row in rotation))  # type: ignore[arg-type]
    folder = workdir / "ct"
    write_volume_series(folder, geometry, np.zeros(geometry.array_shape, dtype=np.int16), "CT")
    shape = geometry.array_shape
    lung = np.zeros(shape, dtype=bool)
    lung[1:7, 0:15, 0:14] = True
    lung[3:5, 5:9, 4:8] = False
    nodule = np.zeros(shape, dtype=bool)
    nodule[4, 7, 6] = True
    box = np.zeros(shape, dtype=bool)
    box[2:4, 16:23, 18:29] = True
    rois = [Roi(1, "Lung_L", RoiMask.from_full(lung)), Roi(2, "Nodule 1", RoiMask.from_full(nodule)),
            Roi(3, "Box", RoiMask.from_full(box), interpreted_type="AVOIDANCE")]
    return folder, geometry, rois


def _load_volume(scene: Any, folder: Path) -> Any:
    series = scan_dicom(folder).series[0]
    return volume_node_from_dicom(scene, read_volume(series))


def scenario_rtss_to_segmentation_and_back(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """RTSS -> segmentation node (terminology from the template, referencing the volume) ->
    RTSS: every mask survives exactly, on an oblique anisotropic grid."""
    work = Path(workdir)
    folder, _geometry, rois = write_case(work)
    grid = ReferenceGrid.from_series(scan_dicom(folder).series[0])
    export_rtss(rois, grid, work / "in.dcm")
    volume = _load_volume(scene, folder)
    labels = template()
    node, points, result = import_file_to_scene(scene, str(work / "in.dcm"), volume, labels)
    _check(points == [], "no point ROI expected")
    _check(node.GetNodeReferenceID("referenceImageGeometryRef") == volume.GetID(),
           "the segmentation does not reference the volume")
    segmentation = node.GetSegmentation()
    _check(segmentation.GetNumberOfSegments() == 3, f"{segmentation.GetNumberOfSegments()} segments, expected 3")
    names = [segmentation.GetNthSegment(i).GetName() for i in range(3)]
    _check(names == ["Lung_L", "Nodule 1", "Box"], f"segment names {names}")
    entry = slicer.vtkSlicerTerminologyEntry()
    first = segmentation.GetNthSegment(0)
    text = first.GetTerminology() if hasattr(first, "GetTerminology") else ""
    _check(bool(slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(text, entry)),
           f"Slicer cannot parse the terminology entry {text!r}")
    _check(entry.GetTypeObject().GetCodeValue() == "39607008"
           and entry.GetTypeModifierObject().GetCodeMeaning() == "Left", f"terminology of Lung_L is {text!r}")
    color = tuple(round(c * 255) for c in first.GetColor())
    _check(color == rois[0].display_color(), f"Lung_L colour {color} is not the file's {rois[0].display_color()}")
    _check(result.rois[0].label is not None and result.rois[0].label.code == "LUNG_LEFT", "Lung_L not mapped")
    back = roi_set_from_segmentation_node(node, volume, labels)
    for original, segment in zip(rois, back.rois):
        _check(original.mask is not None and segment.mask is not None and original.mask.same_as(segment.mask),
               f"{original.name}: the segment's voxels differ from the mask")
    _check(back.rois[1].label is not None and back.rois[1].label.code == "NODULE", "codes lost on the way back")
    export_segmentation(node, volume, str(work / "out.dcm"), "RTSS", series_dir=str(folder), label_set=labels)
    again = import_rtss(work / "out.dcm", folder)
    for original, imported in zip(rois, again.rois):
        _check(original.mask is not None and imported.mask is not None and original.mask.same_as(imported.mask),
               f"{original.name}: RTSS exported from the scene does not give the mask back")
    _check(again.rois[0].interpreted_type == "ORGAN" and again.rois[2].interpreted_type == "AVOIDANCE",
           f"interpreted types {[r.interpreted_type for r in again.rois]}")


def scenario_seg_and_labelmap_through_the_scene(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """Segmentation node -> DICOM SEG and NIfTI labelmap -> segmentation nodes with the same voxels."""
    work = Path(workdir)
    folder, _geometry, rois = write_case(work)
    grid = ReferenceGrid.from_series(scan_dicom(folder).series[0])
    export_rtss(rois, grid, work / "in.dcm")
    volume = _load_volume(scene, folder)
    labels = template()
    node, _points, _result = import_file_to_scene(scene, str(work / "in.dcm"), volume, labels)
    export_segmentation(node, volume, str(work / "seg.dcm"), "SEG", series_dir=str(folder), label_set=labels)
    export_segmentation(node, volume, str(work / "labels.nii.gz"), "NIfTI", label_set=labels)
    seg_node, _p, seg_result = import_file_to_scene(scene, str(work / "seg.dcm"), volume, labels)
    _check([r.name for r in seg_result.rois] == ["Lung_L", "Nodule 1", "Box"], "SEG segment names")
    for original, segment in zip(rois, roi_set_from_segmentation_node(seg_node, volume).rois):
        _check(original.mask is not None and segment.mask is not None and original.mask.same_as(segment.mask),
               f"{original.name}: voxels changed through DICOM SEG")
    lab_node, _p, lab_result = import_file_to_scene(scene, str(work / "labels.nii.gz"), volume, labels)
    # template values 1 and 20; Box is not a template label, so it got the first value above them (21)
    found = [(r.name, r.label_value) for r in lab_result.rois]
    _check(found == [("Left lung", 1), ("Lung nodule", 20), ("Label 21", 21)], f"labelmap ROIs {found}")
    _check(lab_node.GetSegmentation().GetNumberOfSegments() == 3, "labelmap segments")


def scenario_point_roi_becomes_markups(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """A POINT ROI of an RTSS becomes a markups point list at the same RAS position."""
    work = Path(workdir)
    folder, geometry, rois = write_case(work)
    grid = ReferenceGrid.from_series(scan_dicom(folder).series[0])
    point = geometry.ijk_to_lps([[5.0, 6.0, 3.0]])
    export_rtss([rois[2], Roi(4, "Isocenter", None, points_lps=point, interpreted_type="ISOCENTER")], grid,
                work / "in.dcm")
    volume = _load_volume(scene, folder)
    node, points, _result = import_file_to_scene(scene, str(work / "in.dcm"), volume)
    _check(len(points) == 1 and points[0].GetNumberOfControlPoints() == 1, "one markups point expected")
    position = [0.0, 0.0, 0.0]
    points[0].GetNthControlPointPosition(0, position)
    expected = geometry.ijk_to_ras([5.0, 6.0, 3.0])
    _check(np.allclose(position, expected, atol=1e-3), f"point at {position}, expected {expected.tolist()}")
    _check(node.GetSegmentation().GetNumberOfSegments() == 1, "the point ROI must not become a segment")


def structure_scenarios() -> Dict[str, Callable[[Any, Any], None]]:
    """Every ``scenario_*`` function of this module by name, in definition order."""
    return {name[len("scenario_"):]: func for name, func in globals().items()
            if name.startswith("scenario_") and callable(func)}


__all__: Sequence[str] = ["structure_scenarios", "template", "write_case"]
