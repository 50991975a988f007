"""RT Structure Set import (RTSSBridgeLib.rtss_import): real files, every defect reported, exact filling.

R-5.7 (RTSS in), R-6.3 (every defect logged), R-002 (brain-metastasis RTSS on T1W+C). The real
files are those of ``../shared/testdata`` (README there): each must import with the warnings its
defects deserve and none may crash.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pydicom
import pytest

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.labels import LabelInfo, LabelSet, NameRule
from RTSSBridgeLib.problems import Severity
from RTSSBridgeLib.roi import RoiProblem, RoiProblemCode
from RTSSBridgeLib.rtss_import import PLANE_TOLERANCE_MM, import_rtss, read_structure_set
from RTSSBridgeLib.structures import ReferenceGrid, RoiSet, validate_report
from RTSSBridgeLib.uids import deterministic_uid

from .rtss_cases import GRIDS, TESTDATA, ContourSpec, RoiSpec, circle, write_rtss, write_series

CHEESE_RTSS = "cheese_raystation/RS1.2.752.243.1.1.20210208111802158.1580.88111.dcm"


def codes(problems: List[RoiProblem]) -> List[str]:
    return [p.code.value for p in problems]


def find(problems: List[RoiProblem], code: RoiProblemCode) -> RoiProblem:
    hits = [p for p in problems if p.code == code]
    assert len(hits) == 1, f"{code.value} expected once in {[p.line() for p in problems]}"
    return hits[0]


@pytest.fixture(scope="session")
def testdata() -> Path:
    assert TESTDATA.is_dir(), f"the real RTSS files are expected in {TESTDATA} (../shared/testdata beside the checkout)"
    return TESTDATA


@pytest.fixture(scope="session")
def series(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Tuple[Path, ReferenceGrid]]:
    root = tmp_path_factory.mktemp("rtss-import-series")
    out = {name: write_series(root / name, geometry) for name, geometry in GRIDS.items()}
    out["gap"] = write_series(root / "gap", GRIDS["axial"], skip=(4,))
    return out


def square_ijk(grid: ReferenceGrid, k: int, i0: float, j0: float, i1: float, j1: float) -> np.ndarray:
    ij = np.array([[i0, j0], [i1, j0], [i1, j1], [i0, j1]], dtype=float)
    ijk = np.column_stack([ij + grid.frame_ijk[k, :2], np.full(4, grid.frame_ijk[k, 2])])
    return grid.geometry.ijk_to_lps(ijk)


def check_report(result: RoiSet) -> None:
    validate_report(result.to_dict("import", {"labelmap": None}))


# --------------------------------------------------------------------------- the real files
def test_cheese_partial_series_is_clipped_and_reported_never_dropped(testdata: Path) -> None:
    """RayStation RTSS with 6 of its 144 CT slices: contours on absent slices are clipped and
    counted per ROI; both ROIs stay, filled on the 6 slices that exist."""
    result = import_rtss(testdata / CHEESE_RTSS, testdata / "cheese_raystation")
    assert [r.name for r in result.rois] == ["External", "max"]
    assert result.geometry.shape == (512, 512, 6)
    missing = find(result.problems, RoiProblemCode.UNRESOLVED_SERIES_IMAGES)
    assert missing.count == 138 and "138 of the 144 images" in missing.message
    external, maximum = result.rois
    outside = find(external.problems, RoiProblemCode.CONTOURS_OUTSIDE_SERIES)
    assert outside.count == 387 and outside.message.startswith("387 of 393 contour(s)")
    assert "-146.00 to -136.00 mm" in outside.message and "clipped" in outside.message
    assert find(maximum.problems, RoiProblemCode.CONTOURS_OUTSIDE_SERIES).count == 80
    assert external.voxel_count() == 219 and maximum.voxel_count() == 102  # plastimatch --xor-contours agrees
    assert external.mask is not None and external.mask.slices_k() == [0, 1, 2, 3, 4, 5]
    assert external.interpreted_type == "EXTERNAL" and external.color == (0, 128, 0)
    assert external.generation_algorithm == "SEMIAUTOMATIC"
    check_report(result)


def test_cheese_with_regenerated_image_uids_is_matched_by_position(testdata: Path, tmp_path: Path) -> None:
    """Real pipelines regenerate SOP Instance UIDs (e.g. de-identification without a mapping): the
    contours no longer resolve, are matched by plane position, and that is said per ROI."""
    folder = tmp_path / "ct"
    folder.mkdir()
    for n, path in enumerate(sorted((testdata / "cheese_raystation").glob("CT*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = deterministic_uid("regenerated", n)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"{n}.dcm")
    original = import_rtss(testdata / CHEESE_RTSS, testdata / "cheese_raystation")
    result = import_rtss(testdata / CHEESE_RTSS, folder)
    external = result.rois[0]
    matched = find(external.problems, RoiProblemCode.MATCHED_BY_POSITION)
    assert matched.count == 6 and "matched to slices by position" in matched.message
    assert matched.severity == Severity.WARNING
    assert find(result.problems, RoiProblemCode.UNRESOLVED_SERIES_IMAGES).count == 144
    for a, b in zip(original.rois, result.rois):
        assert a.mask is not None and b.mask is not None and a.mask.same_as(b.mask)


def test_mim_file_with_missing_slice_and_sop_uid_equal_to_series_uid(testdata: Path) -> None:
    """MIM RTSS on z = 60/65/70 with the z = 70 image absent (its UID unresolvable), and its own
    SOPInstanceUID equal to its SeriesInstanceUID. The folder also holds an unrelated oblique series."""
    result = import_rtss(testdata / "rtutils_mock" / "invalid_reference_rt.dcm", testdata / "rtutils_mock")
    assert result.reference is not None
    assert result.reference.series_instance_uid.endswith("563423471.893.88")
    find(result.problems, RoiProblemCode.SOP_INSTANCE_UID_IS_SERIES_UID)
    assert find(result.problems, RoiProblemCode.UNRESOLVED_SERIES_IMAGES).count == 3
    assert [r.name for r in result.rois] == ["ROI-1", "ROI-2", "ROI-3", "ROI-4"]
    for roi in result.rois:
        outside = find(roi.problems, RoiProblemCode.CONTOURS_OUTSIDE_SERIES)
        assert outside.count == 1 and "1 of them reference images that are not in the series" in outside.message
        assert roi.mask is not None and roi.mask.slices_k() == [0, 1]
    assert [r.voxel_count() for r in result.rois] == [4976, 3697, 4519, 6954]  # as plastimatch
    check_report(result)


def test_rtss_without_referenced_series_finds_its_series_by_images(testdata: Path) -> None:
    result = import_rtss(testdata / "rtutils_mock" / "non_existent_reference_rt.dcm", testdata / "rtutils_mock")
    assert RoiProblemCode.NO_REFERENCED_SERIES.value in codes(result.problems)
    chosen = find(result.problems, RoiProblemCode.SERIES_CHOSEN_BY_FRAME_OF_REFERENCE)
    assert "holds 2 of the images the contours reference" in chosen.message
    assert [r.voxel_count() for r in result.rois] == [4976, 3697, 4519, 6954]


def test_rt_utils_file_with_another_frame_of_reference_is_flagged(testdata: Path) -> None:
    result = import_rtss(testdata / "rtutils_mock" / "rt.dcm", testdata / "rtutils_mock")
    mismatch = find(result.problems, RoiProblemCode.FRAME_OF_REFERENCE_MISMATCH)
    assert mismatch.severity == Severity.WARNING and "placed in the series' coordinates" in mismatch.message
    (roi,) = result.rois
    assert roi.n_contours == 2 and roi.voxel_count() > 0 and roi.mask is not None and roi.mask.slices_k() == [0]


def test_dicompyler_empty_roi_many_contours_per_plane_and_one_slice(testdata: Path) -> None:
    """Breast RTSS with 10 ROIs on one CT slice: 'Areola' has no Contour Sequence (reported empty),
    BODY has 4 contours on the slice's plane (0.0007 mm off it), everything else lies elsewhere."""
    result = import_rtss(testdata / "dicompyler_core" / "rtss.dcm", testdata / "dicompyler_core")
    assert len(result.rois) == 10 and result.geometry.shape == (512, 512, 1)
    areola = result.by_name("Areola")
    empty = find(areola.problems, RoiProblemCode.EMPTY_ROI)
    assert "no Contour Sequence" in empty.message and areola.mask is not None and areola.mask.is_empty()
    body = result.by_name("BODY")
    assert body.voxel_count() == 40396 and body.problems[0].count == 137
    lung = result.by_name("Lt Lung")
    assert codes(lung.problems) == ["CONTOURS_OUTSIDE_SERIES", "EMPTY_MASK"]
    assert [r.interpreted_type for r in result.rois][:4] == ["EXTERNAL", "AVOIDANCE", "CTV", "GTV"]
    check_report(result)


def test_no_real_file_crashes_and_every_roi_is_kept(testdata: Path) -> None:
    """Every RTSS of the test data imports onto its folder's series; every ROI of the Structure
    Set ROI Sequence is in the result and in the JSON report."""
    files = [p for p in testdata.rglob("*.dcm")
             if pydicom.dcmread(p, stop_before_pixels=True).get("Modality") == "RTSTRUCT"]
    assert len(files) == 5
    for path in files:
        result = import_rtss(path, path.parent)
        declared = len(pydicom.dcmread(path, stop_before_pixels=True).StructureSetROISequence)
        assert len(result.rois) == declared, path.name
        document = result.to_dict("import", {})
        validate_report(document)
        assert len(document["rois"]) == declared


# --------------------------------------------------------------------------- defects, one test each
def _grid(series: Dict[str, Tuple[Path, ReferenceGrid]], name: str = "axial") -> Tuple[Path, ReferenceGrid]:
    return series[name]


def test_open_and_short_contours_are_reported_not_filled(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series)
    roi = RoiSpec(1, "Mixed", [ContourSpec(square_ijk(grid, 3, 4.5, 4.5, 9.5, 9.5)),
                               ContourSpec(square_ijk(grid, 4, 4.5, 4.5, 9.5, 9.5), kind="OPEN_PLANAR"),
                               ContourSpec(square_ijk(grid, 5, 4.5, 4.5, 9.5, 9.5)[:2])])
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", grid, [roi]), folder)
    (mixed,) = result.rois
    assert find(mixed.problems, RoiProblemCode.OPEN_CONTOUR).count == 1
    assert find(mixed.problems, RoiProblemCode.TOO_FEW_POINTS).count == 1
    assert mixed.mask is not None and mixed.mask.slices_k() == [3] and mixed.voxel_count() == 25


def test_point_roi_becomes_points(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series)
    point = grid.geometry.ijk_to_lps([[7.0, 8.0, 2.0]])
    roi = RoiSpec(1, "Marker", [ContourSpec(point, kind="POINT", uids=[grid.sop_instance_uids[2]])],
                  interpreted_type="MARKER")
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", grid, [roi]), folder)
    (marker,) = result.rois
    assert marker.kind == "points" and marker.mask is None
    assert np.allclose(marker.points_lps, point, atol=1e-5)
    assert find(marker.problems, RoiProblemCode.POINT_ROI).severity == Severity.INFO
    assert result.labelmap().max() == 0
    entry = result.to_dict("import", {})["rois"][0]
    assert entry["kind"] == "points" and entry["label_value"] is None and entry["voxel_count"] is None


def test_non_planar_contour_is_an_error_and_not_filled(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series)
    tilted = square_ijk(grid, 3, 4.5, 4.5, 9.5, 9.5)
    tilted[2] += 3.0 * grid.geometry.slice_normal()
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "Tilted", [ContourSpec(tilted)])]), folder)
    problem = find(result.rois[0].problems, RoiProblemCode.NON_PLANAR_CONTOUR)
    assert problem.severity == Severity.ERROR and "3 mm along the slice normal" in problem.message
    assert RoiProblemCode.EMPTY_MASK.value in codes(result.rois[0].problems)


def test_contour_between_slices_goes_to_the_nearest_and_is_reported(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series)
    near = square_ijk(grid, 3, 4.5, 4.5, 9.5, 9.5) + 0.9 * grid.geometry.slice_normal()
    exact = square_ijk(grid, 5, 4.5, 4.5, 9.5, 9.5) + 0.5 * PLANE_TOLERANCE_MM * grid.geometry.slice_normal()
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "A", [ContourSpec(near),
                                                                                 ContourSpec(exact)])]), folder)
    (roi,) = result.rois
    off = find(roi.problems, RoiProblemCode.OFF_SLICE_PLANE)
    assert off.count == 1 and "0.9 mm from the nearest" in off.message
    assert roi.mask is not None and roi.mask.slices_k() == [3, 5]


def test_reference_to_the_wrong_slice_is_overruled_by_position(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series)
    contour = ContourSpec(square_ijk(grid, 6, 4.5, 4.5, 9.5, 9.5), uids=[grid.sop_instance_uids[2]])
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "A", [contour])]), folder)
    (roi,) = result.rois
    find(roi.problems, RoiProblemCode.REFERENCE_POSITION_MISMATCH)
    assert roi.mask is not None and roi.mask.slices_k() == [6]


def test_contour_beyond_the_image_edge_is_clipped_and_reported(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series)
    contour = ContourSpec(square_ijk(grid, 1, -6.0, 30.5, 5.5, 45.0))
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "Edge", [contour])]), folder)
    (roi,) = result.rois
    assert find(roi.problems, RoiProblemCode.CLIPPED_IN_PLANE).count == 1
    assert roi.voxel_count() == 6 * 5  # columns 0..5, rows 31..35


def test_malformed_contour_data_and_point_count_mismatch(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series)
    good = square_ijk(grid, 2, 4.5, 4.5, 9.5, 9.5)
    roi = RoiSpec(1, "A", [ContourSpec(good, declared=7), ContourSpec(good, raw="1.0\\2.0\\x\\4.0\\5.0\\6.0"),
                           ContourSpec(good, raw="1.0\\2.0\\3.0\\4.0")])
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", grid, [roi]), folder)
    (a,) = result.rois
    malformed = [p for p in a.problems if p.code == RoiProblemCode.MALFORMED_CONTOUR_DATA]
    assert sorted(p.message for p in malformed) == [
        "1 contour(s) skipped: ContourData holds 4 numbers, not a multiple of 3",
        "1 contour(s) skipped: ContourData holds a value that is not a number"]
    assert all(p.severity == Severity.ERROR for p in malformed)
    assert find(a.problems, RoiProblemCode.POINT_COUNT_MISMATCH).count == 1
    assert a.voxel_count() == 25


def test_roi_bookkeeping_defects(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An ROI without ROI Contour item (empty), an ROI Contour item for an undefined ROI, and a
    repeated ROI Number are each reported; nothing else is lost."""
    folder, grid = _grid(series)
    box = ContourSpec(square_ijk(grid, 2, 4.5, 4.5, 9.5, 9.5))
    rois = [RoiSpec(1, "Kept", [box]), RoiSpec(2, "NoItem", contour_item=False), RoiSpec(1, "Twin", [box])]
    path = write_rtss(tmp_path / "rt.dcm", grid, rois)
    ds = pydicom.dcmread(path)
    ds.ROIContourSequence[-1].ReferencedROINumber = 9  # the twin's contours now point nowhere
    ds.save_as(path)
    result = import_rtss(path, folder)
    assert [r.name for r in result.rois] == ["Kept", "NoItem"]
    assert find(result.problems, RoiProblemCode.DUPLICATE_ROI_NUMBER).severity == Severity.ERROR
    assert find(result.problems, RoiProblemCode.CONTOUR_ITEM_WITHOUT_ROI).count == 1
    assert "no ROI Contour item refers to it" in find(result.rois[1].problems, RoiProblemCode.EMPTY_ROI).message


def test_missing_slice_in_the_series_clips_its_contours_and_keeps_the_others_in_place(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With slice 4 missing, the volume's k = 4 is the next image: contours go by position to the
    slice actually stored, and the contour of the missing plane is clipped."""
    folder, gap_grid = series["gap"]
    full = series["axial"][1]
    contours = [ContourSpec(square_ijk(full, k, 2.5, 2.5, 5.5, 5.5), uids=[full.sop_instance_uids[k]])
                for k in (3, 4, 5)]
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", full, [RoiSpec(1, "A", contours)]), folder)
    (roi,) = result.rois
    assert gap_grid.n_slices == 9
    outside = find(roi.problems, RoiProblemCode.CONTOURS_OUTSIDE_SERIES)
    assert outside.count == 1 and "1 of them reference images that are not in the series" in outside.message
    assert roi.mask is not None and roi.mask.slices_k() == [3, 4]  # planes 3 and 5 are slices 3 and 4 here


def test_oblique_series_fills_in_the_image_frame(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Oblique, anisotropic, non-square: contours given in LPS land on the voxels of the image's IJK frame."""
    folder, grid = _grid(series, "oblique")
    contour = ContourSpec(square_ijk(grid, 7, 10.5, 3.5, 30.5, 8.5))
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "Slab", [contour])]), folder)
    (roi,) = result.rois
    expected = np.zeros(grid.geometry.array_shape, dtype=bool)
    expected[7, 4:9, 11:31] = True
    assert roi.problems == [] and roi.mask is not None and np.array_equal(roi.mask.full(), expected)


def test_feet_first_series_and_many_contours_per_plane(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series, "feet_first")
    outer = ContourSpec(circle(grid, 4, (15.0, 13.0), 10.0))
    hole = ContourSpec(circle(grid, 4, (15.0, 13.0), 4.0))
    island = ContourSpec(circle(grid, 4, (15.0, 13.0), 1.5, n=12))
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "Ring", [outer, hole, island])]), folder)
    full = result.rois[0].mask.full()  # type: ignore[union-attr]
    assert full[4, 13, 15] and not full[4, 13, 18] and full[4, 13, 22] and not full[4, 13, 26]


# --------------------------------------------------------------------------- choosing the series
def test_series_chosen_by_frame_of_reference_when_nothing_else_fits(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series)
    both = tmp_path / "both"
    shutil.copytree(folder, both / "a")
    shutil.copytree(series["oblique"][0], both / "b")
    contour = ContourSpec(square_ijk(grid, 2, 4.5, 4.5, 9.5, 9.5))
    path = write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "A", [contour])], referenced_series=None)
    result = import_rtss(path, both)
    chosen = find(result.problems, RoiProblemCode.SERIES_CHOSEN_BY_FRAME_OF_REFERENCE)
    assert "shares the structure set's Frame of Reference" in chosen.message
    assert result.reference is not None and result.reference.series_instance_uid == grid.series_instance_uid


def test_only_series_is_used_with_an_error_when_nothing_ties_them(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series)
    contour = ContourSpec(square_ijk(grid, 2, 4.5, 4.5, 9.5, 9.5))
    path = write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "A", [contour])], referenced_series=None,
                      frame_of_reference="1.2.3.4")
    result = import_rtss(path, folder)
    assert find(result.problems, RoiProblemCode.FRAME_OF_REFERENCE_MISMATCH).severity == Severity.ERROR
    assert result.rois[0].voxel_count() == 25


def test_ambiguous_folder_and_unknown_series_uid_are_refused(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series)
    both = tmp_path / "both"
    shutil.copytree(folder, both / "a")
    shutil.copytree(series["oblique"][0], both / "b")
    path = write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "A", [])], referenced_series=None,
                      frame_of_reference="1.2.3.4")
    with pytest.raises(InputError, match=r"both: --series: none of the 2 image series .* choose one with --series-uid"):
        import_rtss(path, both)
    with pytest.raises(InputError, match=r"--series-uid: series 9\.9 is not among the 2 image series"):
        import_rtss(path, both, series_uid="9.9")
    result = import_rtss(path, both, series_uid=grid.series_instance_uid)
    assert result.reference is not None and result.reference.series_instance_uid == grid.series_instance_uid


# --------------------------------------------------------------------------- bad input
def test_invalid_inputs_get_one_clear_line(series, tmp_path: Path, testdata: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series)
    rtss = write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "A", [])])
    with pytest.raises(InputError, match=r"missing\.dcm: no such file"):
        import_rtss(tmp_path / "missing.dcm", folder)
    ct = next(folder.glob("*.dcm"))
    with pytest.raises(InputError, match=r"SOPClassUID: is not an RT Structure Set \(SOP Class UID "
                                         r"1\.2\.840\.10008\.5\.1\.4\.1\.1\.2"):
        import_rtss(ct, folder)
    text = tmp_path / "notes.dcm"
    text.write_text("not dicom at all")
    with pytest.raises(InputError, match=r"notes\.dcm"):
        import_rtss(text, folder)
    ds = pydicom.dcmread(rtss)
    del ds.StructureSetROISequence
    ds.save_as(tmp_path / "bare.dcm")
    with pytest.raises(InputError, match="StructureSetROISequence: has no Structure Set ROI Sequence"):
        read_structure_set(tmp_path / "bare.dcm")
    with pytest.raises(InputError, match=r"nowhere: --series: no such folder"):
        import_rtss(rtss, tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="holds no image series"):
        import_rtss(rtss, empty)


# --------------------------------------------------------------------------- templates and labelmaps
def brain_template() -> LabelSet:
    return LabelSet.from_labels(
        [LabelInfo("SKULL", "Skull", 2, (241, 214, 145)), LabelInfo("METASTASIS", "Brain metastasis", 10, (255, 0, 0))],
        template_id="brain-mets", version="1.0",
        name_rules=[NameRule("[*]skull", "SKULL", "glob"), NameRule(r"[LR]_.+", "METASTASIS", "regex")])


def test_roi_names_map_to_template_codes_and_stable_values(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """R-8.2/R-5.3: seed 002 names map through the template's rules; lesions share METASTASIS's
    value; an unknown name gets a value above the template's and a warning."""
    folder, grid = _grid(series)
    rois = [RoiSpec(1, "R_lat_temp", [ContourSpec(square_ijk(grid, 2, 2.5, 2.5, 4.5, 4.5))]),
            RoiSpec(2, "L_frontal", [ContourSpec(square_ijk(grid, 3, 2.5, 2.5, 4.5, 4.5))]),
            RoiSpec(3, "*Skull", [ContourSpec(square_ijk(grid, 4, 0.5, 0.5, 20.5, 20.5))]),
            RoiSpec(4, "External", [ContourSpec(square_ijk(grid, 5, 0.5, 0.5, 20.5, 20.5))])]
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", grid, rois), folder, brain_template())
    assert [(r.label.code if r.label else None, r.label_value) for r in result.rois] == [
        ("METASTASIS", 10), ("METASTASIS", 10), ("SKULL", 2), (None, 11)]
    find(result.rois[3].problems, RoiProblemCode.NAME_NOT_IN_TEMPLATE)
    shared = find(result.problems, RoiProblemCode.DUPLICATE_TEMPLATE_LABEL)
    assert "R_lat_temp, L_frontal" in shared.message
    labels = result.labelmap()
    assert sorted(np.unique(labels).tolist()) == [0, 2, 10, 11]
    document = result.to_dict("import", {})
    assert document["template"] == {"template_id": "brain-mets", "version": "1.0"}
    assert [r["label_code"] for r in document["rois"]] == ["METASTASIS", "METASTASIS", "SKULL", None]


def test_labelmap_paints_small_rois_over_large_and_reports_overlap(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = _grid(series)
    rois = [RoiSpec(1, "Body", [ContourSpec(square_ijk(grid, 2, 0.5, 0.5, 20.5, 20.5))], interpreted_type="EXTERNAL"),
            RoiSpec(2, "Organ", [ContourSpec(square_ijk(grid, 2, 4.5, 4.5, 8.5, 8.5))])]
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", grid, rois), folder)
    labels = result.labelmap()
    assert labels.dtype == np.uint8 and int(np.count_nonzero(labels == 2)) == 16
    body, organ = result.rois
    assert body.voxel_count() == 400 and body.labelmap_voxel_count == 384 and organ.labelmap_voxel_count == 16
    overlap = find(body.problems, RoiProblemCode.OVERLAP_IN_LABELMAP)
    assert overlap.count == 16 and "(Organ)" in overlap.message and overlap.severity == Severity.INFO


# --------------------------------------------------------------------------- the fast reader
def _records(rtss):  # type: ignore[no-untyped-def]
    return [(r.number, r.name, r.color, r.interpreted_type, r.has_contour_item, r.has_contour_sequence,
             [(c.geometric_type, c.points.tolist(), c.referenced_uids, c.declared_points) for c in r.contours],
             [p.to_dict() for p in r.problems]) for r in rtss.rois]


def test_fast_reader_reads_exactly_what_pydicom_reads(testdata: Path, series, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The byte-level ROI Contour Sequence reader (defined and undefined lengths, implicit and
    explicit VR) gives the same ROIs, contours, points and problems as reading with pydicom."""
    from RTSSBridgeLib import rtss_import
    from RTSSBridgeLib.rtss_reader import read_fast, read_raw

    _folder, grid = _grid(series)
    ours = write_rtss(tmp_path / "ours.dcm", grid, [
        RoiSpec(1, "A", [ContourSpec(square_ijk(grid, 2, 4.5, 4.5, 9.5, 9.5)),
                         ContourSpec(square_ijk(grid, 3, 4.5, 4.5, 9.5, 9.5), raw="1\\2\\x")]),
        RoiSpec(2, "Empty", contour_sequence=False)])
    files = [p for p in testdata.rglob("*.dcm")
             if pydicom.dcmread(p, stop_before_pixels=True).get("Modality") == "RTSTRUCT"] + [ours]
    for path in files:
        assert read_fast(str(path)) is not None, path.name
        assert read_raw(str(path)) is not None, path.name
        raw = read_structure_set(path)
        with monkeypatch.context() as patch:
            patch.setattr(rtss_import, "read_raw", lambda _p: None)
            fast = read_structure_set(path)
            patch.setattr(rtss_import, "read_fast", lambda _p: None)
            slow = read_structure_set(path)
        later = read_structure_set(path, parse_points=False)  # contours walked and parsed on demand
        assert later.contour_image_uids() == slow.contour_image_uids()
        later.parse_points()
        for other in (fast, raw, later):
            assert _records(other) == _records(slow), path.name
            assert [p.to_dict() for p in other.problems] == [p.to_dict() for p in slow.problems]
            assert other.info() == slow.info()


@pytest.mark.parametrize("charset,raw_reads", [("GB18030", True), ("ISO_IR 192", True),
                                               (["", "ISO 2022 IR 58"], False)])
def test_raw_reader_decodes_chinese_roi_names_like_pydicom(series, tmp_path: Path, charset: object,  # type: ignore[no-untyped-def]
                                                           raw_reads: bool) -> None:
    """R-5.7, R-8.2: ROI names in Chinese are decoded with the file's Specific Character Set by the
    pydicom-free reader; a set it does not cover (ISO 2022 code extensions) goes to pydicom."""
    from RTSSBridgeLib.rtss_reader import read_raw

    _folder, grid = _grid(series)
    path = write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "A", [ContourSpec(square_ijk(grid, 2, 1, 1, 3, 3))]),
                                                  RoiSpec(2, "B", [ContourSpec(square_ijk(grid, 3, 1, 1, 3, 3))])])
    ds = pydicom.dcmread(path)
    ds.SpecificCharacterSet = charset
    ds.StructureSetROISequence[0].ROIName = "肝脏 肿瘤"
    ds.StructureSetROISequence[1].ROIName = "左肺 结节"
    ds.save_as(path)
    assert (read_raw(str(path)) is not None) == raw_reads
    expected = [str(i.ROIName) for i in pydicom.dcmread(path).StructureSetROISequence]
    assert [r.name for r in read_structure_set(path).rois] == expected
    if raw_reads:
        assert expected == ["肝脏 肿瘤", "左肺 结节"]


def test_fast_reader_declines_what_it_does_not_handle(tmp_path: Path, series) -> None:  # type: ignore[no-untyped-def]
    from RTSSBridgeLib.rtss_reader import read_fast, read_raw

    _folder, grid = _grid(series)
    path = write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "A", [ContourSpec(square_ijk(grid, 2, 1, 1, 3, 3))])])
    data = bytearray(path.read_bytes())
    data[-6:] = b"\xff\xff\xff\xff\xff\xff"  # the last element's value runs past the end
    (tmp_path / "broken.dcm").write_bytes(bytes(data))
    assert read_fast(str(tmp_path / "broken.dcm")) is None
    assert read_fast(str(tmp_path / "missing.dcm")) is None
    assert read_raw(str(tmp_path / "broken.dcm")) is None
    assert read_raw(str(tmp_path / "missing.dcm")) is None
    broken = read_structure_set(tmp_path / "broken.dcm")  # pydicom's path reads the rest and says what is lost
    assert [p.code for p in broken.problems] == [RoiProblemCode.UNREADABLE_ELEMENT]
    assert broken.problems[0].message.startswith("RTROIObservationsSequence (")
    assert broken.problems[0].message.endswith("cannot be decoded; its content is left out")
    assert broken.rois[0].name == "A" and len(broken.rois[0].contours) == 1 and broken.rois[0].interpreted_type == ""


def test_gantry_tilted_series_fills_each_slice_in_its_own_plane(tmp_path: Path) -> None:
    """Slices whose ImagePositionPatient drifts sideways (gantry tilt): each contour is drawn in
    the frame of the slice it lies on, computed here from each file's own position."""
    from RTSSBridgeLib.dicom_series import scan_dicom
    from RTSSBridgeLib.geometry import ImageGeometry
    from RTSSBridgeLib.samples import write_volume_series

    geometry = ImageGeometry((30, 24, 6), (1.0, 1.0, 2.0), (-15.0, -12.0, 0.0))
    folder = tmp_path / "ct"
    write_volume_series(folder, geometry, np.zeros(geometry.array_shape, dtype=np.int16), "CT")
    for path in folder.glob("*.dcm"):  # shift each slice 0.8 mm along y per 2 mm of z
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [f"{x:.4f}", f"{y + 0.4 * z:.4f}", f"{z:.4f}"]
        ds.save_as(path)
    series = scan_dicom(folder).series[0]
    assert "GANTRY_TILT" in [p.code.value for p in series.problems]
    grid = ReferenceGrid.from_series(series)
    contours = []
    for frame in series.frames:
        origin = np.asarray(frame.position)
        corners = [(3.5, 4.5), (9.5, 4.5), (9.5, 10.5), (3.5, 10.5)]  # voxel-boundary square, 6 x 6 voxels
        contours.append(ContourSpec(np.array([origin + np.array([i, j, 0.0]) for i, j in corners])))
    result = import_rtss(write_rtss(tmp_path / "rt.dcm", grid, [RoiSpec(1, "Tilted", contours)]), folder)
    expected = np.zeros(geometry.array_shape, dtype=bool)
    expected[:, 5:11, 4:10] = True
    (roi,) = result.rois
    assert roi.problems == [] and roi.mask is not None and np.array_equal(roi.mask.full(), expected)


# --------------------------------------------------------------------------- two processes
def _roi_view(result):  # type: ignore[no-untyped-def]
    return [(r.number, r.name, r.color, r.interpreted_type, r.n_contours, r.mask.full().tobytes() if r.mask else None,
             None if r.points_lps is None else r.points_lps.tolist(), [p.to_dict() for p in r.problems])
            for r in result.rois]


def test_two_process_import_equals_one_process_and_survives_a_failing_child(  # type: ignore[no-untyped-def]
        testdata: Path, series, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    """R-5.7: the command line's two-process fill (a forked child parses and crosses half the
    ROIs) gives exactly the one-process result - masks, points, problems, order - on the real files
    and on a generated one with holes, a malformed contour, points, an empty ROI and a clipped
    contour; when the child fails the parent does its share."""
    from RTSSBridgeLib import rtss_import

    if not rtss_import.can_fork():
        pytest.skip("no fork on this platform: the command line uses one process there")
    folder, grid = _grid(series)
    ours = write_rtss(tmp_path / "ours.dcm", grid, [
        RoiSpec(1, "Ring", [ContourSpec(square_ijk(grid, 2, 2.5, 2.5, 14.5, 14.5)),
                            ContourSpec(square_ijk(grid, 2, 5.5, 5.5, 9.5, 9.5)),
                            ContourSpec(square_ijk(grid, 3, 4.5, 4.5, 9.5, 9.5), raw="1\\2\\x")]),
        RoiSpec(2, "Edge", [ContourSpec(square_ijk(grid, 4, -3.5, 1.5, 6.5, 6.5))]),
        RoiSpec(3, "Empty", contour_sequence=False),
        RoiSpec(4, "Small", [ContourSpec(square_ijk(grid, 1, 3.5, 3.5, 4.5, 4.5))])])
    cases = [(ours, folder)] + [(path, path.parent) for path in sorted(testdata.rglob("RS*.dcm"))]
    for path, images in cases:
        one = import_rtss(path, images, processes=1)
        two = import_rtss(path, images, processes=2)
        assert _roi_view(two) == _roi_view(one), path.name
        assert [p.to_dict() for p in two.problems] == [p.to_dict() for p in one.problems]
        assert "helper process failed" not in capfd.readouterr().err  # the child did its share
    empty = tmp_path / "no-series"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no image series"):
        import_rtss(ours, empty, processes=2)
    assert "helper process failed" not in capfd.readouterr().err  # a failed scan is reported once, by the parent
    real_job = rtss_import._roi_job

    def failing_in_child(record, grid, uid_index, defer=False):  # type: ignore[no-untyped-def]
        if defer:
            raise RuntimeError("child fails")
        return real_job(record, grid, uid_index, defer)

    monkeypatch.setattr(rtss_import, "_roi_job", failing_in_child)
    assert _roi_view(import_rtss(ours, folder, processes=2)) == _roi_view(import_rtss(ours, folder, processes=1))
    assert "helper process failed (RuntimeError: child fails)" in capfd.readouterr().err

    def stuck_in_child(record, grid, uid_index, defer=False):  # type: ignore[no-untyped-def]
        if defer:
            time.sleep(600)
        return real_job(record, grid, uid_index, defer)

    monkeypatch.setattr(rtss_import, "_roi_job", stuck_in_child)
    monkeypatch.setattr(rtss_import, "CHILD_TIMEOUT_MIN_S", 0.5)
    started = time.perf_counter()
    assert _roi_view(import_rtss(ours, folder, processes=2)) == _roi_view(import_rtss(ours, folder, processes=1))
    assert time.perf_counter() - started < 60  # the stuck child was killed, not waited for
