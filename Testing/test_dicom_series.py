"""DICOM series loading (R-6.3, R-7.2): grouping, splitting, sorting, geometry, pixels, problems.

The reference is SimpleITK's ImageSeriesReader (GDCM): geometry must agree to 1e-4 mm and voxels
exactly, on axial, oblique, feet-first, non-square, signed, per-slice-rescaled and real files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, RLELossless

from RTSSBridgeLib.dicom_series import DicomSeries, load_dicom, read_volume, scan_dicom
from RTSSBridgeLib.errors import DicomError
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.problems import ProblemCode
from RTSSBridgeLib.samples.dicom_writer import (
    PixelEncoding,
    save_dataset,
    write_enhanced_multiframe,
    write_volume_series,
)
from RTSSBridgeLib.uids import deterministic_uid

from .test_geometry import FEET_FIRST, rotation

SHARED = Path(__file__).resolve().parents[2] / "shared" / "testdata"


def sitk_reference(files: Sequence[str]) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    return reader.Execute()


def assert_matches_sitk(series: DicomSeries, voxels: np.ndarray) -> None:
    ref = sitk_reference([f.path for f in series.frames])
    g = series.geometry
    assert tuple(ref.GetSize()) == g.shape[: ref.GetDimension()] + (1,) * (3 - ref.GetDimension()) or \
        tuple(ref.GetSize()) == g.shape
    np.testing.assert_allclose(ref.GetOrigin()[:3], g.origin_lps[: ref.GetDimension()], atol=1e-4)
    if g.shape[2] > 1:
        np.testing.assert_allclose(ref.GetSpacing(), g.spacing_mm, atol=1e-4)
        np.testing.assert_allclose(np.reshape(ref.GetDirection(), (3, 3)), g.direction_matrix, atol=1e-6)
    np.testing.assert_array_equal(voxels.astype(np.float64),
                                  sitk.GetArrayViewFromImage(ref).reshape(voxels.shape).astype(np.float64))


def phantom(g: ImageGeometry, lo: float = -1000, hi: float = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(int(lo), int(hi), size=g.array_shape).astype(np.float64)


def write(tmp: Path, g: ImageGeometry, modality: str = "CT", encoding: PixelEncoding | None = None,
          seed: int = 0, **kwargs: object) -> List[Path]:
    enc = encoding or PixelEncoding(16, 12, 0, rescale=True, rescale_intercept=-1024.0, rescale_type="HU")
    lo = enc.rescale_intercept if enc.rescale else enc.stored_range[0]
    values = phantom(g, lo, lo + 3000 if enc.bits_stored >= 12 else lo + 200, seed)
    return write_volume_series(tmp, g, values, modality, encoding=enc, **kwargs)  # type: ignore[arg-type]


AXIAL = ImageGeometry((64, 48, 20), (0.7, 0.7, 1.25), (-22.4, -16.8, -300.0))
OBLIQUE = ImageGeometry((40, 56, 17), (0.6, 0.9, 2.7), (13.5, -87.25, 140.0),
                        tuple(map(tuple, rotation(0.2, -0.12, 0.35))))


def only(scan_root: Path) -> DicomSeries:
    scan = scan_dicom(scan_root)
    assert len(scan.series) == 1, [s.summary() for s in scan.series]
    return scan.series[0]


@pytest.mark.parametrize(("name", "geometry", "encoding"), [
    ("axial_uint12_hu", AXIAL, None),
    ("oblique_anisotropic", OBLIQUE, None),
    ("feet_first_nonsquare", FEET_FIRST.with_shape((50, 40, 9)), None),
    ("signed_int16", AXIAL, PixelEncoding(16, 16, 1, rescale=True, rescale_intercept=-1024.0)),
    ("signed_12_of_16_bits", AXIAL, PixelEncoding(16, 12, 1)),
    ("mr_no_rescale", OBLIQUE, PixelEncoding(16, 12, 0)),
    ("pet_per_slice_slope", AXIAL, PixelEncoding(16, 16, 0, rescale=True, per_slice_slope=True)),
    ("eight_bit", AXIAL, PixelEncoding(8, 8, 0)),
])
def test_agrees_with_simpleitk(tmp_path: Path, name: str, geometry: ImageGeometry,
                               encoding: PixelEncoding | None) -> None:
    write(tmp_path, geometry, encoding=encoding)
    series = only(tmp_path)
    assert series.geometry.isclose(geometry, 1e-4), (series.geometry, geometry)
    assert not [p for p in series.problems if p.severity.value != "info"]
    volume = read_volume(series)
    assert volume.voxels.shape == geometry.array_shape
    assert_matches_sitk(series, volume.voxels)


def test_ct_hounsfield_units_and_type(tmp_path: Path) -> None:
    values = np.full(AXIAL.array_shape, -1000.0)
    values[:, 10:20, 10:20] = 40.0
    write_volume_series(tmp_path, AXIAL, values, "CT")
    vol = read_volume(only(tmp_path))
    assert vol.voxels.dtype == np.int16  # 12 stored bits + intercept -1024 fit int16
    np.testing.assert_array_equal(vol.voxels, values.astype(np.int16))


def test_pet_per_slice_slopes_give_float64_values(tmp_path: Path) -> None:
    enc = PixelEncoding(16, 16, 0, rescale=True, per_slice_slope=True)
    rng = np.random.default_rng(1)
    values = rng.uniform(0, 25000.0, size=AXIAL.array_shape) * np.linspace(0.1, 1, AXIAL.shape[2])[:, None, None]
    write_volume_series(tmp_path, AXIAL, values, "PT", encoding=enc)
    series = only(tmp_path)
    assert len({f.slope for f in series.frames}) == AXIAL.shape[2]  # really one slope per slice
    vol = read_volume(series)
    assert vol.voxels.dtype == np.float64
    expected = np.stack([enc.quantise(values[k]) for k in range(AXIAL.shape[2])])
    np.testing.assert_allclose(vol.voxels, expected, rtol=0, atol=1e-9)


def test_sorted_by_position_not_instance_number_or_name(tmp_path: Path) -> None:
    n = AXIAL.shape[2]
    shuffled = list(np.random.default_rng(5).permutation(n) + 1)
    values = np.broadcast_to(np.arange(n, dtype=float)[:, None, None] * 10 - 1000, AXIAL.array_shape).copy()
    write_volume_series(tmp_path, AXIAL, values, "CT", instance_numbers=shuffled)
    for i, f in enumerate(sorted(os.listdir(tmp_path))):
        os.rename(tmp_path / f, tmp_path / f"z{i:03d}.dcm")
    vol = read_volume(only(tmp_path))
    np.testing.assert_array_equal(vol.voxels[:, 0, 0], np.arange(n) * 10 - 1000)


def test_dropped_slice_is_reported_with_neighbouring_files(tmp_path: Path) -> None:
    files = write(tmp_path, AXIAL, skip_slices=[7])
    series = only(tmp_path)
    gaps = [p for p in series.problems if p.code == ProblemCode.MISSING_SLICES]
    assert len(gaps) == 1 and "about 1 slice(s) missing" in gaps[0].message
    neighbours = {os.path.basename(p) for p in gaps[0].files}
    positions = {os.path.basename(str(f)): float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files}
    assert sorted(positions[n] for n in neighbours) == pytest.approx([-300 + 6 * 1.25, -300 + 8 * 1.25])
    assert not series.uniform
    assert series.geometry.shape[2] == AXIAL.shape[2] - 1


def test_duplicated_slice_is_reported_and_used_once(tmp_path: Path) -> None:
    write(tmp_path, AXIAL, duplicate_slices=[4])
    series = only(tmp_path)
    dups = [p for p in series.problems if p.code == ProblemCode.DUPLICATE_POSITION]
    assert len(dups) == 1 and len(dups[0].files) == 2
    assert series.geometry.shape == AXIAL.shape
    assert series.geometry.isclose(AXIAL, 1e-4)
    assert len(series.files) == AXIAL.shape[2]


def _edit(path: Path, **changes: object) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)


def _by_instance(tmp: Path) -> List[Path]:
    files = sorted(tmp.glob("*.dcm"))
    return sorted(files, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))


def test_mixed_orientation_is_split(tmp_path: Path) -> None:
    write(tmp_path, AXIAL)
    files = _by_instance(tmp_path)
    for k, f in enumerate(files[:5]):  # five coronal images at distinct y
        _edit(f, ImageOrientationPatient=[1, 0, 0, 0, 0, -1], ImagePositionPatient=[0, float(k), 0])
    scan = scan_dicom(tmp_path)
    assert len(scan.series) == 2
    assert {s.part for s in scan.series} == {1, 2} and {s.n_parts for s in scan.series} == {2}
    assert sorted(len(s.frames) for s in scan.series) == [5, 15]
    for s in scan.series:
        assert any(p.code == ProblemCode.INCONSISTENT_ORIENTATION for p in s.problems)


def test_mixed_size_and_pixel_spacing_are_split(tmp_path: Path) -> None:
    write(tmp_path, AXIAL)
    other = tmp_path / "other"
    small = ImageGeometry((32, 48, 3), (0.7, 0.7, 1.25), (-22.4, -16.8, -250.0))
    enc = PixelEncoding(16, 12, 0, rescale=True, rescale_intercept=-1024.0)
    series_uid = pydicom.dcmread(next(tmp_path.glob("*.dcm"))).SeriesInstanceUID
    from RTSSBridgeLib.samples.dicom_writer import SeriesInfo

    write_volume_series(other, small, phantom(small, -1024, 1000), "CT", encoding=enc,
                        series=SeriesInfo(series_instance_uid=series_uid, modality="CT"))
    files = _by_instance(tmp_path)
    _edit(files[0], PixelSpacing=[0.8, 0.8])
    scan = scan_dicom(tmp_path)
    codes = {p.code for s in scan.series for p in s.problems}
    assert ProblemCode.INCONSISTENT_SIZE in codes and ProblemCode.INCONSISTENT_PIXEL_SPACING in codes
    assert sorted(len(s.frames) for s in scan.series) == [1, 3, 19]


def test_gantry_tilt_and_nonuniform_spacing(tmp_path: Path) -> None:
    write(tmp_path, AXIAL)
    files = _by_instance(tmp_path)
    for k, f in enumerate(files):  # shift each slice sideways: a tilted gantry
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.1 * k, z + (0.05 if k == 10 else 0.0)]
        ds.save_as(f)
    series = only(tmp_path)
    codes = {p.code for p in series.problems}
    assert ProblemCode.GANTRY_TILT in codes and ProblemCode.NONUNIFORM_SPACING in codes
    tilt = next(p for p in series.problems if p.code == ProblemCode.GANTRY_TILT)
    assert "tilt about" in tilt.message


def test_missing_geometry_tags(tmp_path: Path) -> None:
    write(tmp_path, AXIAL)
    files = _by_instance(tmp_path)
    _edit(files[3], ImagePositionPatient=None)
    series = only(tmp_path)
    missing = [p for p in series.problems if p.code == ProblemCode.MISSING_GEOMETRY]
    assert missing and os.path.basename(str(files[3])) in " ".join(missing[0].files)


def test_non_dicom_truncated_and_non_image_files(tmp_path: Path) -> None:
    files = write(tmp_path, AXIAL)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI")  # cut in the header
    cut = tmp_path / "cut.dcm"
    data = Path(files[0]).read_bytes()
    cut.write_bytes(data[: len(data) - 1000])
    shutil.copy(SHARED / "rtutils_mock" / "rt.dcm", tmp_path / "rtss.dcm")
    scan = scan_dicom(tmp_path)
    by_code = {p.code: p for p in scan.problems}
    assert by_code[ProblemCode.NOT_DICOM].files == (str(tmp_path / "notes.txt"),)
    assert by_code[ProblemCode.TRUNCATED].files == (str(cut),)
    assert "truncated" in by_code[ProblemCode.TRUNCATED].message
    assert by_code[ProblemCode.UNREADABLE].files == (str(tmp_path / "fake.dcm"),)
    assert "RTSTRUCT" in by_code[ProblemCode.NON_IMAGE_OBJECT].message
    assert len(scan.series) == 1 and scan.series[0].n_files == AXIAL.shape[2]


def test_multi_echo_series_is_split_per_echo(tmp_path: Path) -> None:
    g = AXIAL.with_shape((16, 16, 6))
    enc = PixelEncoding(16, 12, 0)
    write_volume_series(tmp_path / "e1", g, phantom(g, 0, 4000, 1), "MR", encoding=enc,
                        slice_attributes=lambda k: {"EchoNumbers": 1, "EchoTime": 10})
    uid = pydicom.dcmread(next((tmp_path / "e1").glob("*.dcm"))).SeriesInstanceUID
    from RTSSBridgeLib.samples.dicom_writer import SeriesInfo

    write_volume_series(tmp_path / "e2", g, phantom(g, 0, 4000, 2), "MR", encoding=enc,
                        series=SeriesInfo(series_instance_uid=uid, modality="MR"),
                        slice_attributes=lambda k: {"EchoNumbers": 2, "EchoTime": 80})
    scan = scan_dicom(tmp_path)
    assert len(scan.series) == 2
    assert all(any(p.code == ProblemCode.MULTI_VOLUME_SERIES for p in s.problems) for s in scan.series)
    assert all(not any(p.code == ProblemCode.DUPLICATE_POSITION for p in s.problems) for s in scan.series)


def _transcode(src: Path, dst: Path, syntax: str) -> None:
    ds = pydicom.dcmread(src)
    if syntax == RLELossless:
        ds.compress(RLELossless)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    save_dataset(ds, dst)


def test_implicit_vr_and_rle_load_like_explicit(tmp_path: Path) -> None:
    write(tmp_path / "explicit", AXIAL)
    reference = read_volume(only(tmp_path / "explicit")).voxels
    for syntax, name in ((ImplicitVRLittleEndian, "implicit"), (RLELossless, "rle")):
        out = tmp_path / name
        out.mkdir()
        for f in (tmp_path / "explicit").glob("*.dcm"):
            _transcode(f, out / f.name, syntax)
        series = only(out)
        assert series.transfer_syntaxes == [str(syntax)]
        vol = read_volume(series)
        np.testing.assert_array_equal(vol.voxels, reference)
        assert_matches_sitk(series, vol.voxels)


def test_undecodable_compression_names_the_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, AXIAL.with_shape((16, 16, 3)))
    for f in tmp_path.glob("*.dcm"):  # fake JPEG-LS: encapsulated, undecodable bytes
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8garbage\xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.save_as(f)
    series = only(tmp_path)
    (problem,) = [p for p in series.problems if p.code == ProblemCode.UNDECODABLE_TRANSFER_SYNTAX] or [None]
    if problem is not None:  # no JPEG-LS decoder installed: reported at scan time
        assert "JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)" in problem.message
        assert len(problem.files) == 3
        volumes, _ = load_dicom(tmp_path)
        assert volumes == []
    with pytest.raises(DicomError, match=r"JPEG-LS Lossless Image Compression \(1\.2\.840\.10008\.1\.2\.4\.80\)"):
        read_volume(series)


def test_enhanced_multiframe(tmp_path: Path) -> None:
    values = phantom(OBLIQUE, -1024, 2000)
    order = list(np.random.default_rng(2).permutation(OBLIQUE.shape[2]))
    write_enhanced_multiframe(tmp_path, OBLIQUE, values, "CT", frame_order=order)
    series = only(tmp_path)
    assert series.n_files == 1 and len(series.frames) == OBLIQUE.shape[2]
    assert series.geometry.isclose(OBLIQUE, 1e-4)
    vol = read_volume(series)
    enc = PixelEncoding(16, 12, 0, rescale=True, rescale_intercept=-1024.0)
    np.testing.assert_array_equal(vol.voxels, np.stack([enc.quantise(values[k]) for k in range(OBLIQUE.shape[2])]))


def _single_2d(path: Path, **attrs: object) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = attrs.pop("SOPClassUID", "1.2.840.10008.5.1.4.1.1.1")
    # deterministic UIDs: the same bytes on every run
    ds.file_meta.MediaStorageSOPInstanceUID = deterministic_uid("test-2d", path.name)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = attrs.pop("SeriesInstanceUID", deterministic_uid("test-2d-series", path.name))
    ds.StudyInstanceUID = deterministic_uid("test-2d-study")
    for key, value in attrs.items():
        setattr(ds, key, value)
    save_dataset(ds, path)


def test_projection_and_colour_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cr = rng.integers(0, 4095, size=(30, 40), dtype=np.uint16)
    series_uid = deterministic_uid("test-2d-cr-series")
    for side in ("L", "R"):  # two hands in one CR series: two 2-D images, never one volume
        _single_2d(tmp_path / f"cr_{side}.dcm", Modality="CR", SeriesInstanceUID=series_uid, Rows=30, Columns=40,
                   BitsAllocated=16, BitsStored=12, HighBit=11, PixelRepresentation=0, SamplesPerPixel=1,
                   PhotometricInterpretation="MONOCHROME1", ImagerPixelSpacing=[0.15, 0.2], ImageLaterality=side,
                   PixelData=cr.tobytes())
    rgb = rng.integers(0, 255, size=(20, 30, 3), dtype=np.uint8)
    region = Dataset_region(dx_cm=0.0125, dy_cm=0.01)
    _single_2d(tmp_path / "us.dcm", Modality="US", SOPClassUID="1.2.840.10008.5.1.4.1.1.6.1", Rows=20, Columns=30,
               BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0, SamplesPerPixel=3,
               PlanarConfiguration=0, PhotometricInterpretation="RGB", SequenceOfUltrasoundRegions=[region],
               PixelData=rgb.tobytes())
    planar = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    _single_2d(tmp_path / "us_planar.dcm", Modality="US", SOPClassUID="1.2.840.10008.5.1.4.1.1.6.1", Rows=20,
               Columns=30, BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0, SamplesPerPixel=3,
               PlanarConfiguration=1, PhotometricInterpretation="RGB", PixelData=planar.tobytes())
    scan = scan_dicom(tmp_path)
    by_file = {os.path.basename(s.files[0]): s for s in scan.series}
    assert set(by_file) == {"cr_L.dcm", "cr_R.dcm", "us.dcm", "us_planar.dcm"}
    cr_series = by_file["cr_L.dcm"]
    assert cr_series.geometry.shape == (40, 30, 1)
    assert cr_series.geometry.spacing_mm[:2] == (0.2, 0.15)  # ImagerPixelSpacing is (row, column)
    assert {p.code for p in cr_series.problems} == {ProblemCode.NO_PATIENT_GEOMETRY, ProblemCode.MONOCHROME1_INVERTED}
    np.testing.assert_array_equal(read_volume(cr_series).voxels[0], 4095 - cr)  # bright means dense
    cr_ref = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "cr_L.dcm"))).reshape(30, 40)
    np.testing.assert_array_equal(read_volume(cr_series).voxels[0], cr_ref)  # as GDCM/ITK present it
    us = by_file["us.dcm"]
    assert us.geometry.spacing_mm[:2] == pytest.approx((0.125, 0.1))  # cm in the region -> mm
    np.testing.assert_array_equal(read_volume(us).voxels[0], rgb)
    np.testing.assert_array_equal(read_volume(by_file["us_planar.dcm"]).voxels[0], rgb)
    assert any(p.code == ProblemCode.NO_PIXEL_SPACING for p in by_file["us_planar.dcm"].problems)
    ref = sitk.ReadImage(str(tmp_path / "us.dcm"))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ref).reshape(20, 30, 3), rgb)


def Dataset_region(dx_cm: float, dy_cm: float) -> pydicom.Dataset:
    region = pydicom.Dataset()
    region.RegionSpatialFormat = 1
    region.RegionDataType = 1
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 29, 19
    region.PhysicalUnitsXDirection = 3
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = dx_cm
    region.PhysicalDeltaY = dy_cm
    return region


@pytest.mark.parametrize("folder", ["rtutils_mock", "cheese_raystation", "dicompyler_core"])
def test_real_files_agree_with_simpleitk(folder: str) -> None:
    scan = scan_dicom(SHARED / folder)
    assert scan.series
    for series in scan.series:
        assert_matches_sitk(series, read_volume(series).voxels)
    codes = [p.code for p in scan.problems]
    assert ProblemCode.NOT_DICOM in codes  # LICENSE.txt
    assert ProblemCode.NON_IMAGE_OBJECT in codes  # the RT objects


def test_rtutils_oblique_non_square_geometry_not_swapped() -> None:
    scan = scan_dicom(SHARED / "rtutils_mock")
    oriented = next(s for s in scan.series if s.geometry.shape == (100, 50, 3))
    # PixelSpacing [3.5, 2.5] is (row, column): i steps 2.5 mm along the row direction
    assert oriented.geometry.spacing_mm[:2] == (2.5, 3.5)
    assert oriented.geometry.is_oblique()
    assert oriented.geometry.spacing_mm[2] == pytest.approx(4.5, abs=1e-6)


def test_missing_root_raises() -> None:
    with pytest.raises(DicomError, match="no such file or directory"):
        scan_dicom("/nonexistent/folder")


def test_directory_link_loops_are_not_followed(tmp_path: Path) -> None:
    write(tmp_path / "series", AXIAL.with_shape((8, 8, 3)))
    os.symlink(tmp_path, tmp_path / "series" / "loop")
    scan = scan_dicom(tmp_path)
    assert len(scan.series) == 1 and scan.series[0].n_files == 3


def test_progress_callback_counts_files(tmp_path: Path) -> None:
    write(tmp_path, AXIAL.with_shape((8, 8, 5)))
    seen: List[int] = []
    scan_dicom(tmp_path, progress=lambda done, total: seen.append(done))
    assert seen == [1, 2, 3, 4, 5]


def test_meta_says_implicit_but_body_is_explicit(tmp_path: Path) -> None:
    """Real files exist whose transfer syntax disagrees with their body; pydicom copes, so must we."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    g = AXIAL.with_shape((8, 6, 3))
    write(tmp_path / "good", g)
    reference = read_volume(only(tmp_path / "good")).voxels
    out = tmp_path / "mislabelled"
    out.mkdir()
    for f in (tmp_path / "good").glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        head = DicomBytesIO()
        head.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(head, ds.file_meta, enforce_standard=True)
        body = DicomBytesIO()
        body.is_little_endian, body.is_implicit_VR = True, False
        write_dataset(body, ds)
        (out / f.name).write_bytes(head.getvalue() + body.getvalue())
    np.testing.assert_array_equal(read_volume(only(out)).voxels, reference)


# --------------------------------------------------------------------------- header reader without pydicom
def _scan_with_pydicom_only(root: str, monkeypatch: pytest.MonkeyPatch) -> object:
    from RTSSBridgeLib import dicom_series

    with monkeypatch.context() as m:
        m.setattr(dicom_series, "_read_header_raw", lambda path: None)
        return scan_dicom(root)


def _scan_view(scan: object) -> list:
    return [(s.summary(), [(f.path, f.frame_index, f.sop_instance_uid, f.instance_number, f.position, f.orientation,
                            f.pixel_spacing, f.slice_thickness, f.slope, f.intercept, f.fmt, f.pixels, f.split_keys,
                            f.n_frames_in_file, f.fallback_spacing) for f in s.frames])
            for s in scan.series] + [sorted(p.to_dict()["message"] for p in scan.problems)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind,options", [
    ("ct-chest", {}), ("ct-chest", {"oblique": True, "drop_slice": 5, "duplicate_slice": 9}),
    ("mr-brain-mets", {}), ("pet-ct", {}), ("us-thyroid", {}), ("xray-ra", {}),
])
def test_raw_header_reader_matches_pydicom(sample_case, kind: str, options: dict,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """R-6.3: the header pass that reads plain single-frame files from their bytes (no pydicom)
    finds exactly the series, frames, pixel locations and problems pydicom's path finds."""
    from RTSSBridgeLib import dicom_series

    case = sample_case(kind, **options)
    root = str(case.root / "dicom")
    used: List[str] = []
    real = dicom_series._read_header_raw

    def counting(path: str) -> object:
        got = real(path)
        if got is not None:
            used.append(path)
        return got

    monkeypatch.setattr(dicom_series, "_read_header_raw", counting)
    fast = scan_dicom(root)
    monkeypatch.setattr(dicom_series, "_read_header_raw", real)
    assert _scan_view(fast) == _scan_view(_scan_with_pydicom_only(root, monkeypatch))
    if kind in ("ct-chest", "mr-brain-mets", "pet-ct"):
        assert len(used) >= sum(len(s.frames) for s in fast.series)  # every slice took the fast path


def _ct_slice(tmp_path: Path, syntax: str, **elements: object) -> Path:
    g = ImageGeometry(shape=(4, 3, 1), spacing_mm=(0.5, 0.7, 2.0), origin_lps=(-10.0, 20.0, 30.0),
                      direction=tuple(map(tuple, rotation(10, 20, 30))))
    files = write_volume_series(tmp_path / "in", g, phantom(g), "CT")
    ds = pydicom.dcmread(files[0])
    ds.file_meta.TransferSyntaxUID = syntax
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    out = tmp_path / "slice.dcm"
    save_dataset(ds, out)
    return out


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_raw_header_reader_character_sets_and_sequences(tmp_path: Path, syntax: str) -> None:
    """R-6.3: a GB18030 series description and undefined-length sequences are read from the bytes
    as pydicom reads them; an ISO 2022 character set is left to pydicom."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    from RTSSBridgeLib.dicom_series import _read_header, _read_header_raw, _str

    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    path = _ct_slice(tmp_path, syntax, SpecificCharacterSet="GB18030", SeriesDescription="胸部 平扫 CT",
                     ReferencedImageSequence=DicomSequence([item]))
    ds = pydicom.dcmread(path)
    ds["ReferencedImageSequence"].is_undefined_length = True
    for it in ds.ReferencedImageSequence:
        it.is_undefined_length_sequence_item = True
    save_dataset(ds, path)
    raw = _read_header_raw(str(path))
    assert raw is not None and _str(raw.dataset, "SeriesDescription") == "胸部 平扫 CT"
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 58"]
    save_dataset(ds, path)
    assert _read_header_raw(str(path)) is None
    problems: list = []
    header = _read_header(str(path), problems)
    assert header is not None and not problems  # read by pydicom instead


def test_raw_header_reader_leaves_defects_to_pydicom(tmp_path: Path) -> None:
    """R-7.2: truncated or non-Part-10 bytes are never guessed at: the raw reader declines and the
    pydicom path reports the defect as before."""
    from RTSSBridgeLib.dicom_series import _read_header_raw

    path = _ct_slice(tmp_path, ExplicitVRLittleEndian)
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[:400])
    assert _read_header_raw(str(cut)) is None
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(data[132:])
    assert _read_header_raw(str(bare)) is None
    scan = scan_dicom(str(tmp_path / "cut.dcm"))
    assert not scan.series and scan.problems
