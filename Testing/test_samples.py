"""Sample-case generator (RTSSBridgeLib.samples): realism, ground truth, determinism, options, errors.

Each kind is generated once per session at its default size (``cases``) and a few small variants
are generated for determinism and option tests. Expected voxel values come from the generator's
own plan (``plan_sample(...).volume(key).intended(k)``), read values from SimpleITK.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import jsonschema
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from RTSSBridgeLib.errors import InputError, NotApplicableError
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.samples import (
    KINDS,
    PRIVATE_CREATOR,
    SCHEMA_ID,
    PixelEncoding,
    SampleCase,
    load_schema,
    plan_sample,
    schema_path,
    validate_manifest,
    write_enhanced_multiframe,
    write_sample,
    write_volume_series,
)
from RTSSBridgeLib.samples import case as case_module
from RTSSBridgeLib.samples.phantom import rotation_matrix

VOLUME_KINDS = ("ct-chest", "mr-brain-mets", "pet-ct")
SMALL = {"ct-chest": {"slices": 6}, "mr-brain-mets": {"slices": 6}, "pet-ct": {"slices": 6},
         "us-thyroid": {}, "xray-ra": {}}
SOP_CLASSES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
               "PT": "1.2.840.10008.5.1.4.1.1.128", "US": "1.2.840.10008.5.1.4.1.1.6.1",
               "CR": "1.2.840.10008.5.1.4.1.1.1"}


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, SampleCase]:
    root = tmp_path_factory.mktemp("samples")
    return {kind: write_sample(kind, root / kind, seed=0) for kind in KINDS}


@pytest.fixture(scope="session")
def small_runs(tmp_path_factory: pytest.TempPathFactory) -> Dict[Tuple[str, str], SampleCase]:
    """Small variants: seed 0 twice ("a", "b") and seed 1 ("c") of every kind."""
    root = tmp_path_factory.mktemp("small")
    out = {}
    for kind in KINDS:
        for tag, seed in (("a", 0), ("b", 0), ("c", 1)):
            out[(kind, tag)] = write_sample(kind, root / f"{kind}-{tag}", seed=seed, **SMALL[kind])
    return out


@pytest.fixture(scope="session")
def plans() -> Dict[str, Any]:
    return {kind: plan_sample(kind, seed=0) for kind in VOLUME_KINDS}


@pytest.fixture(scope="session")
def sitk_series(cases: Dict[str, SampleCase]) -> Dict[Tuple[str, str], sitk.Image]:
    """Every 3-D series of the default cases read with SimpleITK's ImageSeriesReader (GDCM order)."""
    out = {}
    for kind in VOLUME_KINDS:
        for s in cases[kind].series:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(s.dir)))
            out[(kind, s.key)] = reader.Execute()
    return out


def manifest(case: SampleCase) -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads(case.manifest.read_text(encoding="utf-8"))
    return data


def sitk_geometry(image: sitk.Image) -> ImageGeometry:
    return ImageGeometry(image.GetSize(), image.GetSpacing(), image.GetOrigin(),
                         np.reshape(image.GetDirection(), (3, 3)))


def load_nifti(path: Path) -> Any:
    return nib.load(str(path))


def read_labels(path: Path) -> Tuple[np.ndarray, np.ndarray, Any]:
    """Labelmap as [k, j, i] plus the affine and the header."""
    image = load_nifti(path)
    return np.asarray(image.dataobj).T, image.affine, image.header


def files_of(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def ring(mask: np.ndarray, width: int, exclude: int = 1) -> np.ndarray:
    """Voxels within ``width`` of the mask but more than ``exclude`` away from it (computed in its box)."""
    out = np.zeros_like(mask, dtype=bool)
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    box = tuple(slice(max(s.start - width - 1, 0), s.stop + width + 1) for s in box)
    part = mask[box]
    grown = ndimage.binary_dilation(part, iterations=width)
    inner = ndimage.binary_dilation(part, iterations=exclude)
    out[box] = grown & ~inner
    return out


# ---------------------------------------------------------------------------------------------- schema
def _walk_properties(node: Any, path: str, missing: List[str]) -> None:
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            if "description" not in sub or "examples" not in sub:
                missing.append(f"{path}/{name}")
        for key, sub in node.items():
            _walk_properties(sub, f"{path}/{key}", missing)
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            _walk_properties(sub, f"{path}[{i}]", missing)


def test_schema_is_versioned_and_every_property_documented() -> None:
    schema = load_schema()
    assert schema["$id"].endswith("/v1") and schema["$id"] == SCHEMA_ID
    jsonschema.validators.validator_for(schema).check_schema(schema)
    missing: List[str] = []
    _walk_properties(schema, "", missing)
    assert missing == []


def test_validate_manifest_rejects_a_broken_manifest(cases: Dict[str, SampleCase]) -> None:
    data = manifest(cases["us-thyroid"])
    del data["series"][0]["geometry"]
    with pytest.raises(InputError, match=r"case\.json: schema: series/0: 'geometry' is a required property"):
        validate_manifest(data)


@pytest.mark.parametrize("kind", KINDS)
def test_case_layout_and_manifest(cases: Dict[str, SampleCase], kind: str) -> None:
    case = cases[kind]
    data = manifest(case)
    jsonschema.validate(data, json.loads(schema_path().read_text(encoding="utf-8")))
    assert data["kind"] == kind and data["seed"] == 0 and case.kind == kind
    assert sorted(p.name for p in case.root.iterdir()) == ["case.json", "dicom", "ground_truth"]
    assert [s["key"] for s in data["series"]] == [s.key for s in case.series]
    for entry, record in zip(data["series"], case.series):
        files = sorted(record.dir.glob("*.dcm"))
        assert record.dir == case.root / entry["dir"]
        assert len(files) == entry["n_files"] == record.n_files
        assert record.geometry == ImageGeometry.from_dict(entry["geometry"])
        assert entry["sop_class_uid"] == SOP_CLASSES[entry["modality"]]
    for gt in data["ground_truth"]:
        assert (case.root / gt["path"]).is_file(), gt["path"]
    assert not list(case.root.parent.glob(".*partial*"))


# ---------------------------------------------------------------------------------------------- DICOM files
@pytest.mark.parametrize("kind", KINDS)
def test_every_file_reads_with_pydicom_and_simpleitk(cases: Dict[str, SampleCase], kind: str) -> None:
    case = cases[kind]
    data = manifest(case)
    for entry in data["series"]:
        for path in sorted((case.root / entry["dir"]).glob("*.dcm")):
            ds = pydicom.dcmread(path)
            assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
            assert ds.SOPClassUID == entry["sop_class_uid"] == ds.file_meta.MediaStorageSOPClassUID
            assert ds.SeriesInstanceUID == entry["series_instance_uid"]
            assert ds.StudyInstanceUID == entry["study_instance_uid"]
            assert ds.get("FrameOfReferenceUID") == entry["frame_of_reference_uid"]
            assert ds.SpecificCharacterSet == "ISO_IR 192"
            enc = entry["pixel_encoding"]
            assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation, ds.PhotometricInterpretation) == (
                enc["bits_allocated"], enc["bits_stored"], enc["pixel_representation"],
                enc["photometric_interpretation"])
            assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
            image = sitk.ReadImage(str(path))
            assert image.GetSize()[:2] == (ds.Columns, ds.Rows)


def test_modality_specific_attributes(cases: Dict[str, SampleCase]) -> None:
    def first(kind: str, key: str) -> pydicom.Dataset:
        return pydicom.dcmread(next(cases[kind].series_by_key(key).dir.glob("*.dcm")))

    ct = first("ct-chest", "CT")
    assert (ct.BitsStored, ct.PixelRepresentation, float(ct.RescaleIntercept), ct.RescaleType) == (12, 0, -1024, "HU")
    assert ct.KVP and ct.ConvolutionKernel and ct.WindowCenter and float(ct.SliceThickness) == 1.25
    assert list(map(float, ct.ImageOrientationPatient)) == [1, 0, 0, 0, 1, 0] and ct.PatientPosition == "HFS"
    petct = first("pet-ct", "CT")
    assert (petct.BitsStored, petct.PixelRepresentation, float(petct.RescaleIntercept)) == (16, 1, -1024)
    mr = first("mr-brain-mets", "T1W_C")
    assert mr.BitsStored == 12 and "RescaleSlope" not in mr
    assert mr.ScanningSequence and mr.SequenceVariant and mr.SequenceName and float(mr.MagneticFieldStrength) == 3
    assert float(mr.EchoTime) > 0 and float(mr.RepetitionTime) > 0 and mr.ContrastBolusAgent
    t2 = first("mr-brain-mets", "T2W")
    assert float(t2.SliceThickness) == 3.0 and float(t2.SpacingBetweenSlices) == 3.5
    pt = first("pet-ct", "PT")
    assert (pt.Units, pt.DecayCorrection, pt.PhotometricInterpretation) == ("BQML", "START", "MONOCHROME2")
    assert "ATTN" in pt.CorrectedImage and float(pt.PatientWeight) > 0
    radio = pt.RadiopharmaceuticalInformationSequence[0]
    assert radio.RadionuclideCodeSequence[0].CodeMeaning == "^18^Fluorine"
    assert radio.RadiopharmaceuticalCodeSequence[0].CodeValue == "35321007"
    assert float(radio.RadionuclideHalfLife) == pytest.approx(6586.2) and float(radio.RadionuclideTotalDose) > 1e8
    slopes = {float(pydicom.dcmread(p, stop_before_pixels=True).RescaleSlope)
              for p in cases["pet-ct"].series_by_key("PT").dir.glob("*.dcm")}
    assert len(slopes) > 20 and all(s != int(s) for s in slopes)  # a float slope per slice
    us = first("us-thyroid", "US")
    region = us.SequenceOfUltrasoundRegions[0]
    assert (us.BitsAllocated, us.PhotometricInterpretation, region.PhysicalUnitsXDirection) == (8, "MONOCHROME2", 3)
    assert region.PhysicalDeltaX == pytest.approx(0.0075) and "ImageOrientationPatient" not in us
    hand, foot = first("xray-ra", "CR_HAND"), first("xray-ra", "CR_FOOT")
    assert (hand.PhotometricInterpretation, foot.PhotometricInterpretation) == ("MONOCHROME1", "MONOCHROME2")
    assert [float(v) for v in hand.ImagerPixelSpacing] == [0.25, 0.25] and hand.ViewPosition == "PA"
    assert (hand.BodyPartExamined, foot.BodyPartExamined, hand.ImageLaterality) == ("HAND", "FOOT", "B")
    assert (hand.StudyDescription, foot.StudyDescription) == ("HAND BILAT", "FOOT BILAT")
    assert (hand.AccessionNumber, foot.AccessionNumber) == ("RAH00001", "RAF00001")
    assert hand.PatientID == foot.PatientID and hand.StudyInstanceUID != foot.StudyInstanceUID


@pytest.mark.parametrize("kind", KINDS)
def test_identifying_values_are_planted(cases: Dict[str, SampleCase], kind: str) -> None:
    case = cases[kind]
    data = manifest(case)
    blobs = [p.read_bytes() for s in case.series for p in sorted(s.dir.glob("*.dcm"))[:2]]
    values = data["identifying_values"]
    assert values["PatientName"].count("=") == 1 and re.search(r"[\u4e00-\u9fff]", values["PatientName"])
    for keyword, value in values.items():
        for v in value if isinstance(value, list) else [value]:
            assert any(v.encode("utf-8") in b for b in blobs), (keyword, v)
    ds = pydicom.dcmread(next(case.series[0].dir.glob("*.dcm")))
    block = ds.private_block(0x0009, PRIVATE_CREATOR)
    assert values["PatientNamePinyin"] in block[0x10].value
    assert values["PatientNamePinyin"] in ds.ImageComments
    assert values["PatientNamePinyin"] in ds.AdditionalPatientHistory
    assert str(ds.PatientName) == values["PatientName"] and ds.PatientBirthDate == values["PatientBirthDate"]


# ---------------------------------------------------------------------------------------------- structure sets
@pytest.mark.parametrize(("kind", "labels_file", "series_key"), [("ct-chest", "ct_labels.nii.gz", "CT"),
                                                                  ("mr-brain-mets", "mr_labels.nii.gz", "T1W_C")])
def test_structure_set_is_its_own_series_and_imports_back_exactly(cases: Dict[str, SampleCase], kind: str,
                                                                  labels_file: str, series_key: str) -> None:
    """R-002/R-5.7: the sample's RTSS (lungs + nodules; lesions + *Skull on T1W+C) sits in the dicom
    folder as its own series, references its image series, copies patient and study, and imports
    back voxel for voxel onto the ground-truth labels (Dice 1.0 per ROI)."""
    from RTSSBridgeLib.roi import RoiMask, dice
    from RTSSBridgeLib.rtss_import import import_rtss

    case = cases[kind]
    data = manifest(case)
    (entry,) = data["structure_sets"]
    images = case.series_by_key(series_key)
    assert entry["referenced_series_key"] == series_key and entry["referenced_series_instance_uid"] == images.series_uid
    gt = [g for g in data["ground_truth"] if g["format"] == "rtstruct"]
    assert gt == [{"name": "structure_set", "path": f"{entry['dir']}/{entry['file']}", "format": "rtstruct",
                   "series_key": series_key, "description": gt[0]["description"]}]
    path = case.root / entry["dir"] / entry["file"]
    assert sorted(p.name for p in (case.root / entry["dir"]).iterdir()) == [entry["file"]]
    ds = pydicom.dcmread(path)
    image = pydicom.dcmread(next(images.dir.glob("*.dcm")), stop_before_pixels=True)
    assert ds.Modality == "RTSTRUCT" and ds.SOPInstanceUID == entry["sop_instance_uid"]
    assert ds.SeriesInstanceUID == entry["series_instance_uid"] != image.SeriesInstanceUID
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "AccessionNumber"):
        assert ds.get(keyword) == image.get(keyword), keyword
    assert ds.StructureSetLabel == entry["structure_set_label"]
    result = import_rtss(path, case.root / "dicom")
    assert result.all_problems() == []
    assert result.reference is not None and result.reference.series_instance_uid == images.series_uid
    labels = read_labels(case.root / "ground_truth" / labels_file)[0]
    for spec, roi in zip(entry["rois"], result.rois):
        assert roi.name == spec["roi_name"] and roi.number == spec["roi_number"]
        assert roi.mask is not None and roi.voxel_count() == spec["n_voxels"] > 0
        assert dice(RoiMask.from_full(labels == spec["label_value"]), roi.mask) == 1.0, spec["roi_name"]
        assert roi.color == tuple(spec["color"]) and roi.interpreted_type == spec["interpreted_type"]


def test_mr_structure_set_uses_seed_002_names_and_colours(cases: Dict[str, SampleCase]) -> None:
    data = manifest(cases["mr-brain-mets"])
    (entry,) = data["structure_sets"]
    lesions = json.loads((cases["mr-brain-mets"].root / "ground_truth/lesions.json").read_text(encoding="utf-8"))
    assert entry["structure_set_label"] == "ROIs in axC" == lesions["structure_set_label"]
    names = [r["roi_name"] for r in entry["rois"]]
    assert names[-1] == "*Skull" and all(re.fullmatch(r"[LR]_[a-z_]+?(_\d+)?", n) for n in names[:-1]), names
    assert [r["roi_name"] for r in lesions["rois"][:-1]] == names[:-1]
    assert {tuple(r["color"]) for r in entry["rois"][:-1]} == {(255, 0, 255)}
    assert entry["rois"][-1]["color"] == [255, 0, 0]


def test_dropped_slice_is_still_referenced_and_its_contours_are_clipped(tmp_path: Path) -> None:
    """With drop_slice the structure set keeps referencing the lost image (as when an image goes
    missing after contouring): the importer clips those contours and says so, per ROI."""
    from RTSSBridgeLib.roi import RoiProblemCode
    from RTSSBridgeLib.rtss_import import import_rtss

    case = write_sample("ct-chest", tmp_path / "ct", seed=1, slices=20, drop_slice=10)
    (entry,) = manifest(case)["structure_sets"]
    result = import_rtss(case.root / entry["dir"] / entry["file"], case.root / "dicom")
    assert [p.code for p in result.problems] == [RoiProblemCode.UNRESOLVED_SERIES_IMAGES]
    labels = read_labels(case.root / "ground_truth/ct_labels.nii.gz")[0]
    for spec, roi in zip(entry["rois"], result.rois):
        on_lost_slice = bool(np.any(labels[10] == spec["label_value"]))
        codes = [p.code for p in roi.problems]
        assert (RoiProblemCode.CONTOURS_OUTSIDE_SERIES in codes) == on_lost_slice, spec["roi_name"]
        assert roi.voxel_count() == spec["n_voxels"] - int(np.count_nonzero(labels[10] == spec["label_value"]))


# ---------------------------------------------------------------------------------------------- geometry, values
@pytest.mark.parametrize(("kind", "key"), [("ct-chest", "CT"), ("mr-brain-mets", "T1W"), ("mr-brain-mets", "T2W"),
                                           ("mr-brain-mets", "T1W_C"), ("pet-ct", "CT"), ("pet-ct", "PT")])
def test_sitk_reads_recorded_geometry_and_intended_values(cases: Dict[str, SampleCase], plans: Dict[str, Any],
                                                          sitk_series: Dict[Tuple[str, str], sitk.Image],
                                                          kind: str, key: str) -> None:
    image = sitk_series[(kind, key)]
    recorded = cases[kind].series_by_key(key).geometry
    assert sitk_geometry(image).max_corner_distance_mm(recorded) <= 1e-4
    volume = sitk.GetArrayViewFromImage(image)
    plan = plans[kind].volume(key)
    n = recorded.shape[2]
    for k in (0, n // 3, n - 1):
        np.testing.assert_allclose(volume[k], plan.intended(k), rtol=1e-9, atol=1e-9)


def test_instance_numbers_run_head_to_feet_and_names_hide_order(cases: Dict[str, SampleCase]) -> None:
    series = cases["ct-chest"].series_by_key("CT")
    heads = [(p.name, pydicom.dcmread(p, stop_before_pixels=True)) for p in series.dir.glob("*.dcm")]
    by_z = sorted(heads, key=lambda h: float(h[1].ImagePositionPatient[2]))
    numbers = [int(h[1].InstanceNumber) for h in by_z]
    assert numbers == list(range(len(numbers), 0, -1))
    assert [h[0] for h in by_z] != sorted(h[0] for h in heads)
    assert np.allclose(np.diff([float(h[1].ImagePositionPatient[2]) for h in by_z]), 1.25)


# ---------------------------------------------------------------------------------------------- ground truth
def _labelmap_matches_grid(case: SampleCase, gt_path: str, key: str) -> np.ndarray:
    labels, affine, header = read_labels(case.root / gt_path)
    geometry = case.series_by_key(key).geometry
    assert labels.shape == geometry.array_shape
    np.testing.assert_allclose(affine, geometry.ijk_to_ras_matrix(), atol=1e-5)
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 1
    return labels


def test_ct_chest_ground_truth(cases: Dict[str, SampleCase], plans: Dict[str, Any],
                               sitk_series: Dict[Tuple[str, str], sitk.Image]) -> None:
    case = cases["ct-chest"]
    labels = _labelmap_matches_grid(case, "ground_truth/ct_labels.nii.gz", "CT")
    plan = plans["ct-chest"].volume("CT")
    for k in (5, 70, 120):
        np.testing.assert_array_equal(labels[k], plan.label_slice(k))
    hu = sitk.GetArrayViewFromImage(sitk_series[("ct-chest", "CT")])
    assert hu[labels == 1].mean() < -700 and hu[labels == 2].mean() < -700
    nodules = json.loads((case.root / "ground_truth/nodules.json").read_text(encoding="utf-8"))["nodules"]
    assert 2 <= len(nodules) <= 4
    files = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p
             for p in case.series_by_key("CT").dir.glob("*.dcm")}
    for n in nodules:
        mask = labels == n["label_value"]
        assert mask.sum() == n["n_voxels"] > 0 and 3.0 <= n["diameter_mm"] <= 15.0
        assert labels[n["k"], n["y"], n["x"]] == n["label_value"] and n["z"] == n["k"] + 1
        ds = pydicom.dcmread(files[n["sop_instance_uid"]], stop_before_pixels=True)
        assert int(ds.InstanceNumber) == n["instance_number"]
        z = case.series_by_key("CT").geometry.slice_position_lps(n["k"])[2]
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(z)
        around = ring(mask, 4) & (labels > 0) & (labels < 10)
        assert hu[mask].mean() > hu[around].mean() + 200
        assert (n["classification"] == "malignant") == (n["tnm"] is not None)
    follow = json.loads((case.root / "ground_truth/follow_up.json").read_text(encoding="utf-8"))
    assert follow["status_death"] in (0, 1) and follow["recurrence"] in (0, 1) and follow["Gender"] in "MF"


def test_mr_brain_mets_ground_truth_and_registration(cases: Dict[str, SampleCase],
                                                     sitk_series: Dict[Tuple[str, str], sitk.Image]) -> None:
    case = cases["mr-brain-mets"]
    data = manifest(case)
    assert len({s["frame_of_reference_uid"] for s in data["series"]}) == 1
    assert len({s["study_instance_uid"] for s in data["series"]}) == 1
    assert [s["series_description"] for s in data["series"]] == ["AXI T1 SE", "AXI T2 TSE", "AXI T1 SE+C"]
    labels = _labelmap_matches_grid(case, "ground_truth/mr_labels.nii.gz", "T1W_C")
    t1c = sitk.GetArrayViewFromImage(sitk_series[("mr-brain-mets", "T1W_C")])
    t1 = sitk.GetArrayViewFromImage(sitk_series[("mr-brain-mets", "T1W")])
    t2 = sitk.GetArrayViewFromImage(sitk_series[("mr-brain-mets", "T2W")])
    rois = json.loads((case.root / "ground_truth/lesions.json").read_text(encoding="utf-8"))["rois"]
    lesions = [r for r in rois if r["type"] == "metastasis"]
    assert 3 <= len(lesions) <= 8 and rois[-1]["roi_name"] == "Skull"
    brain = labels == 1
    for r in lesions:
        assert re.fullmatch(r"[RL]_(lat_|mid_)?[a-z_]+?(_\d)?", r["roi_name"]), r["roi_name"]
        mask = labels == r["label_value"]
        assert mask.sum() == r["n_voxels"] > 0 and 1.5 <= r["radius_mm"] <= 6.0
        assert t1c[mask].mean() > 1.3 * t1c[brain].mean()  # enhances after contrast
        assert t1c[mask].mean() > 1.3 * t1[mask].mean()
    reg = data["registration"]
    m = np.asarray(reg["matrix_lps"])
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-9)
    angle = np.degrees(np.arccos((np.trace(m[:3, :3]) - 1) / 2))
    assert 1.0 < angle < 8.0 and 1.0 < np.linalg.norm(m[:3, 3]) < 10.0
    landmarks = json.loads((case.root / reg["landmarks_path"]).read_text(encoding="utf-8"))
    assert len(landmarks["pairs"]) >= 6
    t2_geometry = case.series_by_key("T2W").geometry
    for pair in landmarks["pairs"]:
        fixed, moving = np.asarray(pair["fixed_lps_mm"]), np.asarray(pair["moving_lps_mm"])
        np.testing.assert_allclose(m[:3, :3] @ fixed + m[:3, 3], moving, atol=1e-5)
        np.testing.assert_allclose(t2_geometry.lps_to_ijk(moving), pair["moving_ijk"], atol=1e-3)
    big = max(lesions, key=lambda r: r["radius_mm"])
    pair = next(p for p in landmarks["pairs"] if p["name"] == f"lesion_{big['roi_name']}")
    i, j, k = (round(v) for v in pair["moving_ijk"])
    assert t2[k, j, i] > 1000  # T2-bright lesion found where the matrix puts it in the moved head
    centre = case.series_by_key("T1W_C").geometry.lps_to_ijk(pair["fixed_lps_mm"])
    i, j, k = (round(v) for v in centre)
    assert labels[k, j, i] == big["label_value"]


def test_pet_ct_ground_truth_and_suv(cases: Dict[str, SampleCase],
                                     sitk_series: Dict[Tuple[str, str], sitk.Image]) -> None:
    case = cases["pet-ct"]
    data = manifest(case)
    assert len({s["frame_of_reference_uid"] for s in data["series"]}) == 1
    ct_geometry, pt_geometry = case.series_by_key("CT").geometry, case.series_by_key("PT").geometry
    assert ct_geometry.shape != pt_geometry.shape and ct_geometry.origin_lps != pt_geometry.origin_lps
    ct_labels = _labelmap_matches_grid(case, "ground_truth/ct_lesions.nii.gz", "CT")
    pt_labels = _labelmap_matches_grid(case, "ground_truth/pet_lesions.nii.gz", "PT")
    pet = sitk.GetArrayViewFromImage(sitk_series[("pet-ct", "PT")])
    suv = data["suv"]
    ds = pydicom.dcmread(next(case.series_by_key("PT").dir.glob("*.dcm")), stop_before_pixels=True)
    radio = ds.RadiopharmaceuticalInformationSequence[0]
    from datetime import datetime

    start = datetime.strptime(ds.SeriesDate + ds.SeriesTime[:6], "%Y%m%d%H%M%S")
    injected = datetime.strptime(radio.RadiopharmaceuticalStartDateTime[:14], "%Y%m%d%H%M%S")
    decay = 2.0 ** (-(start - injected).total_seconds() / float(radio.RadionuclideHalfLife))
    factor = float(ds.PatientWeight) * 1000.0 / (float(radio.RadionuclideTotalDose) * decay)
    assert factor == pytest.approx(suv["bqml_to_suv_bw"], rel=1e-6)
    lesions = json.loads((case.root / "ground_truth/lesions.json").read_text(encoding="utf-8"))["lesions"]
    assert 2 <= len(lesions) <= 3
    for lesion in lesions:
        value = lesion["label_value"]
        pt_mask, ct_mask = pt_labels == value, ct_labels == value
        assert pt_mask.sum() == lesion["n_voxels_pet"] > 0 and ct_mask.sum() == lesion["n_voxels_ct"] > 0
        assert pet[pt_mask].mean() * factor == pytest.approx(lesion["suv_mean_intended"], rel=0.1)
        assert pet[pt_mask].mean() > 2.0 * pet[ring(pt_mask, 2)].mean()
        # the two masks describe the same place in the shared frame of reference
        c_ct = ct_geometry.ijk_to_lps(np.argwhere(ct_mask)[:, ::-1].mean(axis=0))
        c_pt = pt_geometry.ijk_to_lps(np.argwhere(pt_mask)[:, ::-1].mean(axis=0))
        assert np.linalg.norm(c_ct - c_pt) < 2.0
        assert np.linalg.norm(c_ct - np.asarray(lesion["centre_lps_mm"])) < 1.0


def test_us_thyroid_ground_truth(cases: Dict[str, SampleCase], tmp_path: Path) -> None:
    case = cases["us-thyroid"]
    image = load_nifti(case.root / "ground_truth/us_nodule_mask.nii.gz")
    assert image.shape == (640, 480, 1)
    np.testing.assert_allclose(image.header.get_zooms(), [0.075, 0.075, 1.0])
    info = json.loads((case.root / "ground_truth/nodule.json").read_text(encoding="utf-8"))
    ds = pydicom.dcmread(case.root / info["file"])
    region = ds.SequenceOfUltrasoundRegions[0]
    assert info["pixel_spacing_mm"] == [pytest.approx(region.PhysicalDeltaX * 10)] * 2
    mask = np.asarray(image.dataobj)[:, :, 0].T.astype(bool)  # [row, column]
    rows, cols = np.nonzero(mask)
    box = info["nodule"]["bbox_px"]
    assert (box["x_min"], box["x_max"], box["y_min"], box["y_max"]) == (cols.min(), cols.max(), rows.min(), rows.max())
    assert region.RegionLocationMinX0 <= box["x_min"] and box["x_max"] <= region.RegionLocationMaxX1
    tirads = info["tirads"]
    assert tirads["total_points"] == sum(f["points"] for f in tirads["features"].values())
    assert tirads["level"] in ("TR1", "TR2", "TR3", "TR4", "TR5") and tirads["level"] in info["report"]["text_en"]
    # hypoechoic nodules are darker than the thyroid around them
    seen_hypo = 0
    for seed in range(6):
        sample = case if seed == 0 else write_sample("us-thyroid", tmp_path / f"us{seed}", seed=seed)
        nodule = json.loads((sample.root / "ground_truth/nodule.json").read_text(encoding="utf-8"))
        if nodule["tirads"]["features"]["echogenicity"]["value"] not in ("hypoechoic", "very hypoechoic"):
            continue
        seen_hypo += 1
        pixels = pydicom.dcmread(sample.root / nodule["file"]).pixel_array.astype(float)
        m = np.asarray(load_nifti(sample.root / "ground_truth/us_nodule_mask.nii.gz").dataobj)[:, :, 0].T > 0
        assert pixels[m].mean() < 0.75 * pixels[ring(m, 25, 8)].mean()
    assert seen_hypo >= 2


def _joint_pixels(case: SampleCase) -> Tuple[List[Dict[str, Any]], Dict[str, np.ndarray]]:
    joints = json.loads((case.root / "ground_truth/joints.json").read_text(encoding="utf-8"))["joints"]
    images = {}
    for key in ("CR_HAND", "CR_FOOT"):
        ds = pydicom.dcmread(next(case.series_by_key(key).dir.glob("*.dcm")))
        a = ds.pixel_array.astype(float)
        images[key] = (4095 - a) if ds.PhotometricInterpretation == "MONOCHROME1" else a  # attenuation sense
    return joints, images


def test_xray_ra_scores_and_joints(cases: Dict[str, SampleCase], tmp_path: Path) -> None:
    case = cases["xray-ra"]
    with open(case.root / "ground_truth/scores.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    header = list(rows[0])
    assert header[:8] == ["NO.", "Package_im_no.", "REQ_H", "Exam_date_H", "Abnormal_orientation_H", "REQ_F",
                          "Exam_date_F", "Abnormal_orientation_F"]
    erosion = [h for h in header if h.startswith("erosion_")]
    jsn = [h for h in header if h.startswith("JSN_")]
    assert len(erosion) == 44 and len(jsn) == 42 and header == header[:8] + erosion + jsn
    assert all(0 <= int(rows[0][c]) <= 5 for c in erosion) and all(0 <= int(rows[0][c]) <= 4 for c in jsn)
    assert (rows[0]["REQ_H"], rows[0]["REQ_F"], rows[0]["Package_im_no."]) == ("RAH00001", "RAF00001", "RA00001")
    joints, images = _joint_pixels(case)
    assert {j["code"] for j in joints} >= {c.split("_", 1)[1] for c in erosion + jsn}
    for j in joints:
        image = images[j["series_key"]]
        assert 0 <= j["x"] < image.shape[1] and 0 <= j["y"] < image.shape[0]
        assert image[round(j["y"]), round(j["x"])] > 700, j["code"]  # inside the hand or foot, not in air
        if "erosion" in j["scored_for"]:
            assert int(rows[0][f"erosion_{j['code']}"]) == j["erosion"]
    # an exam flagged Abnormal_orientation is stored rotated; its joint positions follow
    seed = next(s for s in range(1, 60) if plan_sample("xray-ra", seed=s).data["flags"]["H"] == 1)
    flagged = write_sample("xray-ra", tmp_path / "flagged", seed=seed)
    joints, images = _joint_pixels(flagged)
    hand = [j for j in joints if j["exam"] == "hand"]
    assert all(images["CR_HAND"][round(j["y"]), round(j["x"])] > 700 for j in hand)
    tips = [j["y"] for j in hand if j["joint"].startswith("PIP")]
    wrist = [j["y"] for j in hand if j["joint"] in ("RADIUS", "ULNA")]
    assert min(tips) > max(wrist)  # fingers point down: rotated by 180 degrees


# ---------------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("kind", KINDS)
def test_same_arguments_give_byte_identical_cases(small_runs: Dict[Tuple[str, str], SampleCase], kind: str) -> None:
    a, b = files_of(small_runs[(kind, "a")].root), files_of(small_runs[(kind, "b")].root)
    assert list(a) == list(b)
    assert [name for name in a if a[name] != b[name]] == []


@pytest.mark.parametrize("kind", KINDS)
def test_different_seed_gives_a_different_case(small_runs: Dict[Tuple[str, str], SampleCase], kind: str) -> None:
    a, c = manifest(small_runs[(kind, "a")]), manifest(small_runs[(kind, "c")])
    assert a["identifying_values"]["PatientID"] != c["identifying_values"]["PatientID"]
    assert {s["series_instance_uid"] for s in a["series"]}.isdisjoint(s["series_instance_uid"] for s in c["series"])
    names_a = {p.name for s in small_runs[(kind, "a")].series for p in s.dir.glob("*.dcm")}
    names_c = {p.name for s in small_runs[(kind, "c")].series for p in s.dir.glob("*.dcm")}
    assert names_a.isdisjoint(names_c)
    gt = {"ct-chest": "nodules.json", "mr-brain-mets": "lesions.json", "pet-ct": "lesions.json",
          "us-thyroid": "nodule.json", "xray-ra": "scores.csv"}[kind]
    texts = [(small_runs[(kind, t)].root / "ground_truth" / gt).read_text(encoding="utf-8") for t in "ac"]
    assert texts[0] != texts[1]


# ---------------------------------------------------------------------------------------------- options
def test_oblique_rotates_the_primary_grid_only(tmp_path: Path) -> None:
    straight = write_sample("ct-chest", tmp_path / "straight", seed=3, slices=16)
    tilted = write_sample("ct-chest", tmp_path / "tilted", seed=3, slices=16, oblique=True)
    g0, g1 = straight.series[0].geometry, tilted.series[0].geometry
    rot = rotation_matrix("y", 7.0) @ rotation_matrix("x", 12.0)
    np.testing.assert_allclose(g1.direction_matrix, rot @ g0.direction_matrix, atol=1e-12)
    ds = pydicom.dcmread(next(tilted.series[0].dir.glob("*.dcm")), stop_before_pixels=True)
    np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], g1.dicom_orientation(), atol=1e-9)
    assert g1.is_oblique() and not g0.is_oblique()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tilted.series[0].dir)))
    image = reader.Execute()
    assert sitk_geometry(image).max_corner_distance_mm(g1) <= 1e-4
    data = manifest(tilted)
    assert data["series"][0]["options_applied"]["oblique"] is True and data["options"]["oblique"] is True
    nodules0 = json.loads((straight.root / "ground_truth/nodules.json").read_text(encoding="utf-8"))["nodules"]
    nodules1 = json.loads((tilted.root / "ground_truth/nodules.json").read_text(encoding="utf-8"))["nodules"]
    assert [n["centre_lps_mm"] for n in nodules0] == [n["centre_lps_mm"] for n in nodules1]  # phantom stays put
    labels = read_labels(tilted.root / "ground_truth/ct_labels.nii.gz")[0]
    hu = sitk.GetArrayViewFromImage(image)
    for n in nodules1:
        if labels[n["k"], n["y"], n["x"]] == n["label_value"]:
            assert hu[n["k"], n["y"], n["x"]] > -700
    mr = write_sample("mr-brain-mets", tmp_path / "mr", seed=3, slices=6, oblique=True)
    assert mr.series_by_key("T1W_C").geometry.is_oblique()
    assert not mr.series_by_key("T1W").geometry.is_oblique() and not mr.series_by_key("T2W").geometry.is_oblique()
    applied = {s["key"]: s["options_applied"]["oblique"] for s in manifest(mr)["series"]}
    assert applied == {"T1W": False, "T2W": False, "T1W_C": True}


def test_drop_and_duplicate_touch_exactly_the_named_files(tmp_path: Path) -> None:
    base = write_sample("ct-chest", tmp_path / "base", seed=5, slices=12)
    varied = write_sample("ct-chest", tmp_path / "varied", seed=5, slices=12, drop_slice=3, duplicate_slice=7)
    a, b = files_of(base.series[0].dir), files_of(varied.series[0].dir)
    applied = manifest(varied)["series"][0]["options_applied"]
    dropped, dup = applied["drop_slice"], applied["duplicate_slice"]
    assert set(a) - set(b) == {dropped["file"]}
    assert set(b) - set(a) == {dup["duplicate_file"]}
    assert all(a[name] == b[name] for name in set(a) & set(b))
    assert varied.series[0].n_files == 12 and len(b) == 12
    lost = pydicom.dcmread(base.series[0].dir / dropped["file"])
    z3 = base.series[0].geometry.slice_position_lps(3)
    np.testing.assert_allclose([float(v) for v in lost.ImagePositionPatient], z3)
    assert lost.SOPInstanceUID == dropped["sop_instance_uid"] and int(lost.InstanceNumber) == dropped["instance_number"]
    original = pydicom.dcmread(varied.series[0].dir / dup["file"])
    copy = pydicom.dcmread(varied.series[0].dir / dup["duplicate_file"])
    assert copy.SOPInstanceUID == dup["duplicate_sop_instance_uid"] != original.SOPInstanceUID
    assert copy.ImagePositionPatient == original.ImagePositionPatient and copy.PixelData == original.PixelData
    np.testing.assert_allclose([float(v) for v in copy.ImagePositionPatient],
                               base.series[0].geometry.slice_position_lps(7))
    labels = read_labels(varied.root / "ground_truth/ct_labels.nii.gz")[0]
    assert labels.shape[0] == 12  # ground truth keeps the full grid


@pytest.mark.parametrize(("kwargs", "error", "pattern"), [
    ({"kind": "ct"}, InputError, r"kind: unknown sample kind 'ct'; valid kinds are ct-chest, mr-brain-mets, pet-ct"),
    ({"kind": "us-thyroid", "oblique": True}, NotApplicableError, r"^oblique: does not apply to 'us-thyroid'"),
    ({"kind": "xray-ra", "drop_slice": 1}, NotApplicableError, r"^drop_slice: does not apply to 'xray-ra'"),
    ({"kind": "xray-ra", "duplicate_slice": 0}, NotApplicableError, r"^duplicate_slice: does not apply"),
    ({"kind": "us-thyroid", "slices": 10}, NotApplicableError, r"^slices: does not apply to 'us-thyroid'"),
    ({"kind": "ct-chest", "drop_slice": 140}, InputError, r"^drop_slice: slice 140 is outside 0\.\.139"),
    ({"kind": "ct-chest", "slices": 12, "duplicate_slice": -1}, InputError,
     r"^duplicate_slice: slice -1 is outside 0\.\.11"),
    ({"kind": "pet-ct", "slices": 1}, InputError, r"^slices: must be from 2 to 1000, got 1"),
    ({"kind": "mr-brain-mets", "slices": 2.5}, InputError, r"^slices: must be an integer, got 2\.5"),
    ({"kind": "ct-chest", "seed": -3}, InputError, r"^seed: must be from 0 to 4294967295, got -3"),
    ({"kind": "ct-chest", "drop_slice": 4, "duplicate_slice": 4}, InputError,
     r"^duplicate_slice: must name another slice than drop_slice"),
])
def test_invalid_arguments_raise_one_line(tmp_path: Path, kwargs: Dict[str, Any], error: type, pattern: str) -> None:
    kind = kwargs.pop("kind")
    with pytest.raises(error, match=pattern) as info:
        write_sample(kind, tmp_path / "out", **kwargs)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_out_dir_must_be_new_or_empty_and_a_crash_leaves_nothing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match=r"^out_dir: .*busy exists and is not empty; samples never overwrite"):
        write_sample("us-thyroid", busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_sample("us-thyroid", empty).manifest.is_file()

    def boom(_: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(case_module, "validate_manifest", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_sample("xray-ra", tmp_path / "crashed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty"]


def test_progress_reports_to_the_total(tmp_path: Path) -> None:
    seen: List[Tuple[int, int]] = []
    write_sample("ct-chest", tmp_path / "p", slices=5, duplicate_slice=1, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == 5 + 1 + 1 + 1
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# ---------------------------------------------------------------------------------------------- low-level writers
FEET_FIRST = ImageGeometry((40, 30, 7), (0.8, 0.6, 2.5), (10.0, -20.0, 40.0), ((-1, 0, 0), (0, 1, 0), (0, 0, -1)))
ANISOTROPIC = ImageGeometry((24, 50, 9), (1.3, 0.45, 4.0), (-15.0, 30.0, -80.0))
OBLIQUE = ImageGeometry((36, 28, 8), (0.7, 0.9, 1.5), (5.0, -7.0, 12.0),
                        tuple(map(tuple, rotation_matrix("z", 20.0) @ rotation_matrix("x", -9.0))))


@pytest.mark.parametrize("geometry", [FEET_FIRST, ANISOTROPIC, OBLIQUE], ids=["feet-first", "anisotropic", "oblique"])
@pytest.mark.parametrize("modality", ["CT", "MR", "PT"])
def test_write_volume_series_round_trips_through_simpleitk(tmp_path: Path, geometry: ImageGeometry,
                                                           modality: str) -> None:
    rng = np.random.default_rng(4)
    values = rng.uniform(0.0, 3000.0, size=geometry.array_shape)
    if modality == "CT":
        values -= 1024.0
    if modality == "PT":
        values *= np.linspace(0.2, 5.0, geometry.shape[2])[:, None, None]  # a different slope per slice
    files = write_volume_series(tmp_path, geometry, values, modality)
    assert len(files) == geometry.shape[2]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    assert sitk_geometry(image).max_corner_distance_mm(geometry) <= 1e-4
    from RTSSBridgeLib.samples import default_encoding

    enc = default_encoding(modality)
    expected = np.stack([enc.quantise(values[k]) for k in range(geometry.shape[2])])
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(image), expected, rtol=1e-9, atol=1e-9)
    if modality == "PT":
        half_step = values.max(axis=(1, 2)) / 65535.0 * 0.5 * 1.0001  # half the per-slice RescaleSlope
        assert np.all(np.abs(expected - values) <= half_step[:, None, None])
    numbers = {float(pydicom.dcmread(f).ImagePositionPatient[2]): int(pydicom.dcmread(f).InstanceNumber) for f in files}
    assert [numbers[z] for z in sorted(numbers, reverse=True)] == list(range(1, geometry.shape[2] + 1))


def test_write_volume_series_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^voxels: has shape \(2, 3, 4\), expected \[k, j, i\]"):
        write_volume_series(tmp_path, ANISOTROPIC, np.zeros((2, 3, 4)))
    with pytest.raises(InputError, match=r"^skip_slices: slice index 9 is outside 0\.\.8"):
        write_volume_series(tmp_path, ANISOTROPIC, np.zeros(ANISOTROPIC.array_shape), skip_slices=[9])
    with pytest.raises(InputError, match=r"^modality: must be CT, MR or PT"):
        write_volume_series(tmp_path, ANISOTROPIC, np.zeros(ANISOTROPIC.array_shape), "US")
    with pytest.raises(InputError, match=r"^bits_stored: must be 1\.\.bits_allocated \(8\), got 12"):
        PixelEncoding(8, 12)


@pytest.mark.parametrize("per_slice", [False, True])
def test_write_enhanced_multiframe(tmp_path: Path, per_slice: bool) -> None:
    rng = np.random.default_rng(9)
    values = rng.integers(-1000, 2000, size=OBLIQUE.array_shape).astype(float)
    order = list(rng.permutation(OBLIQUE.shape[2])) if per_slice else None
    enc = PixelEncoding(16, 16, 1, rescale=True, rescale_intercept=-1024.0, rescale_type="HU",
                        per_slice_slope=per_slice)
    path = write_enhanced_multiframe(tmp_path, OBLIQUE, values, "CT", encoding=enc, frame_order=order)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2.1" and int(ds.NumberOfFrames) == OBLIQUE.shape[2]
    shared = ds.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                               OBLIQUE.dicom_orientation(), atol=1e-9)
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == OBLIQUE.dicom_pixel_spacing()
    frames = ds.pixel_array
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        k = int(item.FrameContentSequence[0].InStackPositionNumber) - 1
        assert k == (order[f] if order else f)
        np.testing.assert_allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                                   OBLIQUE.slice_position_lps(k), atol=1e-6)
        transform = (item if per_slice else shared).PixelValueTransformationSequence[0]
        decoded = frames[f] * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
        np.testing.assert_allclose(decoded, enc.quantise(values[k]), atol=1e-6)
        np.testing.assert_allclose(decoded, values[k], atol=float(transform.RescaleSlope))
    if not per_slice:
        image = sitk.ReadImage(str(path))
        assert sitk_geometry(image).max_corner_distance_mm(OBLIQUE) <= 1e-4
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), values)
