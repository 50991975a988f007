"""RT Structure Set export (RTSSBridgeLib.rtss_export): exact round trips and a valid DICOM object.

R-5.7 (RTSS out), R-002 (structure sets referencing their images by Study/Series/SOP Instance UID),
R-6.11 (exports usable elsewhere: dciodvfy from dicom3tools finds no error).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pydicom
import pytest

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.labels import Code, LabelInfo
from RTSSBridgeLib.roi import RoiMask, RoiProblemCode, dice
from RTSSBridgeLib.rtss_export import ExportOptions, export_rtss, format_coordinates
from RTSSBridgeLib.rtss_import import import_rtss
from RTSSBridgeLib.structures import ReferenceGrid, Roi

from .conftest import require_tool
from .rtss_cases import GRIDS, hard_masks, run_cli_in_fresh_process, write_series


@pytest.fixture(scope="session")
def series(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Tuple[Path, ReferenceGrid]]:
    root = tmp_path_factory.mktemp("rtss-export-series")
    out = {name: write_series(root / name, geometry) for name, geometry in GRIDS.items()}
    out["gap"] = write_series(root / "gap", GRIDS["oblique"], skip=(5,))
    return out


@pytest.mark.parametrize("name", ["axial", "oblique", "feet_first", "gap"])
def test_round_trip_is_exact(series, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """mask -> RTSS -> mask gives Dice 1.0 for border-touching masks, holes, 1- to 4-voxel ROIs and
    random blobs, on axial, oblique/anisotropic/non-square, feet-first and gapped series (R-5.7)."""
    folder, grid = series[name]
    rois = hard_masks(grid.geometry.array_shape)
    result = export_rtss(rois, grid, tmp_path / "rtss.dcm")
    assert all(r.problems == [] for r in result.rois)
    back = import_rtss(tmp_path / "rtss.dcm", folder)
    assert back.all_problems() == []
    for original, imported in zip(rois, back.rois):
        assert imported.name == original.name and imported.n_contours == original.n_contours
        assert original.mask is not None and imported.mask is not None
        assert dice(original.mask, imported.mask) == 1.0 and original.mask.same_as(imported.mask), original.name


def test_structure_set_references_every_slice_and_copies_patient_and_study(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _folder, grid = series["oblique"]
    label = LabelInfo("LUNG_LEFT", "Left lung", 1, (194, 105, 66),
                      category=Code("SCT", "123037004", "Anatomical Structure"),
                      type=Code("SCT", "39607008", "Lung"), rt_interpreted_type="ORGAN")
    rois = hard_masks(grid.geometry.array_shape)[:3]
    rois[0].label = label
    rois[1].interpreted_type = "GTV"
    rois[1].color = (255, 0, 255)
    options = ExportOptions(structure_set_label="ROIs in axC", structure_set_name="Test set", date="20240102",
                            time="101112")
    export_rtss(rois, grid, tmp_path / "rtss.dcm", options=options)
    ds = pydicom.dcmread(tmp_path / "rtss.dcm")
    image = pydicom.dcmread(grid.files[0], stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert ds.Modality == "RTSTRUCT" and ds.SeriesInstanceUID != image.SeriesInstanceUID
    assert ds.SOPInstanceUID not in grid.sop_instance_uids
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID"):
        assert ds.get(keyword) == image.get(keyword), keyword
    assert (ds.StructureSetLabel, ds.StructureSetName, ds.StructureSetDate, ds.StructureSetTime) == (
        "ROIs in axC", "Test set", "20240102", "101112")
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == grid.frame_of_reference_uid
    study = frame.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == grid.study_instance_uid
    listed = study.RTReferencedSeriesSequence[0]
    assert listed.SeriesInstanceUID == grid.series_instance_uid
    assert [i.ReferencedSOPInstanceUID for i in listed.ContourImageSequence] == list(grid.sop_instance_uids)
    assert {i.ReferencedSOPClassUID for i in listed.ContourImageSequence} == {"1.2.840.10008.5.1.4.1.1.2"}
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["Border", "Holes", "One voxel"]
    assert {r.ReferencedFrameOfReferenceUID for r in ds.StructureSetROISequence} == {grid.frame_of_reference_uid}
    observations = ds.RTROIObservationsSequence
    assert [o.RTROIInterpretedType for o in observations] == ["ORGAN", "GTV", ""]
    code = observations[0].RTROIIdentificationCodeSequence[0]
    assert (code.CodingSchemeDesignator, code.CodeValue, code.CodeMeaning) == ("SCT", "39607008", "Lung")
    assert [list(c.ROIDisplayColor) for c in ds.ROIContourSequence] == [[194, 105, 66], [255, 0, 255],
                                                                         [255, 225, 25]]
    index = {uid: k for k, uid in enumerate(grid.sop_instance_uids)}
    for item in ds.ROIContourSequence:
        for contour in item.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            (ref,) = contour.ContourImageSequence
            k = index[ref.ReferencedSOPInstanceUID]
            raw = contour.get_item(0x30060050).value
            texts = bytes(raw).strip().split(b"\\")
            assert len(texts) == 3 * int(contour.NumberOfContourPoints) and int(contour.NumberOfContourPoints) >= 3
            assert max(len(t) for t in texts) <= 16
            lps = np.asarray([float(t) for t in texts]).reshape(-1, 3)
            plane = grid.geometry.lps_to_ijk(lps)[:, 2]
            assert np.allclose(plane, grid.frame_ijk[k, 2], atol=1e-4)  # the contour lies on its referenced slice


def test_exported_file_passes_dciodvfy(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """dicom3tools' IOD validator reports no error (and the file is RTStructureSet)."""
    exe = require_tool("dciodvfy", "dicom3tools")
    _folder, grid = series["oblique"]
    rois = hard_masks(grid.geometry.array_shape)
    rois[0].interpreted_type = "EXTERNAL"
    rois[0].points_lps = None
    marker = Roi(6, "Marker", None, points_lps=grid.geometry.ijk_to_lps([[3.0, 4.0, 5.0]]), interpreted_type="MARKER")
    export_rtss([*rois, marker, Roi(7, "Empty", RoiMask.empty(grid.geometry.array_shape))], grid,
                tmp_path / "rtss.dcm")
    result = subprocess.run([exe, str(tmp_path / "rtss.dcm")], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    assert "RTStructureSet" in output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert errors == [], output


def test_points_and_empty_rois_survive_a_round_trip(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder, grid = series["axial"]
    points = grid.geometry.ijk_to_lps([[3.0, 4.0, 5.0], [10.0, 11.0, 2.0]])
    rois = [Roi(1, "Markers", None, points_lps=points, interpreted_type="MARKER"),
            Roi(2, "Nothing", RoiMask.empty(grid.geometry.array_shape))]
    result = export_rtss(rois, grid, tmp_path / "rtss.dcm")
    assert [p.code for p in result.rois[1].problems] == [RoiProblemCode.EMPTY_MASK]
    assert result.rois[0].n_contours == 2
    back = import_rtss(tmp_path / "rtss.dcm", folder)
    assert np.allclose(back.rois[0].points_lps, points, atol=1e-4)
    assert [p.code for p in back.rois[1].problems] == [RoiProblemCode.EMPTY_ROI]


def test_same_options_give_the_same_bytes_and_new_uids_otherwise(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _folder, grid = series["axial"]
    rois = hard_masks(grid.geometry.array_shape)[:2]
    fixed = ExportOptions(sop_instance_uid="2.25.1", series_instance_uid="2.25.2", date="20240101", time="000000")
    export_rtss(rois, grid, tmp_path / "a.dcm", options=fixed)
    export_rtss(rois, grid, tmp_path / "b.dcm", options=fixed)
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
    export_rtss(rois, grid, tmp_path / "c.dcm")
    export_rtss(rois, grid, tmp_path / "d.dcm")
    c, d = (pydicom.dcmread(tmp_path / n) for n in ("c.dcm", "d.dcm"))
    assert c.SOPInstanceUID != d.SOPInstanceUID and c.SeriesInstanceUID != d.SeriesInstanceUID


def test_renumbers_rois_whose_numbers_clash(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _folder, grid = series["axial"]
    rois = hard_masks(grid.geometry.array_shape)[:2]
    rois[1].number = rois[0].number
    result = export_rtss(rois, grid, tmp_path / "rtss.dcm")
    assert [r.number for r in result.rois] == [1, 2]
    assert [p.code for p in result.problems] == [RoiProblemCode.DUPLICATE_ROI_NUMBER]


def test_coordinates_fit_decimal_strings() -> None:
    """Fixed-point DS, right-aligned with leading spaces (allowed by PS3.5), at most 16 characters."""
    assert format_coordinates(np.array([-249.51171875, 0.0, 12345.67891, -0.00001])) == (
        b"  -249.5117\\     0.0000\\ 12345.6789\\     0.0000 ")  # padded to an even length
    values = np.random.default_rng(1).uniform(-99999.0, 99999.0, 5000)
    fields = format_coordinates(values).rstrip(b" ").split(b"\\")
    assert max(len(f) for f in fields) <= 16 and all(b" " not in f.strip() for f in fields)
    assert np.max(np.abs(np.array([float(f) for f in fields]) - values)) <= 0.5e-4 + 1e-9
    with pytest.raises(InputError, match="ContourData: coordinate 1e\\+10 mm does not fit a 16-character DS"):
        format_coordinates(np.array([1e10]))


@pytest.mark.parametrize(("change", "match"), [
    (lambda rois, grid: [], "rois: there is no ROI to export"),
    (lambda rois, grid: [Roi(1, "x" * 65, rois[0].mask)], "ROIName: ROI name 'xxx.* must be 1 to 64 characters"),
    (lambda rois, grid: [Roi(1, "Small", RoiMask.empty((1, 2, 3)))], r"mask: ROI 'Small': mask shape \[1, 2, 3\]"),
    (lambda rois, grid: [Roi(1, "A", rois[0].mask, interpreted_type="TUMOUR")],
     "RTROIInterpretedType: ROI 'A': 'TUMOUR' is not an RT ROI Interpreted Type"),
    (lambda rois, grid: [Roi(1, "A", rois[0].mask, generation_algorithm="GUESS")],
     "ROIGenerationAlgorithm: ROI 'A': 'GUESS' must be AUTOMATIC"),
])
def test_invalid_rois_are_refused(series, tmp_path: Path, change, match: str) -> None:  # type: ignore[no-untyped-def]
    _folder, grid = series["axial"]
    rois = change(hard_masks(grid.geometry.array_shape), grid)
    with pytest.raises(InputError, match=match):
        export_rtss(rois, grid, tmp_path / "rtss.dcm")
    assert not (tmp_path / "rtss.dcm").exists()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"structure_set_label": "a label that is far too long"}, "structure_set_label: .* must be 1 to 16 characters"),
    ({"structure_set_label": " "}, "structure_set_label"),
    ({"sop_instance_uid": "1.02.3"}, "sop_instance_uid: '1.02.3' is not a valid DICOM UID"),
    ({"date": "2024-01-01"}, "date: '2024-01-01' must be YYYYMMDD"),
    ({"time": "10:11"}, "time: '10:11' must be HHMMSS"),
    ({"default_generation_algorithm": "AI"}, "generation_algorithm: 'AI' must be one of"),
])
def test_invalid_options_are_refused(kwargs, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=match):
        ExportOptions(**kwargs)


def test_series_without_uids_cannot_be_referenced(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _folder, grid = series["axial"]
    bare = ReferenceGrid.from_geometry(grid.geometry, [""] * grid.n_slices)
    with pytest.raises(InputError, match="series: the image series lacks Series, Study or SOP Instance UIDs"):
        export_rtss(hard_masks(grid.geometry.array_shape)[:1], bare, tmp_path / "rtss.dcm")


def test_long_boundaries_are_split_into_contours_that_fit_a_ds_value(tmp_path: Path) -> None:
    """A boundary needing more than 65 534 bytes of ContourData (the most a DS value holds in
    explicit VR) is cut into column halves whose contours share the cut edge: every value fits,
    and the file still fills back to exactly the mask."""
    from RTSSBridgeLib.geometry import ImageGeometry
    from RTSSBridgeLib.rtss_export import MAX_SHORT_VALUE

    from .rtss_cases import write_series as write

    geometry = ImageGeometry((1024, 900, 2), (0.31, 0.29, 2.0), (-12345.6789, 23456.789, -3456.7))
    folder, grid = write(tmp_path / "ct", geometry)
    rng = np.random.default_rng(3)
    saw = np.zeros(geometry.array_shape, dtype=bool)
    for j in range(20, 880):
        saw[1, j, 10: 10 + int(rng.integers(100, 1000))] = True
    export_rtss([Roi(1, "Saw", RoiMask.from_full(saw))], grid, tmp_path / "rtss.dcm")
    ds = pydicom.dcmread(tmp_path / "rtss.dcm")
    lengths = [c.get_item(0x30060050).length for c in ds.ROIContourSequence[0].ContourSequence]
    assert len(lengths) >= 2 and max(lengths) <= MAX_SHORT_VALUE
    back = import_rtss(tmp_path / "rtss.dcm", folder)
    assert back.rois[0].mask is not None and back.rois[0].mask.same_as(RoiMask.from_full(saw))


def test_non_ascii_names_and_code_meanings_survive(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """UTF-8 (ISO_IR 192) text written after the contours is decoded as UTF-8 again."""
    folder, grid = series["axial"]
    label = LabelInfo("LUNG_LEFT", "Left lung", 1, type=Code("99MMANNO", "L1", "左肺"), rt_interpreted_type="ORGAN")
    rois = hard_masks(grid.geometry.array_shape)[:1]
    rois[0].name, rois[0].label = "左肺 上叶", label
    export_rtss(rois, grid, tmp_path / "rtss.dcm")
    back = import_rtss(tmp_path / "rtss.dcm", folder)
    assert back.rois[0].name == "左肺 上叶"
    assert back.rois[0].codes["identification"] == {"scheme": "99MMANNO", "value": "L1", "meaning": "左肺"}


def _unpadded(value: object) -> object:
    values = list(value) if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]
    return [str(v).strip() for v in values]


def _header_variant(grid: ReferenceGrid, folder: Path, variant: str) -> ReferenceGrid:
    """The grid with its first file replaced by a copy whose header is changed as ``variant`` says."""
    import dataclasses

    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    ds = pydicom.dcmread(grid.files[0])
    if variant == "gb18030":
        ds.SpecificCharacterSet = "GB18030"
        ds.PatientName = "Wang^Fang=王^芳"
        ds.StudyDescription = "胸部 CT 平扫"
    if variant in ("padding", "sequence", "implicit"):
        ds.OtherPatientNames = ["Wang^F ", " Fang^W"]
        ds.PatientComments = "  leading spaces are kept in LT  "
        ds.PatientWeight = "70.5"
        ds.AdditionalPatientHistory = "cough\\r\\nsmoker"
    if variant in ("sequence", "implicit"):
        other = Dataset()
        other.PatientID = "OTHER-1"
        other.IssuerOfPatientID = "HIS"
        other.TypeOfPatientID = "TEXT"
        ds.OtherPatientIDsSequence = DicomSequence([other])
    folder.mkdir()
    path = folder / "first.dcm"
    if variant == "implicit":
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
        if pydicom.__version__ >= "3":
            ds.save_as(path, implicit_vr=True, little_endian=True)
        else:  # pydicom 2.4 encodes by these flags
            ds.is_implicit_VR, ds.is_little_endian = True, True
            ds.save_as(path, write_like_original=False)
    else:
        ds.save_as(path)
    return dataclasses.replace(grid, files=(str(path), *grid.files[1:]))


@pytest.mark.parametrize("variant", ["plain", "gb18030", "padding", "sequence", "implicit"])
def test_image_attributes_copied_from_the_bytes_as_pydicom_copies_them(series, tmp_path: Path, variant: str,  # type: ignore[no-untyped-def]
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """R-002, R-5.7 (speed): Patient and Study attributes are copied from the first image's bytes
    (no pydicom): UTF-8 and GB18030 text, multi-valued names, LT with leading spaces and an explicit
    VR sequence give the same structure set as the pydicom route (the same bytes where there is
    no sequence); an implicit VR header with a sequence goes to pydicom."""
    from RTSSBridgeLib import rtss_export

    _folder, grid = series["axial"]
    grid = _header_variant(grid, tmp_path / "ct", variant)
    assert (rtss_export._copied_raw(grid.files[0]) is None) == (variant == "implicit")
    rois = hard_masks(grid.geometry.array_shape)[:2]
    fixed = ExportOptions(sop_instance_uid="2.25.1", series_instance_uid="2.25.2", date="20240101", time="000000")
    export_rtss(rois, grid, tmp_path / "raw.dcm", options=fixed)
    monkeypatch.setattr(rtss_export, "_copied_raw", lambda path: None)
    export_rtss(rois, grid, tmp_path / "pydicom.dcm", options=fixed)
    raw, slow = (pydicom.dcmread(tmp_path / n) for n in ("raw.dcm", "pydicom.dcm"))
    assert raw.file_meta == slow.file_meta and [e.tag for e in raw] == [e.tag for e in slow]
    for element in raw:  # equal, or equal but for padding pydicom versions keep differently inside values
        other = slow[element.tag]
        assert element == other or _unpadded(element.value) == _unpadded(other.value), element
    if variant not in ("sequence", "implicit"):
        assert (tmp_path / "raw.dcm").read_bytes() == (tmp_path / "pydicom.dcm").read_bytes()
    image = pydicom.dcmread(grid.files[0], stop_before_pixels=True)
    for keyword in ("PatientName", "StudyDescription", "OtherPatientNames", "PatientComments", "PatientWeight",
                    "OtherPatientIDsSequence"):
        assert raw.get(keyword) == image.get(keyword), keyword


def test_implementation_class_uid_is_the_sample_writers() -> None:
    from RTSSBridgeLib.rtss_export import IMPLEMENTATION_CLASS_UID
    from RTSSBridgeLib.samples import dicom_writer

    assert IMPLEMENTATION_CLASS_UID == dicom_writer.IMPLEMENTATION_CLASS_UID


def test_export_from_mask_files_imports_neither_pydicom_nor_nibabel(series, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """R-5.7 (speed): ``mmanno rtss export MASK.nii... --series CT`` reads the masks, the series
    headers and writes the structure set without importing pydicom, nibabel, jsonschema or scipy
    (their imports were 0.15-0.3 s of a 1.4 s export), and the file is exact."""
    from RTSSBridgeLib.nifti import write_nifti

    folder, grid = series["oblique"]
    rois = hard_masks(grid.geometry.array_shape)
    paths = []
    for roi in rois:
        assert roi.mask is not None
        paths.append(str(tmp_path / f"{roi.name}.nii"))
        write_nifti(paths[-1], roi.mask.full().astype(np.uint8), grid.geometry)
    assert run_cli_in_fresh_process(["rtss", "export", *paths, "--series", str(folder),
                                     "--out", str(tmp_path / "rt.dcm"), "--quiet"]) == (0, [])
    back = import_rtss(tmp_path / "rt.dcm", folder)
    for original, imported in zip(rois, back.rois):
        assert original.mask is not None and imported.mask is not None and original.mask.same_as(imported.mask)


def test_copied_attribute_tags_and_vrs_are_the_dictionarys() -> None:
    """The tag and VR table the byte-level copy uses names every copied attribute as DICOM does."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    from RTSSBridgeLib.rtss_export import _COPIED_TAGS, COPIED_KEYWORDS

    assert list(_COPIED_TAGS) == list(COPIED_KEYWORDS)
    for keyword, (tag, vr) in _COPIED_TAGS.items():
        assert (tag, vr) == (tag_for_keyword(keyword), dictionary_VR(tag_for_keyword(keyword))), keyword
