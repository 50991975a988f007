"""Scenarios of QCMetrics that need a scene: the geometry read-out of a volume node.

QCMetrics' panel shows the voxel grid of any volume in the scene (loaded by Slicer's own
readers, by RTSSBridge, or made by another module) through
:func:`RTSSBridgeLib.mrml.volumes.geometry_from_volume_node`, the one home of that conversion.
Here the nodes are built with plain VTK and MRML calls, the way Slicer's readers leave them,
and the read-out is compared with values worked out by hand.

Each ``scenario_<name>(scene, workdir)`` raises ``AssertionError`` on failure; the same functions
run in pytest (``Testing/test_scenarios.py``) and in ``QCMetricsTest.runTest`` inside Slicer.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, Sequence, Tuple

import numpy as np
import vtk

from RTSSBridgeLib.mrml.volumes import geometry_from_volume_node


def _node_with_ijk_to_ras(scene: Any, class_name: str, dimensions: Tuple[int, int, int],
                          ijk_to_ras: np.ndarray, name: str) -> Any:
    node = scene.AddNewNodeByClass(class_name, name)
    image = vtk.vtkImageData()
    image.SetDimensions(*dimensions)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    image.GetPointData().GetScalars().Fill(0)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(ijk_to_ras[r, c]))
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveImageData(image)
    return node


def _close(actual: Sequence[float], expected: Sequence[float], tol: float = 1e-9) -> bool:
    return len(actual) == len(expected) and all(abs(a - e) <= tol for a, e in zip(actual, expected))


def scenario_geometry_readout_axial_and_oblique(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """Shape, spacing, LPS origin, direction, axis codes and obliqueness of three volume nodes.

    * an axial grid as Slicer's DICOM reader leaves it (IJKToRAS = diag(-sx, -sy, sz)):
      LPS axes, not oblique;
    * a sagittal labelmap (i -> anterior, j -> inferior, k -> left): axis codes "AIL";
    * an oblique grid rotated 30 degrees about the superior axis: oblique, codes "LPS"
      (each axis still points mostly along its patient axis).
    """
    del workdir  # nothing is written to disk
    axial = np.diag([-0.7, -0.7, 2.5, 1.0])
    axial[:3, 3] = [120.0, 95.5, -300.0]  # RAS of voxel (0, 0, 0)
    node = _node_with_ijk_to_ras(scene, "vtkMRMLScalarVolumeNode", (5, 4, 3), axial, "axial")
    g = geometry_from_volume_node(node)
    if g.shape != (5, 4, 3):
        raise AssertionError(f"axial: shape {g.shape} != (5, 4, 3)")
    if not _close(g.spacing_mm, (0.7, 0.7, 2.5)):
        raise AssertionError(f"axial: spacing {g.spacing_mm} != (0.7, 0.7, 2.5)")
    if not _close(g.origin_lps, (-120.0, -95.5, -300.0)):
        raise AssertionError(f"axial: LPS origin {g.origin_lps} != (-120.0, -95.5, -300.0) (RAS x and y negated)")
    if not np.allclose(g.direction_matrix, np.eye(3), atol=1e-12):
        raise AssertionError(f"axial: direction {g.direction} is not the LPS identity")
    if g.axis_codes() != "LPS" or g.is_oblique():
        raise AssertionError(f"axial: axis codes {g.axis_codes()} / oblique {g.is_oblique()}, expected LPS / False")

    # sagittal: i along anterior (RAS +y), j along inferior (RAS -z), k along left (RAS -x)
    sagittal = np.zeros((4, 4))
    sagittal[:3, 0] = [0.0, 0.9, 0.0]
    sagittal[:3, 1] = [0.0, 0.0, -0.9]
    sagittal[:3, 2] = [-4.0, 0.0, 0.0]
    sagittal[:, 3] = [10.0, -20.0, 60.0, 1.0]
    node = _node_with_ijk_to_ras(scene, "vtkMRMLLabelMapVolumeNode", (6, 6, 2), sagittal, "sagittal labels")
    g = geometry_from_volume_node(node)
    if g.axis_codes() != "AIL" or g.is_oblique():
        raise AssertionError(f"sagittal: axis codes {g.axis_codes()} / oblique {g.is_oblique()}, expected AIL / False")
    if not _close(g.spacing_mm, (0.9, 0.9, 4.0)):
        raise AssertionError(f"sagittal: spacing {g.spacing_mm} != (0.9, 0.9, 4.0)")
    if not _close(g.origin_lps, (-10.0, 20.0, 60.0)):
        raise AssertionError(f"sagittal: LPS origin {g.origin_lps} != (-10.0, 20.0, 60.0)")

    angle = math.radians(30.0)
    rot_lps = np.array([[math.cos(angle), -math.sin(angle), 0.0],
                        [math.sin(angle), math.cos(angle), 0.0],
                        [0.0, 0.0, 1.0]])
    oblique = np.eye(4)
    oblique[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rot_lps @ np.diag([1.2, 0.8, 3.0])
    oblique[:3, 3] = [-5.0, 7.0, 9.0]
    node = _node_with_ijk_to_ras(scene, "vtkMRMLScalarVolumeNode", (3, 3, 3), oblique, "oblique")
    g = geometry_from_volume_node(node)
    if not g.is_oblique() or g.axis_codes() != "LPS":
        raise AssertionError(f"oblique: axis codes {g.axis_codes()} / oblique {g.is_oblique()}, expected LPS / True")
    if not np.allclose(g.direction_matrix, rot_lps, atol=1e-12):
        raise AssertionError(f"oblique: direction {g.direction} != the 30 degree rotation")
    if not _close(g.spacing_mm, (1.2, 0.8, 3.0)):
        raise AssertionError(f"oblique: spacing {g.spacing_mm} != (1.2, 0.8, 3.0)")


def scenario_geometry_readout_refuses_empty_volume(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """A volume node without image data has no geometry: the read-out says so instead of guessing."""
    del workdir
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    try:
        geometry_from_volume_node(node)
    except ValueError as exc:
        if "no image data" not in str(exc):
            raise AssertionError(f"unexpected message for a volume without image data: {exc}") from exc
        return
    raise AssertionError("geometry_from_volume_node accepted a volume node without image data")


def scenarios() -> Dict[str, Callable[[Any, Any], None]]:
    """Every ``scenario_*`` function of this module by name, in definition order."""
    return {name[len("scenario_"):]: func for name, func in globals().items()
            if name.startswith("scenario_") and callable(func)}
