"""Scene adapter: ROI sets (RTSS, DICOM SEG, NIfTI) <-> ``vtkMRMLSegmentationNode`` (R-5.7, R-8.2).

* :func:`segmentation_node_from_roi_set` - one segment per mask ROI (binary labelmap on the
  reference volume's IJK grid, cropped to the ROI's box), named and coloured as the file says,
  with a Slicer terminology entry built from the template codes
  (:func:`RTSSBridgeLib.terminology.terminology_entry`) and tags carrying the ROI number, label
  code and value, RT interpreted type and generation algorithm; the node references the volume
  (reference image geometry) and sits under the volume's study in the subject hierarchy. POINT
  ROIs become markups point lists.
* :func:`roi_set_from_segmentation_node` - every segment as an ROI on a reference volume's grid
  (Slicer resamples when the segmentation's own geometry differs, converts closed surfaces, and
  separates shared labelmaps), codes read back from the terminology entries.
* :func:`reference_grid_from_volume_node` - the core's :class:`~RTSSBridgeLib.structures.ReferenceGrid`
  of a volume loaded by :mod:`.volumes` (its geometry and the DICOM UIDs it carries).
* ``import_*_to_scene`` / :func:`export_segmentation` - the whole file <-> scene step, used by the
  RTSSBridge panel and its self-test.

MRML only: the scene is an argument; no ``slicer.app``, ``slicer.util`` loaders or Qt.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..errors import InputError
from ..labels import LabelSet
from ..problems import Severity
from ..roi import RoiMask, RoiProblemCode, problem
from ..structures import ReferenceGrid, Roi, RoiSet
from ..terminology import codes_for, label_for_codes, parse_terminology_entry, terminology_entry
from .volumes import (
    ATTR_FRAME_OF_REFERENCE,
    ATTR_INSTANCE_UIDS,
    ATTR_MODALITY,
    ATTR_PREFIX,
    ATTR_SERIES_UID,
    ATTR_STUDY_UID,
    geometry_from_volume_node,
    numpy_matrix,
    vtk_matrix,
)

TAG_ROI_NUMBER = ATTR_PREFIX + "RoiNumber"
TAG_LABEL_CODE = ATTR_PREFIX + "LabelCode"
TAG_LABEL_VALUE = ATTR_PREFIX + "LabelValue"
TAG_INTERPRETED_TYPE = ATTR_PREFIX + "RTROIInterpretedType"
TAG_GENERATION_ALGORITHM = ATTR_PREFIX + "ROIGenerationAlgorithm"
ATTR_SOURCE_PATH = ATTR_PREFIX + "SourcePath"
ATTR_SOURCE_KIND = ATTR_PREFIX + "SourceKind"
ATTR_ROI_NAME = ATTR_PREFIX + "RoiName"


def _labelmap_name() -> str:
    return str(slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName())


def _set_terminology(segment: Any, text: str) -> None:
    if hasattr(segment, "SetTerminology"):
        segment.SetTerminology(text)
    else:  # Slicer 5.8
        segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), text)


def _get_terminology(segment: Any) -> str:
    if hasattr(segment, "GetTerminology"):
        return str(segment.GetTerminology() or "")
    value = vtk.reference("")
    segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), value)
    return str(value)


def _get_tag(segment: Any, name: str) -> str:
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else ""


def reference_grid_from_volume_node(volume_node: Any) -> ReferenceGrid:
    """The reference grid of a volume node: its geometry, and the DICOM UIDs :mod:`.volumes`
    stored on it (empty when the volume did not come from DICOM)."""
    geometry = geometry_from_volume_node(volume_node)
    n = geometry.shape[2]
    uids = str(volume_node.GetAttribute(ATTR_INSTANCE_UIDS) or "").split()
    if len(uids) != n:
        uids = [""] * n
    return ReferenceGrid.from_geometry(
        geometry, uids, series_instance_uid=str(volume_node.GetAttribute(ATTR_SERIES_UID) or ""),
        study_instance_uid=str(volume_node.GetAttribute(ATTR_STUDY_UID) or ""),
        frame_of_reference_uid=str(volume_node.GetAttribute(ATTR_FRAME_OF_REFERENCE) or ""),
        modality=str(volume_node.GetAttribute(ATTR_MODALITY) or ""))


def _oriented_image(mask: RoiMask, ijk_to_ras: np.ndarray) -> Any:
    image = slicer.vtkOrientedImageData()
    data = mask.data if mask.data.size else np.zeros((1, 1, 1), dtype=bool)
    k0, j0, i0 = mask.offset
    nk, nj, ni = data.shape
    image.SetExtent(i0, i0 + ni - 1, j0, j0 + nj - 1, k0, k0 + nk - 1)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(data, dtype=np.uint8).reshape(-1), deep=True,
                                         array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    image.SetImageToWorldMatrix(vtk_matrix(ijk_to_ras))
    return image


def segmentation_node_from_roi_set(scene: Any, roi_set: RoiSet, volume_node: Any = None,
                                   name: Optional[str] = None) -> Tuple[Any, List[Any]]:
    """A segmentation node (and markups nodes for point ROIs) for ``roi_set``; see the module docstring."""
    base = name or os.path.basename(roi_set.source_path) or roi_set.source_kind
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(base))
    node.CreateDefaultDisplayNodes()
    segmentation = node.GetSegmentation()
    labelmap = _labelmap_name()
    if hasattr(segmentation, "SetSourceRepresentationName"):
        segmentation.SetSourceRepresentationName(labelmap)
    else:  # Slicer 5.8
        segmentation.SetMasterRepresentationName(labelmap)
    if volume_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    ijk_to_ras = roi_set.geometry.ijk_to_ras_matrix()
    points: List[Any] = []
    for roi in roi_set.rois:
        if roi.points_lps is not None:
            points.append(_markups_from_points(scene, roi, volume_node))
        if roi.mask is None:
            continue
        segment = slicer.vtkSegment()
        segment.SetName(roi.name)
        r, g, b = roi.display_color()
        segment.SetColor(r / 255.0, g / 255.0, b / 255.0)
        segment.AddRepresentation(labelmap, _oriented_image(roi.mask, ijk_to_ras))
        _set_terminology(segment, terminology_entry(codes_for(roi.label)))
        segment.SetTag(TAG_ROI_NUMBER, str(roi.number))
        if roi.label is not None:
            segment.SetTag(TAG_LABEL_CODE, roi.label.code)
        if roi.label_value is not None:
            segment.SetTag(TAG_LABEL_VALUE, str(roi.label_value))
        if roi.interpreted_type:
            segment.SetTag(TAG_INTERPRETED_TYPE, roi.interpreted_type)
        if roi.generation_algorithm:
            segment.SetTag(TAG_GENERATION_ALGORITHM, roi.generation_algorithm)
        segmentation.AddSegment(segment, segmentation.GenerateUniqueSegmentID(f"roi_{roi.number}"))
    node.SetAttribute(ATTR_SOURCE_KIND, roi_set.source_kind)
    node.SetAttribute(ATTR_SOURCE_PATH, roi_set.source_path)
    if roi_set.reference is not None and roi_set.reference.series_instance_uid:
        node.SetAttribute(ATTR_SERIES_UID, roi_set.reference.series_instance_uid)
    _place_beside(scene, node, volume_node)
    for markups in points:
        _place_beside(scene, markups, volume_node)
    return node, points


def _markups_from_points(scene: Any, roi: Roi, volume_node: Any) -> Any:
    from ..geometry import lps_to_ras

    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(roi.name))
    markups.CreateDefaultDisplayNodes()
    for n, point in enumerate(lps_to_ras(np.asarray(roi.points_lps).reshape(-1, 3)), start=1):
        markups.AddControlPoint(vtk.vtkVector3d(*(float(v) for v in point)), f"{roi.name}-{n}")
    markups.SetAttribute(ATTR_ROI_NAME, roi.name)
    markups.SetAttribute(TAG_ROI_NUMBER, str(roi.number))
    r, g, b = roi.display_color()
    markups.GetDisplayNode().SetSelectedColor(r / 255.0, g / 255.0, b / 255.0)
    return markups


def _place_beside(scene: Any, node: Any, volume_node: Any) -> None:
    """Put ``node`` under the same subject-hierarchy parent (the study) as ``volume_node``."""
    if volume_node is None:
        return
    sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    if sh is None:
        return
    volume_item = sh.GetItemByDataNode(volume_node)
    if not volume_item:
        return
    item = sh.GetItemByDataNode(node) or sh.CreateItem(sh.GetSceneItemID(), node)
    sh.SetItemParent(item, sh.GetItemParent(volume_item))


def roi_set_from_segmentation_node(segmentation_node: Any, volume_node: Any,
                                   label_set: Optional[LabelSet] = None) -> RoiSet:
    """Every segment of ``segmentation_node`` as an ROI on ``volume_node``'s grid."""
    if segmentation_node is None or volume_node is None:
        raise InputError("choose a segmentation and its reference volume", field="segmentation")
    scene = segmentation_node.GetScene()
    grid = reference_grid_from_volume_node(volume_node)
    segmentation = segmentation_node.GetSegmentation()
    rois: List[Roi] = []
    problems = []
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName("mmanno-export"))
    try:
        for index in range(segmentation.GetNumberOfSegments()):
            segment_id = segmentation.GetNthSegmentID(index)
            segment = segmentation.GetSegment(segment_id)
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                    segmentation_node, ids, labelmap_node, volume_node):
                raise InputError(f"segment {segment.GetName()!r} cannot be placed on the volume's grid",
                                 field="segmentation")
            image = labelmap_node.GetImageData()
            dims = image.GetDimensions()
            values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
            matrix = vtk.vtkMatrix4x4()
            labelmap_node.GetIJKToRASMatrix(matrix)
            if dims != tuple(grid.geometry.shape) or not np.allclose(
                    numpy_matrix(matrix), grid.geometry.ijk_to_ras_matrix(), atol=1e-4):
                raise InputError(f"segment {segment.GetName()!r} was not exported on the volume's grid",
                                 field="segmentation")
            number_text = _get_tag(segment, TAG_ROI_NUMBER)
            number = int(number_text) if number_text.isdigit() else index + 1
            color = tuple(round(float(c) * 255) for c in segment.GetColor())
            roi = Roi(number=number, name=str(segment.GetName()), mask=RoiMask.from_full(values != 0),
                      color=(color[0], color[1], color[2]), interpreted_type=_get_tag(segment, TAG_INTERPRETED_TYPE),
                      generation_algorithm=_get_tag(segment, TAG_GENERATION_ALGORITHM))
            codes = parse_terminology_entry(_get_terminology(segment))
            if codes is not None:
                roi.codes = codes.to_dict()
                roi.label = label_for_codes(label_set, codes)
            code = _get_tag(segment, TAG_LABEL_CODE)
            if roi.label is None and label_set is not None and code:
                roi.label = next((lab for lab in label_set.labels if lab.code == code), None)
            if roi.mask is not None and roi.mask.is_empty():
                roi.add(RoiProblemCode.EMPTY_MASK, Severity.WARNING, "the segment is empty")
            rois.append(roi)
    finally:
        scene.RemoveNode(labelmap_node)
    if not rois:
        problems.append(problem(RoiProblemCode.EMPTY_ROI, Severity.WARNING, "the segmentation has no segment"))
    result = RoiSet(source_kind="SCENE", source_path=str(segmentation_node.GetName()), geometry=grid.geometry,
                    rois=rois, problems=problems, reference=grid)
    result.map_to_template(label_set)
    return result


# --------------------------------------------------------------------------- whole steps
def _grid_for_import(volume_node: Any) -> Tuple[ReferenceGrid, List[Any]]:
    if volume_node is None:
        raise InputError("choose the reference volume the structures are drawn on", field="reference volume")
    grid = reference_grid_from_volume_node(volume_node)
    notes = []
    if not any(grid.sop_instance_uids):
        notes.append(problem(RoiProblemCode.MATCHED_BY_POSITION, Severity.INFO,
                             f"the reference volume {volume_node.GetName()!r} carries no DICOM instance UIDs: "
                             "contours and frames are matched by position only"))
    return grid, notes


def import_rtss_to_scene(scene: Any, path: str, volume_node: Any,
                         label_set: Optional[LabelSet] = None) -> Tuple[Any, List[Any], RoiSet]:
    """RTSS file -> segmentation node on ``volume_node`` (+ markups for point ROIs) and the ROI set."""
    from ..rtss_import import rasterise_structure_set, read_structure_set

    rtss = read_structure_set(path)
    grid, notes = _grid_for_import(volume_node)
    if grid.series_instance_uid and rtss.referenced_series_uids and \
            grid.series_instance_uid not in rtss.referenced_series_uids:
        notes.append(problem(RoiProblemCode.REFERENCED_SERIES_NOT_FOUND, Severity.WARNING,
                             f"the structure set references series {', '.join(rtss.referenced_series_uids)}, not the "
                             f"chosen volume's {grid.series_instance_uid}; contours are placed by position"))
    result = rasterise_structure_set(rtss, grid, label_set, notes)
    node, points = segmentation_node_from_roi_set(scene, result, volume_node,
                                                  name=rtss.label or os.path.basename(path))
    return node, points, result


def import_seg_to_scene(scene: Any, path: str, volume_node: Any,
                        label_set: Optional[LabelSet] = None) -> Tuple[Any, List[Any], RoiSet]:
    """DICOM SEG file -> segmentation node on ``volume_node``."""
    from ..seg import import_seg

    grid, notes = _grid_for_import(volume_node)
    result = import_seg(path, grid, label_set)
    result.problems = notes + result.problems
    node, points = segmentation_node_from_roi_set(scene, result, volume_node)
    return node, points, result


def import_labelmap_to_scene(scene: Any, path: str, volume_node: Any,
                             label_set: Optional[LabelSet] = None) -> Tuple[Any, List[Any], RoiSet]:
    """NIfTI labelmap -> segmentation node on ``volume_node`` (values named by the template)."""
    from ..labelmap import read_labelmap

    grid, _notes = _grid_for_import(volume_node)
    result = read_labelmap(path, label_set, reference=grid.geometry)
    result.reference = grid
    node, points = segmentation_node_from_roi_set(scene, result, volume_node)
    return node, points, result


def import_file_to_scene(scene: Any, path: str, volume_node: Any,
                         label_set: Optional[LabelSet] = None) -> Tuple[Any, List[Any], RoiSet]:
    """RTSS, SEG or NIfTI labelmap (told apart by content) -> segmentation node."""
    from ..nifti import is_nifti_path

    if not os.path.isfile(path):
        raise InputError("no such file", file=path)
    if is_nifti_path(path):
        return import_labelmap_to_scene(scene, path, volume_node, label_set)
    import pydicom

    try:
        sop_class = str(pydicom.dcmread(path, stop_before_pixels=True, force=True).get("SOPClassUID", ""))
    except Exception as exc:
        raise InputError(f"not a readable DICOM or NIfTI file ({type(exc).__name__})", file=path) from exc
    from ..seg import SEG_SOP_CLASS_UID

    if sop_class == SEG_SOP_CLASS_UID:
        return import_seg_to_scene(scene, path, volume_node, label_set)
    return import_rtss_to_scene(scene, path, volume_node, label_set)


def _series_grid(series_dir: str, volume_node: Any) -> ReferenceGrid:
    """The scanned DICOM series of ``volume_node`` (by its Series Instance UID, else by grid)."""
    from ..dicom_series import scan_dicom
    from ..structures import check_same_grid

    if not series_dir or not os.path.isdir(series_dir):
        raise InputError("choose the DICOM folder of the reference volume's series (RTSS and SEG reference its "
                         "files)", file=series_dir or None, field="series folder")
    wanted = str(volume_node.GetAttribute(ATTR_SERIES_UID) or "")
    geometry = geometry_from_volume_node(volume_node)
    candidates = [s for s in scan_dicom(series_dir).series if all(f.position is not None for f in s.frames)]
    chosen = [s for s in candidates if wanted and s.series_uid == wanted] or \
        [s for s in candidates if s.geometry.shape == geometry.shape and s.geometry.isclose(geometry, 1e-3)]
    if not chosen:
        raise InputError(f"holds no series matching the volume {volume_node.GetName()!r}", file=series_dir,
                         field="series folder")
    grid = ReferenceGrid.from_series(chosen[0])
    check_same_grid(geometry, grid.geometry, "the reference volume")
    return grid


def export_segmentation(segmentation_node: Any, volume_node: Any, out_path: str, kind: str,
                        series_dir: str = "", label_set: Optional[LabelSet] = None,
                        options: Any = None) -> RoiSet:
    """Write the segments of ``segmentation_node`` as ``kind`` ``"RTSS"``, ``"SEG"`` or ``"NIfTI"``
    (a labelmap; ``out_path`` a folder gives one file per segment)."""
    rois = roi_set_from_segmentation_node(segmentation_node, volume_node, label_set)
    if kind == "NIfTI":
        from ..labelmap import write_labelmap, write_split

        if out_path.lower().endswith((".nii", ".nii.gz")):
            write_labelmap(rois, out_path, description="mmanno segmentation export")
        else:
            write_split(rois, out_path)
        return rois
    grid = _series_grid(series_dir, volume_node)
    for roi in rois.rois:
        if roi.label is not None and not roi.interpreted_type:
            roi.interpreted_type = roi.label.rt_interpreted_type
    if kind == "RTSS":
        from ..rtss_export import export_rtss

        result = export_rtss(rois.rois, grid, out_path, options=options, source_kind="SCENE",
                             source_path=rois.source_path)
    elif kind == "SEG":
        from ..seg import export_seg

        result = export_seg(rois.rois, grid, out_path, options=options, source_kind="SCENE",
                            source_path=rois.source_path)
    else:
        raise InputError(f"{kind!r} must be RTSS, SEG or NIfTI", field="format")
    result.problems = rois.problems + result.problems
    result.label_set = label_set
    return result


def problem_lines(result: RoiSet) -> List[str]:
    """Every problem of a conversion as one line (what the panel lists)."""
    return [p.line() for p in result.all_problems()]


def summary(result: RoiSet) -> Dict[str, Any]:
    """Counts for a status line."""
    problems = result.all_problems()
    return {"rois": len(result.rois), "warnings": sum(1 for p in problems if p.severity != Severity.INFO),
            "errors": sum(1 for p in problems if p.severity == Severity.ERROR)}
