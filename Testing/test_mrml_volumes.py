"""Scene adapter for volumes on a real MRML scene (slicer-core): IJKToRAS equals the DICOM
geometry (LPS -> RAS) within 1e-6, voxels are copied exactly, attributes carry the UIDs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from RTSSBridgeLib.dicom_series import read_volume, scan_dicom
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.nifti import read_nifti, write_nifti
from RTSSBridgeLib.samples.dicom_writer import PixelEncoding, write_volume_series

from .test_dicom_series import OBLIQUE, phantom
from .test_geometry import FEET_FIRST

slicer = pytest.importorskip("slicer", reason="slicer-core has no wheel for this Python (3.9 CI leg)")
pytestmark = pytest.mark.slicer


@pytest.fixture
def scene() -> Any:
    return slicer.vtkMRMLScene()


def ijk_to_ras_of(node: Any) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


@pytest.mark.parametrize("geometry", [OBLIQUE, FEET_FIRST.with_shape((30, 20, 7))], ids=["oblique", "feet_first"])
def test_dicom_volume_node_has_exact_geometry_and_voxels(scene: Any, tmp_path: Path, geometry: ImageGeometry) -> None:
    from RTSSBridgeLib.mrml.volumes import (
        ATTR_FRAME_OF_REFERENCE,
        ATTR_INSTANCE_UIDS,
        ATTR_MODALITY,
        ATTR_SERIES_UID,
        array_from_volume_node,
        geometry_from_volume_node,
        volume_node_from_dicom,
    )

    enc = PixelEncoding(16, 12, 0, rescale=True, rescale_intercept=-1024.0)
    write_volume_series(tmp_path, geometry, phantom(geometry, -1024, 2000), "CT", encoding=enc)
    series = scan_dicom(tmp_path).series[0]
    volume = read_volume(series)
    node = volume_node_from_dicom(scene, volume)
    # IJKToRAS is the DICOM geometry flipped to RAS, to 1e-6
    np.testing.assert_allclose(ijk_to_ras_of(node), series.geometry.ijk_to_ras_matrix(), atol=1e-6, rtol=0)
    lps_first_voxel = np.asarray(series.frames[0].position)
    ras = ijk_to_ras_of(node) @ np.array([0, 0, 0, 1.0])
    np.testing.assert_allclose(ras[:3], lps_first_voxel * [-1, -1, 1], atol=1e-6)
    assert geometry_from_volume_node(node).max_corner_distance_mm(series.geometry) < 1e-6
    np.testing.assert_array_equal(array_from_volume_node(node), volume.voxels)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), volume.voxels)  # Slicer's own view agrees
    assert node.GetAttribute(ATTR_SERIES_UID) == series.series_uid
    assert node.GetAttribute(ATTR_MODALITY) == "CT"
    assert node.GetAttribute(ATTR_FRAME_OF_REFERENCE) == series.frame_of_reference_uid
    assert node.GetAttribute(ATTR_INSTANCE_UIDS).split() == [f.sop_instance_uid for f in series.frames]
    assert series.series_description in node.GetName() or node.GetName().startswith("CT")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = sh.GetItemByDataNode(node)
    assert sh.GetItemUID(item, "DICOM") == series.series_uid
    assert sh.GetItemUID(sh.GetItemParent(item), "DICOM") == series.study_uid


def test_nifti_volume_and_labelmap_nodes(scene: Any, tmp_path: Path) -> None:
    from RTSSBridgeLib.mrml.volumes import array_from_volume_node, geometry_from_volume_node, volume_node_from_nifti

    labels = np.zeros(OBLIQUE.array_shape, np.uint8)
    labels[3:6, 10:20, 5:9] = 4
    path = write_nifti(tmp_path / "labels.nii.gz", labels, OBLIQUE, label_map=True)
    image = read_nifti(path)
    node = volume_node_from_nifti(scene, image, label_map=True)
    assert node.IsA("vtkMRMLLabelMapVolumeNode") and node.GetName() == "labels"
    assert geometry_from_volume_node(node).max_corner_distance_mm(image.geometry) < 1e-6
    np.testing.assert_array_equal(array_from_volume_node(node), labels)


def test_vector_volume_for_colour(scene: Any) -> None:
    from RTSSBridgeLib.mrml.volumes import array_from_volume_node, volume_node_from_array

    g = ImageGeometry((30, 20, 1), (0.1, 0.125, 1.0))
    rgb = np.random.default_rng(0).integers(0, 255, size=(1, 20, 30, 3), dtype=np.uint8)
    node = volume_node_from_array(scene, rgb, g, "US")
    assert node.IsA("vtkMRMLVectorVolumeNode")
    np.testing.assert_array_equal(array_from_volume_node(node), rgb)


def test_shape_mismatch_is_refused(scene: Any) -> None:
    from RTSSBridgeLib.mrml.volumes import volume_node_from_array

    with pytest.raises(ValueError, match="does not match the geometry"):
        volume_node_from_array(scene, np.zeros((2, 3, 4)), ImageGeometry((4, 3, 3), (1, 1, 1)), "x")
