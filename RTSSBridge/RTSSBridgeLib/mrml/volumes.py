"""Scene adapter: volumes <-> ``vtkMRMLScalarVolumeNode`` / ``vtkMRMLVectorVolumeNode``.

The node's IJKToRAS is the core geometry's :meth:`~RTSSBridgeLib.geometry.ImageGeometry.ijk_to_ras_matrix`
(no conversion is written here), and voxels are copied from the ``[k, j, i]`` array in the
order vtkImageData stores them (i fastest), which is the same memory layout. Runs unchanged
inside Slicer and against the slicer-core wheel; never uses ``slicer.app``, ``slicer.util``
loaders or Qt.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..dicom_series import DicomVolume
from ..geometry import ImageGeometry
from ..nifti import NiftiImage

#: Attribute names written on volume nodes (Slicer's own DICOM plugin uses DICOM.instanceUIDs).
ATTR_INSTANCE_UIDS = "DICOM.instanceUIDs"
ATTR_PREFIX = "MultiModalAnnotation."
ATTR_SERIES_UID = ATTR_PREFIX + "SeriesInstanceUID"
ATTR_STUDY_UID = ATTR_PREFIX + "StudyInstanceUID"
ATTR_MODALITY = ATTR_PREFIX + "Modality"
ATTR_FRAME_OF_REFERENCE = ATTR_PREFIX + "FrameOfReferenceUID"
ATTR_SOURCE = ATTR_PREFIX + "Source"


def vtk_matrix(array: Any) -> Any:
    """A 4x4 numpy array as a ``vtkMatrix4x4`` (the one place MRML matrices are built)."""
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r, c]))
    return m


def numpy_matrix(matrix: Any) -> np.ndarray:
    """A ``vtkMatrix4x4`` as a 4x4 float64 numpy array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def volume_node_from_array(
    scene: Any,
    voxels: np.ndarray,
    geometry: ImageGeometry,
    name: str,
    attributes: Optional[Dict[str, str]] = None,
    node: Any = None,
) -> Any:
    """Create (or fill) a volume node holding ``voxels`` ([k, j, i] or [k, j, i, c]) on ``geometry``.

    A 4-D array with 3 or 4 components becomes a ``vtkMRMLVectorVolumeNode``.
    """
    arr = np.ascontiguousarray(voxels)
    if arr.shape[:3] != geometry.array_shape:
        raise ValueError(f"voxels: shape {list(arr.shape)} does not match the geometry "
                         f"[k, j, i] = {list(geometry.array_shape)}")
    components = 1 if arr.ndim == 3 else int(arr.shape[3])
    if node is None:
        node_class = "vtkMRMLVectorVolumeNode" if components > 1 else "vtkMRMLScalarVolumeNode"
        node = scene.AddNewNodeByClass(node_class, name)
    else:
        node.SetName(name)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    image = vtk.vtkImageData()
    image.SetDimensions(*geometry.shape)
    scalars = numpy_support.numpy_to_vtk(arr.reshape(-1, components), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    node.SetIJKToRASMatrix(vtk_matrix(geometry.ijk_to_ras_matrix()))
    node.SetAndObserveImageData(image)
    for key, value in (attributes or {}).items():
        node.SetAttribute(key, str(value))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def geometry_from_volume_node(node: Any) -> ImageGeometry:
    """The core geometry of a volume node (its IJKToRAS and image dimensions)."""
    image = node.GetImageData()
    if image is None:
        raise ValueError(f"volume node {node.GetName()!r} has no image data")
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return ImageGeometry.from_ijk_to_ras_matrix(image.GetDimensions(), numpy_matrix(m))


def array_from_volume_node(node: Any) -> np.ndarray:
    """A copy of the node's voxels as ``[k, j, i]`` (``[k, j, i, c]`` for vector volumes)."""
    image = node.GetImageData()
    if image is None:
        raise ValueError(f"volume node {node.GetName()!r} has no image data")
    i, j, k = image.GetDimensions()
    scalars = image.GetPointData().GetScalars()
    arr = numpy_support.vtk_to_numpy(scalars)
    components = scalars.GetNumberOfComponents()
    shape = (k, j, i) if components == 1 else (k, j, i, components)
    return np.array(arr.reshape(shape), copy=True)


def _place_in_subject_hierarchy(scene: Any, node: Any, study_uid: str, series_uid: str) -> None:
    sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    if sh is None:
        return
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(sh.GetSceneItemID(), node)
    uid_name = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMUIDName()
    if series_uid:
        sh.SetItemUID(item, uid_name, series_uid)
    if study_uid:
        study_item = sh.GetItemByUID(uid_name, study_uid)
        if not study_item:
            study_item = sh.CreateStudyItem(sh.GetSceneItemID(), f"Study {study_uid[-8:]}")
            sh.SetItemUID(study_item, uid_name, study_uid)
        sh.SetItemParent(item, study_item)


def volume_node_from_dicom(scene: Any, volume: DicomVolume, name: Optional[str] = None) -> Any:
    """A volume node for a loaded DICOM series, named after the series and carrying its UIDs.

    Patient-identifying values are not copied to the node: a name is built from modality,
    series number and description only.
    """
    s = volume.series
    if name is None:
        parts = [p for p in (s.modality, str(s.series_number) if s.series_number is not None else "",
                             s.series_description) if p]
        name = " ".join(parts) or "DICOM volume"
        if s.n_parts > 1:
            name += f" (part {s.part} of {s.n_parts})"
    attributes = {
        ATTR_INSTANCE_UIDS: " ".join(f.sop_instance_uid for f in s.frames),
        ATTR_SERIES_UID: s.series_uid,
        ATTR_STUDY_UID: s.study_uid,
        ATTR_MODALITY: s.modality,
        ATTR_FRAME_OF_REFERENCE: s.frame_of_reference_uid,
        ATTR_SOURCE: "DICOM",
    }
    node = volume_node_from_array(scene, volume.voxels, volume.geometry, name, attributes)
    _place_in_subject_hierarchy(scene, node, s.study_uid, s.series_uid)
    return node


def volume_node_from_nifti(scene: Any, image: NiftiImage, name: Optional[str] = None, label_map: bool = False) -> Any:
    """A volume node (or a labelmap volume node) for a NIfTI image."""
    if name is None:
        base = os.path.basename(image.path)
        name = base[:-7] if base.endswith(".nii.gz") else os.path.splitext(base)[0]
    if label_map:
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
        volume_node_from_array(scene, image.voxels, image.geometry, name, {ATTR_SOURCE: "NIfTI"}, node=node)
        return node
    return volume_node_from_array(scene, image.voxels, image.geometry, name, {ATTR_SOURCE: "NIfTI"})
