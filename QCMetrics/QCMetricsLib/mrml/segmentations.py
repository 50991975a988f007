"""Scene adapter: segmentation and labelmap nodes -> :class:`QCMetricsLib.readers.LabeledVolume`.

A segment's binary labelmap is a ``vtkOrientedImageData`` whose ImageToWorldMatrix maps its extent
indices to RAS; the grid is rebuilt with :meth:`ImageGeometry.from_ijk_to_ras_matrix` (the one
geometry home) after moving the origin to the first voxel of the extent. Segments that share one
labelmap (Slicer's shared layers) are told apart by their label value. All segments are placed on
the union of their extents (same orientation and spacing, as Slicer keeps them); a segment on
another grid is resampled by nearest neighbour. MRML and VTK only: no Qt, no ``slicer.util``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.mrml.volumes import array_from_volume_node, geometry_from_volume_node, vtk_matrix

from ..readers import LabeledVolume, LabelEntry
from ..resample import resample_array, same_grid

#: Segment tag holding the template code of a segment (written by MultiModalAnnotation).
CODE_TAG = "MultiModalAnnotation.LabelCode"


def _binary_name() -> str:
    return str(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())


def _matrix(m: Any) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)



def oriented_image_geometry(image: Any) -> ImageGeometry:
    """The grid of a ``vtkOrientedImageData`` (its extent, not index 0)."""
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    ijk_to_ras = _matrix(m)
    e = image.GetExtent()
    shift = np.eye(4)
    shift[:3, 3] = [e[0], e[2], e[4]]
    dims = (e[1] - e[0] + 1, e[3] - e[2] + 1, e[5] - e[4] + 1)
    return ImageGeometry.from_ijk_to_ras_matrix(dims, ijk_to_ras @ shift)


def oriented_image_array(image: Any) -> np.ndarray:
    """A copy of the voxels ``[k, j, i]`` over the image's extent."""
    e = image.GetExtent()
    dims = (e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
    scalars = image.GetPointData().GetScalars()
    if scalars is None or min(dims) <= 0:
        return np.zeros((max(dims[0], 0), max(dims[1], 0), max(dims[2], 0)), dtype=np.uint8)
    return np.array(numpy_support.vtk_to_numpy(scalars).reshape(dims), copy=True)


def labeled_volume_from_segmentation_node(node: Any) -> LabeledVolume:
    """Every segment of a segmentation node as one label (value = segment index + 1, name = segment
    name, code = the segment's template-code tag when present)."""
    if node is None or not node.IsA("vtkMRMLSegmentationNode"):
        raise ValueError("a segmentation node is required")
    if node.GetParentTransformNode() is not None:
        raise ValueError(f"segmentation {node.GetName()!r} is under a transform; harden it first so that both "
                         "annotations are compared in the same patient coordinates")
    segmentation = node.GetSegmentation()
    name = _binary_name()
    if segmentation.GetNumberOfSegments() and not segmentation.ContainsRepresentation(name) \
            and not segmentation.CreateRepresentation(name):
        raise ValueError(f"segmentation {node.GetName()!r} has no binary labelmap representation")
    pieces: List[tuple] = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        image = segment.GetRepresentation(name)
        tag = vtk.mutable("") if hasattr(vtk, "mutable") else None
        code: Optional[str] = None
        if tag is not None and segment.GetTag(CODE_TAG, tag):
            code = str(tag) or None
        entry = LabelEntry(index + 1, segment.GetName(), code)
        if image is None:
            pieces.append((entry, None, None))
            continue
        e = image.GetExtent()
        if e[1] < e[0] or e[3] < e[2] or e[5] < e[4]:
            pieces.append((entry, None, None))
            continue
        mask = oriented_image_array(image) == segment.GetLabelValue()
        pieces.append((entry, oriented_image_geometry(image), mask))
    grids = [g for _, g, _ in pieces if g is not None]
    if not grids:
        raise ValueError(f"segmentation {node.GetName()!r} has no segment with voxels")
    target = _union_grid(grids)
    masks: Dict[int, np.ndarray] = {}
    for entry, geometry, mask in pieces:
        full = np.zeros(target.array_shape, dtype=bool)
        if geometry is not None and mask is not None:
            offset = np.rint(target.lps_to_ijk(geometry.origin_lps)).astype(int)
            aligned = np.allclose(target.direction_matrix, geometry.direction_matrix, atol=1e-6) and \
                np.allclose(target.spacing_mm, geometry.spacing_mm, rtol=1e-6) and \
                np.allclose(target.ijk_to_lps(offset), geometry.origin_lps, atol=1e-4)
            if aligned:
                i0, j0, k0 = (int(v) for v in offset)
                full[k0:k0 + mask.shape[0], j0:j0 + mask.shape[1], i0:i0 + mask.shape[2]] = mask
            else:
                full = resample_array(mask, geometry, target)
        masks[entry.value] = full
    return LabeledVolume(node.GetName(), target, [p[0] for p in pieces], masks=masks, values_are_codes=False,
                         reader="segmentation-node")


def _union_grid(grids: List[ImageGeometry]) -> ImageGeometry:
    """The smallest grid with the first grid's orientation and spacing holding every grid."""
    base = grids[0]
    corners = np.vstack([base.lps_to_ijk(g.corners_lps()) for g in grids])
    lo = np.floor(corners.min(axis=0) + 1e-6)
    hi = np.ceil(corners.max(axis=0) - 1e-6)
    shape = tuple(int(v) for v in hi - lo + 1)
    origin = base.ijk_to_lps(lo)
    union = ImageGeometry(shape, base.spacing_mm, tuple(origin), base.direction)  # type: ignore[arg-type]
    if len(grids) == 1 and same_grid(union, base):
        return base
    return union


def labeled_volume_from_labelmap_node(node: Any) -> LabeledVolume:
    """A labelmap volume node; names from its colour table when it has one."""
    if node is None or not node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise ValueError("a labelmap volume node is required")
    geometry = geometry_from_volume_node(node)
    data = array_from_volume_node(node)
    names: Dict[int, str] = {}
    display = node.GetDisplayNode()
    colors = display.GetColorNode() if display is not None else None
    values = [int(v) for v in np.unique(data) if v != 0]
    for v in values:
        name = colors.GetColorName(v) if colors is not None else ""
        names[v] = name if name and name != "(none)" else f"label {v}"
    labels = [LabelEntry(v, names[v]) for v in values]
    return LabeledVolume(node.GetName(), geometry, labels, labelmap=data, reader="labelmap-node")


def labeled_volume_from_node(node: Any) -> LabeledVolume:
    """A segmentation node or a labelmap volume node."""
    if node is not None and node.IsA("vtkMRMLSegmentationNode"):
        return labeled_volume_from_segmentation_node(node)
    if node is not None and node.IsA("vtkMRMLLabelMapVolumeNode"):
        return labeled_volume_from_labelmap_node(node)
    raise ValueError("select a segmentation or a labelmap volume")


def segmentation_node_from_labelmap(scene: Any, labelmap: np.ndarray, geometry: ImageGeometry,
                                    names: Dict[int, str], node_name: str) -> Any:
    """A segmentation node with one segment per label value, sharing one labelmap (as Slicer's
    Segment Editor stores them). Used by tests, scenarios and the demo."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", node_name)
    segmentation = node.GetSegmentation()
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*geometry.shape)
    data = np.ascontiguousarray(labelmap, dtype=np.uint8 if int(labelmap.max(initial=0)) < 256 else np.uint16)
    scalars = numpy_support.numpy_to_vtk(data.reshape(-1), deep=True)
    image.GetPointData().SetScalars(scalars)
    image.SetImageToWorldMatrix(vtk_matrix(geometry.ijk_to_ras_matrix()))
    name = _binary_name()
    segmentation.SetSourceRepresentationName(name) if hasattr(segmentation, "SetSourceRepresentationName") \
        else segmentation.SetMasterRepresentationName(name)
    for value, label in names.items():
        segment = slicer.vtkSegment()
        segment.SetName(label)
        segment.AddRepresentation(name, image)
        segment.SetLabelValue(int(value))
        segmentation.AddSegment(segment)
    return node
