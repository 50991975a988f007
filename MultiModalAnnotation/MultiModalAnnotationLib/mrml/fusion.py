"""Scene adapter: registration results -> ``vtkMRMLLinearTransformNode`` (R-8.4.1).

Direction. A registration maps a fixed (reference) point to the moving point of the same anatomy,
``p_moving = M p_fixed`` (ITK; ``matrix_lps``). In MRML a transform node placed as the *parent*
of the moving volume shows that volume in the world (reference) frame; its *transform to parent*
maps the volume's own coordinates (moving) to the world (fixed), so it is ``M^-1``, and its
*transform from parent* is ``M`` itself - which is also how Slicer stores an ITK transform file it
reads. Coordinates are RAS in the scene: ``matrix_ras = F M F`` (F flips x and y; the conversion
is :func:`RTSSBridgeLib.geometry.lps_map_to_ras`, the only one used).

Deformable (B-spline) results are read from their file (:func:`transform_node_from_file`, a
``vtkMRMLTransformNode`` through MRML's transform storage node); :func:`transform_node_from_result`
builds linear nodes only.
Never uses slicer.app, slicer.util loaders or Qt.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Dict, List, Optional

import numpy as np
import vtk

from RTSSBridgeLib.geometry import lps_map_to_ras, ras_map_to_lps
from RTSSBridgeLib.mrml.volumes import ATTR_PREFIX, numpy_matrix, vtk_matrix

ATTR_DIRECTION = ATTR_PREFIX + "TransformDirection"
ATTR_TRANSFORM_FILE = ATTR_PREFIX + "TransformFile"
ATTR_MODE = ATTR_PREFIX + "RegistrationMode"
#: On a moving volume: JSON of its fusion guard (reference name, threshold, registration state).
ATTR_GUARD = ATTR_PREFIX + "FusionGuard"
ATTR_REGISTERED_FROM = ATTR_PREFIX + "RegisteredFrom"




def transform_node_from_matrix(scene: Any, matrix_lps: Any, name: str, node: Any = None,
                               transform_file: str = "", mode: str = "rigid") -> Any:
    """A linear transform node whose transform-from-parent is the fixed -> moving map (RAS)."""
    m = np.asarray(matrix_lps, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"matrix_lps: must be a finite 4x4 matrix, got shape {m.shape}")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformFromParent(vtk_matrix(lps_map_to_ras(m)))
    node.SetAttribute(ATTR_DIRECTION, "fixed_to_moving (transform from parent)")
    node.SetAttribute(ATTR_MODE, mode)
    if transform_file:
        node.SetAttribute(ATTR_TRANSFORM_FILE, transform_file)
    return node


def transform_node_from_result(scene: Any, result: Any, name: str, moving_volume: Any = None,
                               transform_file: str = "") -> Any:
    """Node for a :class:`~MultiModalAnnotationLib.fusion.registration.RegistrationResult`; when
    ``moving_volume`` is given it is placed under the node (displayed in the reference frame)."""
    if getattr(result, "deformable", False):
        raise ValueError("a B-spline result has no linear transform node; load its file in Slicer instead")
    node = transform_node_from_matrix(scene, result.matrix_lps, name, transform_file=transform_file,
                                      mode=result.mode)
    if moving_volume is not None:
        moving_volume.SetAndObserveTransformNodeID(node.GetID())
    return node


def transform_node_from_file(scene: Any, path: str, name: str = "") -> Any:
    """Read an ITK transform file (``.h5``/``.tfm``) into a new transform node with MRML's own
    transform storage node, as Slicer's Add Data does: a linear file gives a
    ``vtkMRMLLinearTransformNode``, a deformable one (rigid + B-spline composite) a
    ``vtkMRMLTransformNode``; either way the transform from parent is the file's fixed -> moving map."""
    from ..fusion.registration import read_transform

    try:
        import SimpleITK as sitk

        parts = read_transform(path)
        composite = isinstance(parts, sitk.CompositeTransform)
        items = [parts.GetNthTransform(n) for n in range(parts.GetNumberOfTransforms())] if composite else [parts]
        linear = all(hasattr(t.Downcast(), "GetMatrix") or t.GetName() in ("TranslationTransform", "IdentityTransform")
                     for t in items)
    except Exception:  # MRML decides below (and reports an unreadable file)
        linear = True
    storage = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
    storage.SetFileName(str(path))
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode" if linear else "vtkMRMLTransformNode",
                                   name or str(path).rsplit("/", 1)[-1])
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise ValueError(f"{path}: not a transform file MRML can read")
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.SetAttribute(ATTR_TRANSFORM_FILE, str(path))
    return node


def matrix_lps_of_node(node: Any) -> np.ndarray:
    """The fixed -> moving LPS matrix a linear transform node holds (inverse of :func:`transform_node_from_matrix`)."""
    m = vtk.vtkMatrix4x4()
    node.GetMatrixTransformFromParent(m)
    return ras_map_to_lps(numpy_matrix(m))


def fixed_to_moving_ras(node: Any, points_ras: Any) -> np.ndarray:
    """Map world (reference) RAS points to the moving volume's RAS coordinates through the node."""
    transform = node.GetTransformFromParent()
    pts = np.asarray(points_ras, dtype=np.float64).reshape(-1, 3)
    return np.array([transform.TransformPoint(tuple(float(v) for v in p)) for p in pts])


def harden_resampled(scene: Any, fixed_volume: Any, moving_volume: Any, name: Optional[str] = None) -> Any:
    """A new scalar volume: the moving volume resampled onto the reference volume's grid through
    its parent transform (the registered image annotations are drawn on, 8.4.1.4)."""
    from RTSSBridgeLib.mrml.volumes import array_from_volume_node, geometry_from_volume_node, volume_node_from_array

    from ..fusion.images import FusionImage
    from ..fusion.registration import matrix_to_affine_transform, resample_onto

    parent = moving_volume.GetParentTransformNode()
    if parent is None:
        raise ValueError(f"{moving_volume.GetName()} has no transform: register it first")
    fixed = FusionImage(array_from_volume_node(fixed_volume), geometry_from_volume_node(fixed_volume))
    moving = FusionImage(array_from_volume_node(moving_volume), geometry_from_volume_node(moving_volume))
    out = resample_onto(fixed, moving, matrix_to_affine_transform(matrix_lps_of_node(parent)))
    return volume_node_from_array(scene, out.voxels, fixed.geometry, name or f"{moving_volume.GetName()} registered",
                                  attributes={ATTR_REGISTERED_FROM: moving_volume.GetID()})


def register_volume_nodes(scene: Any, reference_volume: Any, moving_volume: Any, transform_path: str,
                          mode: str = "rigid", threshold_mm: float = 3.0, residual: bool = True) -> Any:
    """Register ``moving_volume`` onto ``reference_volume`` (the panel's Register button): write the
    transform file, add the transform node with the moving volume under it, measure the image
    residual and decide the guard (8.4.1.4). Returns ``(transform node, result JSON, guard decision)``."""
    from RTSSBridgeLib.mrml.volumes import ATTR_MODALITY, array_from_volume_node, geometry_from_volume_node

    from ..fusion.accuracy import image_residual
    from ..fusion.guard import FusionGuard, RegistrationState
    from ..fusion.images import FusionImage
    from ..fusion.registration import RegistrationParameters, register, write_transform

    if reference_volume is None or moving_volume is None:
        raise ValueError("choose the reference and the moving volume")
    if reference_volume.GetID() == moving_volume.GetID():
        raise ValueError("the moving volume is the reference itself")
    fixed = FusionImage(array_from_volume_node(reference_volume), geometry_from_volume_node(reference_volume),
                        modality=reference_volume.GetAttribute(ATTR_MODALITY) or "")
    moving = FusionImage(array_from_volume_node(moving_volume), geometry_from_volume_node(moving_volume),
                         modality=moving_volume.GetAttribute(ATTR_MODALITY) or "")
    result = register(fixed, moving, RegistrationParameters(mode=mode))
    write_transform(result.transform, transform_path)
    data = result.to_dict()
    data["transform_file"] = transform_path
    state = RegistrationState(moving_volume.GetName(), transform_file=transform_path)
    if residual:
        r = image_residual(fixed, moving, result.transform)
        data["residual_translation_mm"] = r.translation_mm
        data["residual_rotation_deg"] = r.rotation_deg
        state.residual_translation_mm = r.translation_mm
        state.residual_rotation_deg = r.rotation_deg
    name = f"{moving_volume.GetName()} to {reference_volume.GetName()}"
    if result.deformable:
        node = transform_node_from_file(scene, transform_path, name)
        moving_volume.SetAndObserveTransformNodeID(node.GetID())
    else:
        node = transform_node_from_result(scene, result, name, moving_volume, transform_file=transform_path)
    guard = FusionGuard(reference=reference_volume.GetName(), threshold_mm=threshold_mm,
                        moving=[moving_volume.GetName()])
    guard.record(state)
    moving_volume.SetAttribute(ATTR_GUARD, json.dumps({"reference": guard.reference, "threshold_mm": guard.threshold_mm,
                                                       "state": asdict(state)}))
    return node, data, guard.decide(moving_volume.GetName())


def _guard_of(volume: Any) -> Any:
    """(FusionGuard, series key) stored on a registered moving volume by :func:`register_volume_nodes`,
    or None when the volume was never registered."""
    from ..fusion.guard import FusionGuard, RegistrationState

    text = volume.GetAttribute(ATTR_GUARD) if volume is not None else None
    if not text:
        return None
    data = json.loads(text)
    state = RegistrationState(**data["state"])
    guard = FusionGuard(reference=data["reference"], threshold_mm=float(data["threshold_mm"]),
                        moving=[state.series_key])
    guard.record(state)
    return guard, state.series_key


def annotation_guard(scene: Any, volume: Any) -> Any:
    """The fusion guard's decision (8.4.1.4) for starting annotation on ``volume``:

    * a registered copy (made by :func:`harden_resampled`) - the decision of its moving volume's
      registration (refused when it is unverified or fails the threshold);
    * a moving volume on its own grid (under a registration transform, or registered before) - refused:
      annotate its registered copy;
    * any other volume - it is the reference the annotations are drawn on.
    """
    from ..fusion.guard import GuardDecision

    if volume is None:
        raise ValueError("choose the image the annotations are drawn on")
    source_id = volume.GetAttribute(ATTR_REGISTERED_FROM)
    if source_id:
        source = scene.GetNodeByID(source_id)
        stored = _guard_of(source)
        if stored is None:
            return GuardDecision(volume.GetName(), False, f"{volume.GetName()} was resampled from a volume with no "
                                 "recorded registration; register the moving image first (R-8.4.1.4)", "unregistered")
        guard, key = stored
        return guard.decide(key, on_registered_image=True)
    stored = _guard_of(volume)
    if stored is not None:
        guard, key = stored
        return guard.decide(key, on_registered_image=False)
    if volume.GetParentTransformNode() is not None:
        return GuardDecision(volume.GetName(), False, f"{volume.GetName()} is displayed through a transform with no "
                             "recorded registration error; register it from the Fusion section (R-8.4.1.4)",
                             "unverified")
    return GuardDecision(volume.GetName(), True, f"{volume.GetName()} is the reference image", "reference")


def segment_consistency(scene: Any, reference_volume: Any, reference_segmentation: Any, other_segmentation: Any,
                        other_volume: Any = None, threshold_mm: float = 3.0) -> List[Any]:
    """Cross-modality consistency (8.4.1.5) of every structure (segment name) annotated in both
    segmentations. The reference segmentation is on ``reference_volume``'s grid; the other one is
    either in the reference frame (drawn on a registered copy) or, when it sits under a registration
    transform, on ``other_volume``'s grid (mapped through the transform). Returns ConsistencyResults."""
    from RTSSBridgeLib.mrml.volumes import geometry_from_volume_node

    from ..fusion.consistency import consistency_check
    from ..fusion.registration import matrix_to_affine_transform
    from .documents import _segment_mask

    if reference_volume is None or reference_segmentation is None or other_segmentation is None:
        raise ValueError("choose the reference image and the two segmentations to compare")
    if reference_segmentation.GetID() == other_segmentation.GetID():
        raise ValueError("the two segmentations are the same node; choose the annotation of the other modality")
    ref_grid = geometry_from_volume_node(reference_volume)
    parent = other_segmentation.GetParentTransformNode()
    transform = None
    other_grid = ref_grid
    if parent is not None:
        if other_volume is None:
            raise ValueError(f"{other_segmentation.GetName()} is under a transform: choose the moving image it was "
                             "drawn on")
        other_grid = geometry_from_volume_node(other_volume)
        transform = matrix_to_affine_transform(matrix_lps_of_node(parent))

    def segments(node: Any) -> Dict[str, str]:
        seg = node.GetSegmentation()
        ids = [seg.GetNthSegmentID(n) for n in range(seg.GetNumberOfSegments())]
        return {seg.GetSegment(i).GetName(): i for i in ids}

    ref_segments, other_segments = segments(reference_segmentation), segments(other_segmentation)
    common = [name for name in ref_segments if name in other_segments]
    results = []
    for name in common:
        ref_mask = _segment_mask(reference_segmentation, ref_segments[name], ref_grid)
        other_mask = _segment_mask(other_segmentation, other_segments[name], other_grid)
        if not ref_mask.any() or not other_mask.any():
            continue  # a structure painted in one modality only is not a pair to compare
        results.append(consistency_check(name, ref_mask, ref_grid, other_mask, other_grid, transform,
                                         threshold_mm=threshold_mm, reference_series=reference_segmentation.GetName(),
                                         other_series=other_segmentation.GetName()))
    if not results:
        raise ValueError(f"no structure is painted in both {reference_segmentation.GetName()} and "
                         f"{other_segmentation.GetName()} (segments are matched by name)")
    return results
