"""Scenarios of QCMetrics that need a scene: the geometry read-out of a volume node, and the
comparison of two segmentations into a table node.

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


def _oblique_grid() -> Any:
    from RTSSBridgeLib.geometry import ImageGeometry

    c, s = math.cos(math.radians(25.0)), math.sin(math.radians(25.0))
    return ImageGeometry((40, 32, 18), (0.8, 0.9, 2.0), (12.0, -30.0, 40.0),
                         ((c, -s, 0.0), (s, c, 0.0), (0.0, 0.0, 1.0)))


def _labelmaps() -> Tuple[np.ndarray, np.ndarray]:
    grid = _oblique_grid()
    ref = np.zeros(grid.array_shape, dtype=np.uint8)
    ref[3:14, 5:27, 6:34] = 1
    ref[6:9, 10:14, 12:16] = 2
    ref[10:12, 20:23, 26:29] = 3
    test = np.zeros_like(ref)
    test[4:14, 5:27, 7:35] = 1
    test[6:9, 10:14, 13:17] = 2  # the second lesion is missed
    return ref, test


def scenario_compare_segmentations_into_a_table(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """Two segmentation nodes (shared labelmaps on an oblique grid, as the Segment Editor keeps them)
    are read through the adapter and compared; the numbers equal the core's on the same arrays, the
    table node lists every registry metric with its title and unit, and the missed lesion's row is
    flagged for special review (R-10.2)."""
    del workdir
    from QCMetricsLib.compare import compare_volumes, labeled_volume_from_arrays
    from QCMetricsLib.metrics import PAIR_METRICS
    from QCMetricsLib.mrml.segmentations import labeled_volume_from_node, segmentation_node_from_labelmap
    from QCMetricsLib.mrml.tables import flagged_rows, table_node_from_result

    grid = _oblique_grid()
    ref, test = _labelmaps()
    names = {1: "liver", 2: "lesion 1", 3: "lesion 2"}
    ref_node = segmentation_node_from_labelmap(scene, ref, grid, names, "reader A")
    test_node = segmentation_node_from_labelmap(scene, test, grid, {1: "liver", 2: "lesion 1"}, "reader B")
    ref_volume = labeled_volume_from_node(ref_node)
    if not ref_volume.geometry.isclose(grid, 1e-6):
        raise AssertionError(f"segment grid {ref_volume.geometry} differs from the one written {grid}")
    result = compare_volumes(ref_volume, labeled_volume_from_node(test_node)).result
    core = compare_volumes(labeled_volume_from_arrays(ref, grid, names),
                           labeled_volume_from_arrays(test, grid, names)).result
    for a, b in zip(result["labels"], core["labels"]):
        for key in ("dice", "hausdorff_mm", "hausdorff95_mm", "mean_surface_distance_mm", "tp", "fp", "fn"):
            if a[key] != b[key] and not (a[key] is not None and b[key] is not None and abs(a[key] - b[key]) < 1e-9):
                raise AssertionError(f"{a['label']} {key}: scene {a[key]} != core {b[key]}")
    node = table_node_from_result(scene, result)
    table = node.GetTable()
    if table.GetNumberOfRows() != 3 or table.GetNumberOfColumns() != len(PAIR_METRICS) + 3:
        raise AssertionError(f"table has {table.GetNumberOfRows()} rows, {table.GetNumberOfColumns()} columns")
    labels = [table.GetColumnByName("label").GetValue(r) for r in range(3)]
    if flagged_rows(node) != [labels.index("lesion 2")]:
        raise AssertionError(f"flagged rows {flagged_rows(node)}, labels {labels}")
    if node.GetColumnUnitLabel("hausdorff95_mm") != "mm" or "95th" not in node.GetColumnLongName("hausdorff95_mm"):
        raise AssertionError("column unit/title not taken from the registry")
    dice = table.GetColumnByName("dice").GetValue(labels.index("liver"))
    if abs(dice - result["labels"][labels.index("liver")]["dice"]) > 1e-12:
        raise AssertionError(f"table Dice {dice} differs from the result")


def scenario_labelmap_volume_node_is_an_input_too(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """A labelmap volume node (names from its colour table) compares like a segmentation."""
    del workdir
    from QCMetricsLib.compare import compare_volumes
    from QCMetricsLib.mrml.segmentations import labeled_volume_from_node, segmentation_node_from_labelmap
    from RTSSBridgeLib.mrml.volumes import volume_node_from_array

    grid = _oblique_grid()
    ref, _ = _labelmaps()
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    volume_node_from_array(scene, ref, grid, "labels", node=node)
    volume = labeled_volume_from_node(node)
    if [e.value for e in volume.labels] != [1, 2, 3] or not volume.geometry.isclose(grid, 1e-6):
        raise AssertionError(f"labelmap node read as {volume.labels} on {volume.geometry}")
    names = {e.value: e.name for e in volume.labels}  # the colour table's names; segments matched by name
    seg = labeled_volume_from_node(segmentation_node_from_labelmap(scene, ref, grid, names, "same"))
    result = compare_volumes(volume, seg).result
    if [e["dice"] for e in result["labels"]] != [1.0, 1.0, 1.0]:
        raise AssertionError(f"same labels differ: {[e['dice'] for e in result['labels']]}")
    try:
        labeled_volume_from_node(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "not labels"))
    except ValueError as exc:
        if "segmentation or a labelmap" not in str(exc):
            raise AssertionError(f"unexpected message {exc}") from exc
    else:
        raise AssertionError("a scalar volume was accepted as annotation")


def scenarios() -> Dict[str, Callable[[Any, Any], None]]:
    """Every ``scenario_*`` function of this module by name, in definition order."""
    return {name[len("scenario_"):]: func for name, func in globals().items()
            if name.startswith("scenario_") and callable(func)}
