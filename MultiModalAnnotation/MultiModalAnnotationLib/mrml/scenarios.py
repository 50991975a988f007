"""Scenarios of MultiModalAnnotation that need a scene.

Annotation starts from a case on screen: its image series and the labels drawn on them must
share one voxel grid (R-5.3 spatial consistency, R-8.4.1 "annotation happens on the registered
images only"). These scenarios generate a sample case with :mod:`RTSSBridgeLib.samples`, load
it through the core readers and RTSSBridge's scene adapters, and check exactly that.

Each ``scenario_<name>(scene, workdir)`` raises ``AssertionError`` on failure; the same functions
run in pytest (``Testing/test_scenarios.py``) and in ``MultiModalAnnotationTest.runTest`` in Slicer.
Only the case folder's documented layout is relied on: ``<root>/dicom`` holds the DICOM files and
``<root>/ground_truth/*.nii.gz`` the label maps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict

import vtk

from RTSSBridgeLib.dicom_series import read_volume, scan_dicom
from RTSSBridgeLib.mrml.volumes import geometry_from_volume_node, volume_node_from_dicom, volume_node_from_nifti
from RTSSBridgeLib.nifti import read_nifti
from RTSSBridgeLib.problems import Severity

#: NIfTI-1 stores the affine as float32: at 300 mm from the origin that is a few 1e-5 mm.
LABEL_GRID_TOLERANCE_MM = 1e-3


def scenario_oblique_sample_ct_and_labels_share_one_grid(scene: Any, workdir: str | os.PathLike[str]) -> None:
    """An oblique chest CT sample: the CT volume node and the ground-truth labelmap node have the
    same voxel grid in the scene, and the labelmap is not empty."""
    from RTSSBridgeLib.samples import write_sample

    case = write_sample("ct-chest", Path(workdir) / "ct-chest", seed=7, slices=6, oblique=True)
    root = Path(case.root)
    scan = scan_dicom(str(root / "dicom"))
    if len(scan.series) != 1:
        raise AssertionError(f"expected the one CT series, found {len(scan.series)}")
    series = scan.series[0]
    errors = [p.message for p in series.problems if p.severity == Severity.ERROR]
    if errors:
        raise AssertionError(f"the sample CT was reported with errors: {errors}")
    ct_node = volume_node_from_dicom(scene, read_volume(series))
    ct_grid = geometry_from_volume_node(ct_node)
    if not ct_grid.is_oblique():
        raise AssertionError(f"the oblique sample loaded on a non-oblique grid ({ct_grid.axis_codes()})")

    label_files = sorted((root / "ground_truth").glob("*.nii.gz"))
    if not label_files:
        raise AssertionError(f"no ground-truth label map in {root / 'ground_truth'}")
    for path in label_files:
        label_node = volume_node_from_nifti(scene, read_nifti(path), label_map=True)
        if not label_node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise AssertionError(f"{path.name}: loaded as {label_node.GetClassName()}, not as a labelmap")
        distance = geometry_from_volume_node(label_node).max_corner_distance_mm(ct_grid)
        if distance > LABEL_GRID_TOLERANCE_MM:
            raise AssertionError(f"{path.name}: label grid is {distance:.3g} mm away from the CT grid "
                                 f"(> {LABEL_GRID_TOLERANCE_MM:g} mm)")
        value_range = label_node.GetImageData().GetScalarRange()
        if value_range[1] <= 0:
            raise AssertionError(f"{path.name}: the label map is empty in the scene (range {value_range})")

    # Both nodes sit in the same place for Slicer's own slice logic too (IJKToRAS, not just our read-out).
    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    ct_node.GetIJKToRASMatrix(a)
    label_node.GetIJKToRASMatrix(b)
    deviation = max(abs(a.GetElement(r, c) - b.GetElement(r, c)) for r in range(3) for c in range(4))
    if deviation > LABEL_GRID_TOLERANCE_MM:
        raise AssertionError(f"IJKToRAS of CT and labels differ by {deviation:.3g}")


def scenarios() -> Dict[str, Callable[[Any, Any], None]]:
    """Every ``scenario_*`` function of this module by name, in definition order."""
    return {name[len("scenario_"):]: func for name, func in globals().items()
            if name.startswith("scenario_") and callable(func)}
