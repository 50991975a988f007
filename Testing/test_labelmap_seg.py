"""NIfTI labelmaps, per-ROI mask files, DICOM SEG and segment codes (R-5.7, R-8.2, R-5.3).

Labelmaps carry the template's stable label values with the series' exact affine; per-ROI files
keep overlapping ROIs exact; DICOM SEG (highdicom) round-trips masks and template codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import nibabel as nib
import numpy as np
import pydicom
import pytest

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.labelmap import read_labelmap, read_masks, safe_file_name, write_labelmap, write_split
from RTSSBridgeLib.labels import Code, LabelInfo, LabelSet, NameRule
from RTSSBridgeLib.nifti import write_nifti
from RTSSBridgeLib.roi import RoiMask, RoiProblemCode
from RTSSBridgeLib.seg import dicom_lab_to_srgb, export_seg, import_seg, srgb_to_dicom_lab
from RTSSBridgeLib.structures import ReferenceGrid, Roi, RoiSet
from RTSSBridgeLib.terminology import (
    DEFAULT_TYPE,
    SegmentCodes,
    codes_for,
    label_for_codes,
    parse_terminology_entry,
    terminology_entry,
)

from .rtss_cases import GRIDS, hard_masks, write_series

LUNG = Code("SCT", "39607008", "Lung")
ANATOMY = Code("SCT", "123037004", "Anatomical Structure")
LEFT = Code("SCT", "7771000", "Left")
RIGHT = Code("SCT", "24028007", "Right")


def chest_template() -> LabelSet:
    return LabelSet.from_labels(
        [LabelInfo("LUNG_LEFT", "Left lung", 1, (194, 105, 66), category=ANATOMY, type=LUNG, type_modifier=LEFT,
                   rt_interpreted_type="ORGAN", names={"zh": "左肺"}),
         LabelInfo("LUNG_RIGHT", "Right lung", 2, (121, 92, 197), category=ANATOMY, type=LUNG, type_modifier=RIGHT,
                   rt_interpreted_type="ORGAN"),
         LabelInfo("NODULE", "Lung nodule", 20, (255, 0, 0),
                   category=Code("SCT", "49755003", "Morphologically Altered Structure"),
                   type=Code("SCT", "27925004", "Nodule"), rt_interpreted_type="GTV")],
        template_id="lung-ct", version="2.0",
        name_rules=[NameRule("Lung_L", "LUNG_LEFT"), NameRule("Lung_R", "LUNG_RIGHT"),
                    NameRule("Nodule*", "NODULE", "glob")])


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Tuple[Path, ReferenceGrid]]:
    root = tmp_path_factory.mktemp("labelmap-series")
    return {name: write_series(root / name, GRIDS[name]) for name in ("axial", "oblique")}


def roi_set(grid: ReferenceGrid, label_set: LabelSet = None) -> RoiSet:  # type: ignore[assignment]
    shape = grid.geometry.array_shape
    left = np.zeros(shape, dtype=bool)
    left[1:5, 2:12, 2:10] = True
    right = np.zeros(shape, dtype=bool)
    right[1:5, 2:12, 14:22] = True
    nodule = np.zeros(shape, dtype=bool)
    nodule[2, 5:7, 5:7] = True  # inside the left lung: overlaps
    rois = [Roi(1, "Lung_L", RoiMask.from_full(left)), Roi(2, "Lung_R", RoiMask.from_full(right)),
            Roi(3, "Nodule 1", RoiMask.from_full(nodule))]
    result = RoiSet("MASKS", "test", grid.geometry, rois, reference=grid)
    result.map_to_template(label_set)
    return result


# --------------------------------------------------------------------------- NIfTI
def test_labelmap_uses_template_values_and_the_exact_affine(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """R-5.3: the same structure always gets the template's value; the affine is the series'."""
    _folder, grid = series["oblique"]
    result = roi_set(grid, chest_template())
    path = write_labelmap(result, str(tmp_path / "labels.nii.gz"))
    image = nib.load(path)
    assert np.allclose(image.affine, grid.geometry.ijk_to_ras_matrix(), atol=1e-4)
    assert int(image.header["intent_code"]) == 1002
    data = np.asarray(image.dataobj).T
    assert sorted(np.unique(data).tolist()) == [0, 1, 2, 20]
    assert int(np.count_nonzero(data == 20)) == 4 and int(np.count_nonzero(data == 1)) == 320 - 4
    back = read_labelmap(path, chest_template(), reference=grid.geometry)
    assert [(r.name, r.label_value, r.label.code if r.label else None) for r in back.rois] == [
        ("Left lung", 1, "LUNG_LEFT"), ("Right lung", 2, "LUNG_RIGHT"), ("Lung nodule", 20, "NODULE")]


@pytest.mark.parametrize("preallocate", [True, False])
def test_labelmap_painted_into_the_mapped_file_equals_the_written_one(  # type: ignore[no-untyped-def]
        series, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preallocate: bool) -> None:
    """R-5.3: a .nii labelmap painted straight into the memory-mapped file (or written plainly where
    the file system cannot preallocate) has the bytes of the labelmap array written by write_nifti,
    the same overlap counts, and no temporary file is left."""
    import os

    from RTSSBridgeLib.nifti import write_nifti

    _folder, grid = series["oblique"]
    expected = roi_set(grid, chest_template())
    reference = write_nifti(tmp_path / "reference.nii", expected.labelmap(), grid.geometry, label_map=True,
                            description="mmanno test")
    if not preallocate:
        def refuse(fd: int, offset: int, length: int) -> None:
            raise OSError(95, "Operation not supported")

        monkeypatch.setattr(os, "posix_fallocate", refuse, raising=False)
    result = roi_set(grid, chest_template())
    path = write_labelmap(result, str(tmp_path / "labels.nii"), description="mmanno test")
    assert Path(path).read_bytes() == Path(reference).read_bytes()
    assert [r.labelmap_voxel_count for r in result.rois] == [r.labelmap_voxel_count for r in expected.rois]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii", "reference.nii"]


def test_split_writes_one_exact_file_per_roi_named_after_it(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _folder, grid = series["axial"]
    result = roi_set(grid)
    result.rois[2].name = "Nodule: 1/2"
    files = write_split(result, str(tmp_path / "split"))
    assert [Path(f).name for f in files] == ["Lung_L.nii.gz", "Lung_R.nii.gz", "Nodule_ 1_2.nii.gz"]
    assert RoiProblemCode.RENAMED_FILE in [p.code for p in result.rois[2].problems]
    back = read_masks(files, reference=grid.geometry)
    assert [r.name for r in back.rois] == ["Lung_L", "Lung_R", "Nodule_ 1_2"]
    for a, b in zip(result.rois, back.rois):
        assert a.mask is not None and b.mask is not None and a.mask.same_as(b.mask)  # the overlap survives


def test_safe_file_names() -> None:
    used: set = set()
    assert [safe_file_name(n, used) for n in ("Lung L", "lung l", "../etc", "CON", "", "a\\b:c*d", "左肺")] == [
        "Lung L", "lung l-2", "_etc", "ROI_CON", "ROI", "a_b_c_d", "左肺"]


def test_masks_map_to_template_by_name_rules(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _folder, grid = series["axial"]
    files = write_split(roi_set(grid), str(tmp_path / "split"))
    back = read_masks(files, reference=grid.geometry, label_set=chest_template())
    assert [r.label.code for r in back.rois] == ["LUNG_LEFT", "LUNG_RIGHT", "NODULE"]  # type: ignore[union-attr]


def test_values_the_template_does_not_know_are_reported(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _folder, grid = series["axial"]
    labels = np.zeros(grid.geometry.array_shape, dtype=np.uint16)
    labels[1, 1:3, 1:3] = 1
    labels[2, 1:3, 1:3] = 300
    path = write_nifti(tmp_path / "l.nii.gz", labels, grid.geometry, label_map=True)
    back = read_labelmap(path, chest_template())
    assert [r.name for r in back.rois] == ["Left lung", "Label 300"]
    assert [p.code for p in back.rois[1].problems] == [RoiProblemCode.VALUE_NOT_IN_TEMPLATE]


@pytest.mark.parametrize(("voxels", "match"), [
    (np.full((10, 36, 40), 0.5, dtype=np.float32), "holds non-integer values"),
    (np.full((10, 36, 40), -1, dtype=np.int16), "negative value -1"),
    (np.zeros((10, 36, 40), dtype=np.uint8), r"holds only background \(0\)"),
])
def test_invalid_labelmaps_are_refused(series, tmp_path: Path, voxels: np.ndarray, match: str) -> None:  # type: ignore[no-untyped-def]
    _folder, grid = series["axial"]
    path = write_nifti(tmp_path / "bad.nii.gz", voxels, grid.geometry)
    with pytest.raises(InputError, match=match):
        read_labelmap(path)


def test_invalid_mask_files_are_refused(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _folder, grid = series["axial"]
    two = np.zeros(grid.geometry.array_shape, dtype=np.uint8)
    two[1, 1, 1], two[1, 1, 2] = 1, 2
    write_nifti(tmp_path / "two.nii.gz", two, grid.geometry)
    with pytest.raises(InputError, match=r"two\.nii\.gz: voxels: holds several label values \[1, 2\]"):
        read_masks([str(tmp_path / "two.nii.gz")])
    other = GRIDS["oblique"]
    write_nifti(tmp_path / "elsewhere.nii.gz", np.ones(other.array_shape, dtype=np.uint8), other)
    with pytest.raises(InputError, match=r"elsewhere\.nii\.gz: shape: the mask has shape \[44, 30, 12\]"):
        read_masks([str(tmp_path / "elsewhere.nii.gz")], reference=grid.geometry)
    moved = grid.geometry.with_shape(grid.geometry.shape)
    shifted = type(moved)(moved.shape, moved.spacing_mm, (0.0, 0.0, 0.0), moved.direction)
    write_nifti(tmp_path / "shifted.nii.gz", np.ones(moved.array_shape, dtype=np.uint8), shifted)
    with pytest.raises(InputError, match=r"geometry: the mask is .* mm away from the series grid"):
        read_masks([str(tmp_path / "shifted.nii.gz")], reference=grid.geometry)
    one = np.zeros(grid.geometry.array_shape, dtype=np.uint8)
    one[0, 0, 0] = 1
    write_nifti(tmp_path / "a" / "same.nii.gz", one, grid.geometry)
    write_nifti(tmp_path / "b" / "SAME.nii.gz", one, grid.geometry)
    with pytest.raises(InputError, match="gives the ROI name 'SAME' again"):
        read_masks([str(tmp_path / "a" / "same.nii.gz"), str(tmp_path / "b" / "SAME.nii.gz")])
    with pytest.raises(InputError, match="MASK: no mask file given"):
        read_masks([])


# --------------------------------------------------------------------------- DICOM SEG
def test_seg_round_trip_keeps_masks_overlaps_codes_and_colours(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _folder, grid = series["oblique"]
    template = chest_template()
    source = roi_set(grid, template)
    result = export_seg(source.rois, grid, tmp_path / "seg.dcm")
    assert result.written["overlapping_segments"] is True
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.SegmentationType == "BINARY"
    image = pydicom.dcmread(grid.files[0], stop_before_pixels=True)
    assert str(ds.PatientName) == str(image.PatientName) and "=" in str(ds.PatientName)  # the Chinese part too
    first = ds.SegmentSequence[0]
    assert first.SegmentLabel == "Lung_L"
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"
    modifier = first.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
    assert modifier.CodeValue == "7771000"
    assert first.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    referenced = {i.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert referenced == set(grid.sop_instance_uids)
    back = import_seg(tmp_path / "seg.dcm", grid, template)
    assert [(r.name, r.label.code if r.label else None, r.label_value) for r in back.rois] == [
        ("Lung_L", "LUNG_LEFT", 1), ("Lung_R", "LUNG_RIGHT", 2), ("Nodule 1", "NODULE", 20)]
    for a, b in zip(source.rois, back.rois):
        assert a.mask is not None and b.mask is not None and a.mask.same_as(b.mask)
        assert b.color == a.display_color()
    assert back.all_problems() == []


def test_seg_without_template_and_hard_masks(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _folder, grid = series["axial"]
    rois = list(hard_masks(grid.geometry.array_shape))
    rois.append(Roi(9, "Empty", RoiMask.empty(grid.geometry.array_shape)))
    result = export_seg(rois, grid, tmp_path / "seg.dcm")
    assert [p.code for p in result.rois[-1].problems] == [RoiProblemCode.EMPTY_MASK]
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"
    back = import_seg(tmp_path / "seg.dcm", grid)
    assert len(back.rois) == 5
    for a, b in zip(rois, back.rois):
        assert a.mask is not None and b.mask is not None and a.mask.same_as(b.mask), a.name


def test_seg_errors(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = series["axial"]
    with pytest.raises(InputError, match="rois: no ROI has voxels"):
        export_seg([Roi(1, "Empty", RoiMask.empty(grid.geometry.array_shape))], grid, tmp_path / "seg.dcm")
    with pytest.raises(InputError, match="is not a DICOM Segmentation"):
        import_seg(next(folder.glob("*.dcm")), grid)
    with pytest.raises(InputError, match="no such file"):
        import_seg(tmp_path / "none.dcm", grid)
    export_seg(hard_masks(grid.geometry.array_shape)[:2], grid, tmp_path / "seg.dcm")
    oblique = series["oblique"][1]
    with pytest.raises(InputError, match="another orientation or pixel spacing"):
        import_seg(tmp_path / "seg.dcm", oblique)


def test_cielab_colours_round_trip() -> None:
    for rgb in ((255, 0, 0), (0, 0, 0), (255, 255, 255), (194, 105, 66), (12, 200, 99)):
        assert dicom_lab_to_srgb(srgb_to_dicom_lab(rgb)) == rgb
    assert srgb_to_dicom_lab((255, 255, 255)) == [65535, 32896, 32896]


# --------------------------------------------------------------------------- terminology
def test_terminology_entry_strings() -> None:
    label = chest_template().labels[0]
    text = terminology_entry(codes_for(label))
    assert text == ("Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
                    "~SCT^39607008^Lung~SCT^7771000^Left~~^^~^^")
    assert parse_terminology_entry(text) == codes_for(label)
    assert codes_for(None).type == DEFAULT_TYPE and parse_terminology_entry("nonsense") is None
    assert label_for_codes(chest_template(), codes_for(label)).code == "LUNG_LEFT"  # type: ignore[union-attr]
    assert label_for_codes(chest_template(), SegmentCodes(ANATOMY, LUNG)) is None  # left or right? ambiguous
    assert label_for_codes(chest_template(), codes_for(None)) is None


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
@pytest.mark.parametrize("value", [1, 255])
def test_mask_files_of_any_type_and_value_give_the_exact_roi(series, tmp_path: Path, dtype: str,  # type: ignore[no-untyped-def]
                                                             value: int) -> None:
    """R-5.7: a per-ROI mask (0 and one value, any integer-valued type, uncompressed .nii read from
    its memory map) gives exactly its voxels, cropped to the tight box: border-touching, one voxel,
    several boxes on separate slices; an empty file gives an empty ROI with a warning."""
    _folder, grid = series["oblique"]
    shape = grid.geometry.array_shape
    cases = {"border": np.zeros(shape, dtype=bool), "one": np.zeros(shape, dtype=bool),
             "apart": np.zeros(shape, dtype=bool), "empty": np.zeros(shape, dtype=bool)}
    cases["border"][:, 0, :] = True
    cases["border"][-1, :, -1] = True
    cases["one"][5, 7, 9] = True
    cases["apart"][1, 2:4, 3:6] = True
    cases["apart"][9, 20:22, 30:40] = True
    paths = []
    for name, full in cases.items():
        path = tmp_path / f"{name}.nii"
        write_nifti(path, (full * value).astype(dtype), grid.geometry)
        paths.append(str(path))
    result = read_masks(paths, reference=grid.geometry)
    for roi, (name, full) in zip(result.rois, cases.items()):
        assert roi.mask is not None and roi.name == name
        assert np.array_equal(roi.mask.full(), full), name
        assert roi.mask.same_as(RoiMask.from_full(full)) and roi.mask.data.shape == RoiMask.from_full(full).data.shape
    assert [p.code for p in result.rois[3].problems] == [RoiProblemCode.EMPTY_MASK]
    two = (cases["apart"] * value).astype(dtype)
    two[9, 20, 30] = 7
    write_nifti(tmp_path / "two.nii", two, grid.geometry)
    with pytest.raises(InputError, match=r"two\.nii: voxels: holds several label values \[7, " + str(value) + "]"
                       if value > 7 else r"two\.nii: voxels: holds several label values \[1, 7\]"):
        read_masks([str(tmp_path / "two.nii")], reference=grid.geometry)
