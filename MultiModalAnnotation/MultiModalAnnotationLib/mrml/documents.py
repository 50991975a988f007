"""Scene adapter: annotation documents <-> MRML nodes, both ways (R-6.7, Appendix C).

* mask annotations -> segments of one ``vtkMRMLSegmentationNode`` (segment ID = annotation id,
  binary labelmap on the image grid, terminology entry, label code and the annotation's JSON in
  segment tags);
* point annotations -> control points of one ``vtkMRMLMarkupsFiducialNode`` (control point label
  = annotation id; the annotation's JSON in the node attribute ``MultiModalAnnotation.Annotation.<id>``);
* boxes -> one ``vtkMRMLMarkupsROINode`` each, oriented along the image axes (a 2-D box has zero
  size across the slice);
* polygons -> one ``vtkMRMLMarkupsClosedCurveNode`` each on their slice;
* the rest (task, template, image, metadata, attribute annotations, annotation order) -> a
  ``vtkMRMLScriptedModuleNode`` (attribute ``MultiModalAnnotation.Role`` = ``AnnotationDocument``)
  that references the other nodes.

Positions: document voxel indices <-> RAS through :class:`RTSSBridgeLib.geometry.ImageGeometry`
only. Masks, ids, codes, attributes, links and metadata round-trip bit for bit; positions differ by
float64 round-off of one matrix product and its inverse (tests hold them to 1e-9 mm).
Nodes drawn by a person are read too: a markups node or segment with only the
``MultiModalAnnotation.LabelCode`` attribute/tag becomes an annotation of that label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from RTSSBridgeLib.geometry import LPS_TO_RAS, ImageGeometry
from RTSSBridgeLib.mrml.volumes import numpy_matrix, vtk_matrix

from ..documents import Annotation, AnnotationDocument, ImageRef
from ..templates import LabelTemplate
from ..templates.exports import slicer_terminology_entry
from .templates import TAG_ANNOTATION, TAG_LABEL_CODE, TAG_TEMPLATE, TAG_TERMINOLOGY

ROLE = "MultiModalAnnotation.Role"
ROLE_DOCUMENT = "AnnotationDocument"
HEADER_PARAMETER = "Header"
REF_SEGMENTATION = "MultiModalAnnotation.Segmentation"
REF_POINTS = "MultiModalAnnotation.Points"
REF_SHAPES = "MultiModalAnnotation.Shapes"
POINT_PREFIX = "MultiModalAnnotation.Annotation."
TEMPLATE_SOURCE = "MultiModalAnnotation.TemplateSource"
BINARY_LABELMAP = "Binary labelmap"


@dataclass
class DocumentNodes:
    """The nodes that hold one document in a scene."""

    document_node: Any
    segmentation: Any = None
    points: Any = None
    shapes: List[Any] = field(default_factory=list)
    reports: List[Any] = field(default_factory=list)
    tables: List[Any] = field(default_factory=list)




def _tag(segment: Any, name: str) -> str:
    value = vtk.reference("")
    if not segment.GetTag(name, value):
        return ""
    return str(value)


def _meta(annotation: Annotation, **extra: Any) -> str:
    """The non-geometric part of an annotation as compact JSON (what the nodes carry)."""
    data = annotation.to_dict()
    payload = data.pop("data")
    for key in ("attributes", "cross_modal_links", "mask_value"):
        if key in payload:
            data[key] = payload[key]
    data.update(extra)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _annotation(meta: Dict[str, Any], geometry: Dict[str, Any]) -> Annotation:
    payload: Dict[str, Any] = dict(geometry)
    for key in ("attributes", "cross_modal_links", "mask_value"):
        if key in meta:
            payload[key] = meta[key]
    return Annotation(meta["id"], meta["category"], meta["label_code"], meta["type"], payload,
                      meta.get("instance"), bool(meta.get("uncertain", False)))


# --------------------------------------------------------------------------- document -> scene
def _oriented_mask(voxels: np.ndarray, grid: ImageGeometry) -> Any:
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*grid.shape)
    image.SetImageToWorldMatrix(vtk_matrix(grid.ijk_to_ras_matrix()))
    flat = np.ascontiguousarray(voxels.astype(np.uint8)).reshape(-1)
    scalars = numpy_support.numpy_to_vtk(flat, deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    return image


def scene_from_document(scene: Any, document: AnnotationDocument, template: LabelTemplate,
                        masks: Optional[Dict[str, np.ndarray]] = None, name: Optional[str] = None,
                        locale: str = "en") -> DocumentNodes:
    """Create the nodes of ``document`` (masks from ``masks``: annotation id -> bool ``[k, j, i]``)."""
    grid = document.image.geometry
    masks = masks or {}
    title = name or f"Annotation {document.task_id}"
    doc_node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", title)
    doc_node.SetAttribute(ROLE, ROLE_DOCUMENT)
    nodes = DocumentNodes(doc_node)
    header = {"task_id": document.task_id, "template": {"id": document.template_id,
                                                        "version": document.template_version},
              "image": document.image.to_dict(), "metadata": dict(document.metadata),
              "order": [a.id for a in document.annotations],
              "attribute_annotations": [a.to_dict() for a in document.annotations if a.type == "attribute"]}
    doc_node.SetParameter(HEADER_PARAMETER, json.dumps(header, ensure_ascii=False))
    mask_items = [a for a in document.annotations if a.type == "mask"]
    if mask_items:
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{title} masks")
        seg.CreateDefaultDisplayNodes()
        seg.SetAttribute(TAG_TEMPLATE, f"{template.id} {template.version}")
        for item in mask_items:
            if item.id not in masks:
                raise ValueError(f"masks: no voxels given for mask annotation {item.id}")
            label = template.label(item.label_code)
            segment_name = label.display_name(locale) + (f" {item.instance}" if item.instance else "")
            colour = [c / 255.0 for c in (label.color or (128, 128, 128))]
            seg.AddSegmentFromBinaryLabelmapRepresentation(_oriented_mask(masks[item.id], grid), segment_name, colour,
                                                          item.id)
            segment = seg.GetSegmentation().GetSegment(item.id)
            segment.SetTag(TAG_TERMINOLOGY, slicer_terminology_entry(template, label, locale))
            segment.SetTag(TAG_LABEL_CODE, item.label_code)
            segment.SetTag(TAG_ANNOTATION, _meta(item))
        doc_node.SetNodeReferenceID(REF_SEGMENTATION, seg.GetID())
        nodes.segmentation = seg
    point_items = [a for a in document.annotations if a.type == "point"]
    if point_items:
        points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{title} points")
        for item in point_items:
            ras = grid.ijk_to_ras(item.data["point"])
            index = points.AddControlPoint(vtk.vtkVector3d(*ras.tolist()), item.id)
            points.SetNthControlPointDescription(index, item.label_code)
            points.SetAttribute(POINT_PREFIX + item.id, _meta(item))
        doc_node.SetNodeReferenceID(REF_POINTS, points.GetID())
        nodes.points = points
    for item in document.annotations:
        if item.type == "bbox":
            shape = _roi_node(scene, item, grid)
        elif item.type == "polygon":
            shape = scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode", item.id)
            k = float(item.data["slice_index"])
            for x, y in item.data["polygon"]:
                shape.AddControlPoint(vtk.vtkVector3d(*grid.ijk_to_ras([x, y, k]).tolist()))
            shape.SetAttribute(TAG_ANNOTATION, _meta(item, slice_index=item.data["slice_index"]))
        else:
            continue
        shape.SetAttribute(TAG_LABEL_CODE, item.label_code)
        doc_node.AddNodeReferenceID(REF_SHAPES, shape.GetID())
        nodes.shapes.append(shape)
    from .links import links_to_scene, store_link_order  # reports, links, records

    nodes.reports, nodes.tables = links_to_scene(scene, document, nodes)
    store_link_order(doc_node, document)
    return nodes


def start_document(scene: Any, template: LabelTemplate, image: ImageRef, task_id: str, metadata: Dict[str, Any],
                   template_source: str = "", name: Optional[str] = None, locale: str = "en") -> DocumentNodes:
    """An empty document for ``image`` with a segmentation made from ``template`` (one empty coded
    segment per label with a value), ready for a person to paint; read it with
    :func:`document_from_scene` (empty segments are left out)."""
    from .templates import segmentation_from_template

    empty = AnnotationDocument(task_id, template.id, template.version, image, (), metadata)
    nodes = scene_from_document(scene, empty, template, {}, name=name, locale=locale)
    seg = segmentation_from_template(scene, template, name=f"{nodes.document_node.GetName()} masks", locale=locale)
    nodes.document_node.SetNodeReferenceID(REF_SEGMENTATION, seg.GetID())
    nodes.document_node.SetAttribute(TEMPLATE_SOURCE, template_source or template.id)
    nodes.segmentation = seg
    return nodes


def _box_axes_ras(grid: ImageGeometry) -> np.ndarray:
    axes = LPS_TO_RAS @ grid.direction_matrix  # columns: i, j, k unit vectors in RAS
    if np.linalg.det(axes) < 0:  # a ROI is oriented by a rotation; a box is symmetric in k
        axes[:, 2] *= -1.0
    return axes


def _roi_node(scene: Any, item: Annotation, grid: ImageGeometry) -> Any:
    box = [float(v) for v in item.data["bbox"]]
    if len(box) == 4:
        k = float(item.data["slice_index"])
        low, high = np.array([box[0], box[1], k]), np.array([box[2], box[3], k])
    else:
        low, high = np.array(box[:3]), np.array(box[3:])
    centre = grid.ijk_to_ras((low + high) / 2.0)
    size = (high - low) * np.asarray(grid.spacing_mm)
    matrix = np.eye(4)
    matrix[:3, :3] = _box_axes_ras(grid)
    matrix[:3, 3] = centre
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", item.id)
    roi.SetAndObserveObjectToNodeMatrix(vtk_matrix(matrix))
    roi.SetSize(*size.tolist())
    # Slicer keeps the ROI centre as a float32 control point; the exact centre rides along and is
    # used on reading while the ROI has not been moved (its float centre still equals it).
    roi.SetAttribute(TAG_ANNOTATION, _meta(item, dims=len(box) // 2, centre_ras=centre.tolist()))
    return roi


# --------------------------------------------------------------------------- scene -> document
def find_document_nodes(scene: Any) -> List[Any]:
    """Document nodes in the scene (scripted module nodes with the document role)."""
    found = []
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
        node = scene.GetNthNodeByClass(n, "vtkMRMLScriptedModuleNode")
        if node.GetAttribute(ROLE) == ROLE_DOCUMENT:
            found.append(node)
    return found


def _segment_mask(seg_node: Any, segment_id: str, grid: ImageGeometry) -> np.ndarray:
    image = slicer.vtkOrientedImageData()
    seg_node.GetBinaryLabelmapRepresentation(segment_id, image)
    reference = _oriented_mask(np.zeros(grid.array_shape, dtype=np.uint8), grid)
    resampled = slicer.vtkOrientedImageData()
    if image.GetPointData().GetScalars() is None or image.IsEmpty():
        return np.zeros(grid.array_shape, dtype=bool)
    ok = slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        image, reference, resampled, False, True)
    if not ok:
        raise ValueError(f"segment {segment_id}: its labelmap cannot be resampled onto the document's image grid")
    extent = resampled.GetExtent()
    dims = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    arr = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    full = np.zeros(grid.array_shape, dtype=bool)
    full[extent[4]:extent[5] + 1, extent[2]:extent[3] + 1, extent[0]:extent[1] + 1] = arr != 0
    return full


def _fallback_meta(code: str, ident: str, kind: str, template: Optional[LabelTemplate]) -> Dict[str, Any]:
    label = template.get(code) if template is not None else None
    return {"id": ident, "category": label.category if label else "other", "label_code": code, "type": kind}


def document_from_scene(scene: Any, document_node: Any = None, template: Optional[LabelTemplate] = None
                        ) -> Tuple[AnnotationDocument, Dict[str, np.ndarray]]:
    """The document held by ``document_node`` (the only document node when None) and its masks."""
    if document_node is None:
        nodes = find_document_nodes(scene)
        if len(nodes) != 1:
            raise ValueError(f"the scene holds {len(nodes)} annotation documents; pass the one to read")
        document_node = nodes[0]
    header = json.loads(document_node.GetParameter(HEADER_PARAMETER))
    image = ImageRef.from_dict(header["image"])
    grid = image.geometry
    found: Dict[str, Annotation] = {a["id"]: Annotation.from_dict(a) for a in header["attribute_annotations"]}
    masks: Dict[str, np.ndarray] = {}
    seg = document_node.GetNodeReference(REF_SEGMENTATION)
    if seg is not None:
        segmentation = seg.GetSegmentation()
        for n in range(segmentation.GetNumberOfSegments()):
            segment_id = segmentation.GetNthSegmentID(n)
            segment = segmentation.GetSegment(segment_id)
            raw = _tag(segment, TAG_ANNOTATION)
            meta = json.loads(raw) if raw else _fallback_meta(_tag(segment, TAG_LABEL_CODE) or segment_id,
                                                               segment_id, "mask", template)
            mask = _segment_mask(seg, segment_id, grid)
            if not raw and not mask.any():
                continue  # an unpainted segment of the template is not an annotation
            masks[meta["id"]] = mask
            found[meta["id"]] = _annotation(meta, {"mask_file": f"masks/{meta['id']}.nii.gz"})
    points = document_node.GetNodeReference(REF_POINTS)
    if points is not None:
        for n in range(points.GetNumberOfControlPoints()):
            ident = points.GetNthControlPointLabel(n)
            raw = points.GetAttribute(POINT_PREFIX + ident)
            meta = json.loads(raw) if raw else _fallback_meta(points.GetNthControlPointDescription(n) or ident, ident,
                                                              "point", template)
            ras = [0.0, 0.0, 0.0]
            points.GetNthControlPointPosition(n, ras)
            found[meta["id"]] = _annotation(meta, {"point": grid.ras_to_ijk(ras).tolist()})
    for n in range(document_node.GetNumberOfNodeReferences(REF_SHAPES)):
        shape = document_node.GetNthNodeReference(REF_SHAPES, n)
        raw = shape.GetAttribute(TAG_ANNOTATION)
        if shape.IsA("vtkMRMLMarkupsROINode"):
            meta = json.loads(raw) if raw else _fallback_meta(shape.GetAttribute(TAG_LABEL_CODE) or "",
                                                              shape.GetName(), "bbox", template)
            found[meta["id"]] = _annotation(meta, _box_from_roi(shape, grid, int(meta.get("dims", 3)),
                                                                meta.get("centre_ras")))
        else:
            meta = json.loads(raw) if raw else _fallback_meta(shape.GetAttribute(TAG_LABEL_CODE) or "",
                                                              shape.GetName(), "polygon", template)
            ijk = [grid.ras_to_ijk(shape.GetNthControlPointPosition(c))
                   for c in range(shape.GetNumberOfControlPoints())]
            k = meta.get("slice_index", round(float(np.mean([p[2] for p in ijk]))))
            found[meta["id"]] = _annotation(meta, {"polygon": [[float(p[0]), float(p[1])] for p in ijk],
                                                   "slice_index": k})
    order = [i for i in header["order"] if i in found] + [i for i in found if i not in header["order"]]
    from .links import links_from_scene

    report_links, structured = links_from_scene(document_node)
    document = AnnotationDocument(header["task_id"], header["template"]["id"], header["template"]["version"], image,
                                  tuple(found[i] for i in order), header["metadata"], report_links, structured)
    if report_links is not None:  # the targets' cross_modal_links follow a link re-anchored in the scene
        from ..links import ReportLinks, with_report_links

        document = with_report_links(document, ReportLinks.from_dict(report_links))
    return document, masks


def _box_from_roi(roi: Any, grid: ImageGeometry, dims: int, exact_centre: Optional[List[float]] = None
                  ) -> Dict[str, Any]:
    full = numpy_matrix(roi.GetObjectToNodeMatrix())
    centre_ras = full[:3, 3]
    if exact_centre is not None and np.array_equal(np.float32(exact_centre), np.float32(centre_ras)):
        centre_ras = np.asarray(exact_centre, dtype=np.float64)  # not moved since it was written
    centre = grid.ras_to_ijk(centre_ras)
    matrix = full[:3, :3]
    size_mm = np.asarray(roi.GetSize(), dtype=float)
    # size along each ROI axis, expressed along the image axes (the ROI is oriented along them)
    axes = _box_axes_ras(grid)
    extent = np.abs(axes.T @ matrix) @ size_mm / np.asarray(grid.spacing_mm)
    low, high = centre - extent / 2.0, centre + extent / 2.0
    if dims == 2:
        return {"bbox": [float(low[0]), float(low[1]), float(high[0]), float(high[1])],
                "slice_index": round(float(centre[2]))}
    return {"bbox": [float(v) for v in (*low, *high)]}
