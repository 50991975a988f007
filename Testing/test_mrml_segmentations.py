"""Scene adapters for structures (RTSSBridgeLib.mrml.segmentations) on a real MRML scene (slicer-core).

R-5.7 (RTSS / SEG / NIfTI <-> segmentation node), R-8.2 (template codes as Slicer terminology
entries). The scenarios are the same functions RTSSBridgeTest runs inside Slicer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slicer


@pytest.mark.parametrize("name", ["rtss_to_segmentation_and_back", "seg_and_labelmap_through_the_scene",
                                  "point_roi_becomes_markups"])
def test_structure_scenarios(mrml_scene: Any, tmp_path: Path, name: str) -> None:
    from RTSSBridgeLib.mrml.structure_scenarios import structure_scenarios

    structure_scenarios()[name](mrml_scene, tmp_path)


def test_real_rtss_on_a_volume_node_with_warnings_and_subject_hierarchy(mrml_scene: Any, tmp_path: Path) -> None:
    """The MIM file on its CT (loaded as a volume node): warnings as from the core, segments named
    after the ROIs, the segmentation under the volume's study in the subject hierarchy."""
    import slicer

    from RTSSBridgeLib.dicom_series import read_volume, scan_dicom
    from RTSSBridgeLib.mrml.segmentations import import_file_to_scene, problem_lines
    from RTSSBridgeLib.mrml.volumes import volume_node_from_dicom

    from .rtss_cases import TESTDATA

    folder = TESTDATA / "rtutils_mock"
    series = next(s for s in scan_dicom(folder).series if s.series_uid.endswith("893.88"))
    volume = volume_node_from_dicom(mrml_scene, read_volume(series))
    node, _points, result = import_file_to_scene(mrml_scene, str(folder / "invalid_reference_rt.dcm"), volume)
    lines = problem_lines(result)
    assert any("SOP_INSTANCE_UID_IS_SERIES_UID" in line for line in lines)
    assert sum("CONTOURS_OUTSIDE_SERIES" in line for line in lines) == 4
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(4)] == ["ROI-1", "ROI-2", "ROI-3", "ROI-4"]
    sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(mrml_scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == sh.GetItemParent(sh.GetItemByDataNode(volume)) != 0


def test_volume_without_dicom_uids_is_matched_by_position(mrml_scene: Any, tmp_path: Path) -> None:
    from RTSSBridgeLib.dicom_series import scan_dicom
    from RTSSBridgeLib.mrml.segmentations import import_file_to_scene, roi_set_from_segmentation_node
    from RTSSBridgeLib.mrml.structure_scenarios import write_case
    from RTSSBridgeLib.mrml.volumes import volume_node_from_array
    from RTSSBridgeLib.rtss_export import export_rtss
    from RTSSBridgeLib.structures import ReferenceGrid

    folder, geometry, rois = write_case(tmp_path)
    export_rtss(rois, ReferenceGrid.from_series(scan_dicom(folder).series[0]), tmp_path / "rt.dcm")
    volume = volume_node_from_array(mrml_scene, np.zeros(geometry.array_shape, dtype=np.int16), geometry, "plain")
    node, _points, result = import_file_to_scene(mrml_scene, str(tmp_path / "rt.dcm"), volume)
    assert "carries no DICOM instance UIDs" in result.problems[0].message
    for original, segment in zip(rois, roi_set_from_segmentation_node(node, volume).rois):
        assert original.mask is not None and segment.mask is not None and original.mask.same_as(segment.mask)


def test_adapter_errors(mrml_scene: Any, tmp_path: Path) -> None:
    from RTSSBridgeLib.errors import InputError
    from RTSSBridgeLib.geometry import ImageGeometry
    from RTSSBridgeLib.mrml.segmentations import export_segmentation, import_file_to_scene
    from RTSSBridgeLib.mrml.volumes import volume_node_from_array

    geometry = ImageGeometry((4, 3, 2), (1.0, 1.0, 1.0))
    volume = volume_node_from_array(mrml_scene, np.zeros(geometry.array_shape), geometry, "v")
    with pytest.raises(InputError, match="no such file"):
        import_file_to_scene(mrml_scene, str(tmp_path / "none.dcm"), volume)
    segmentation = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.GetSegmentation().AddEmptySegment("a", "A")
    with pytest.raises(InputError, match="series folder: choose the DICOM folder"):
        export_segmentation(segmentation, volume, str(tmp_path / "x.dcm"), "RTSS")
    with pytest.raises(InputError, match="segmentation: choose a segmentation and its reference volume"):
        export_segmentation(None, volume, str(tmp_path / "x.dcm"), "RTSS")
