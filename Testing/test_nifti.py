"""NIfTI read/write with the exact affine (R-5.7, SPEC "Data structures")."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.geometry import ImageGeometry
from RTSSBridgeLib.nifti import read_nifti, read_nifti_geometry, write_nifti
from RTSSBridgeLib.problems import ProblemCode

from .test_geometry import FEET_FIRST, OBLIQUE


def volume_for(g: ImageGeometry, dtype: str = "int16") -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(-1000, 3000, size=g.array_shape).astype(dtype)


def as_float32_geometry(g: ImageGeometry) -> ImageGeometry:
    """What NIfTI-1 can hold: the affine rounded to float32."""
    return ImageGeometry.from_ijk_to_ras_matrix(g.shape, g.ijk_to_ras_matrix().astype(np.float32).astype(np.float64))


@pytest.mark.parametrize("g", [OBLIQUE, FEET_FIRST], ids=["oblique", "feet_first"])
@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_nifti1_round_trip_stores_float32_affine_exactly(tmp_path: Path, g: ImageGeometry, name: str) -> None:
    vox = volume_for(g)
    path = write_nifti(tmp_path / name, vox, g)
    img = read_nifti(path)
    np.testing.assert_array_equal(img.voxels, vox)
    assert img.voxels.dtype == vox.dtype
    assert img.transform_source == "sform"
    # the file holds exactly float32(affine) in the sform and the same transform in the qform
    hdr = nib.load(path).header
    np.testing.assert_array_equal(hdr.get_sform(), g.ijk_to_ras_matrix().astype(np.float32))
    assert img.geometry.max_corner_distance_mm(g) < 1e-4  # float32 rounding at these distances
    assert img.geometry.max_corner_distance_mm(as_float32_geometry(g)) < 1e-9
    assert not img.problems  # qform agrees with sform
    # from the first write on, NIfTI -> geometry -> NIfTI is bit-identical
    again = write_nifti(tmp_path / ("again_" + name), img.voxels, img.geometry)
    np.testing.assert_array_equal(nib.load(again).header.get_sform(), hdr.get_sform())
    assert read_nifti(again).geometry == img.geometry


def test_nifti2_round_trip_is_exact(tmp_path: Path) -> None:
    vox = volume_for(OBLIQUE, "float32")
    path = write_nifti(tmp_path / "v2.nii", vox, OBLIQUE, nifti2=True)
    img = read_nifti(path)
    assert img.header["format"] == "nifti2"
    assert img.geometry.max_corner_distance_mm(OBLIQUE) < 1e-9
    np.testing.assert_array_equal(img.voxels, vox)


def test_written_nifti_agrees_with_simpleitk(tmp_path: Path) -> None:
    vox = volume_for(OBLIQUE)
    path = write_nifti(tmp_path / "v.nii.gz", vox, OBLIQUE)
    ref = sitk.ReadImage(path)
    assert ref.GetSize() == OBLIQUE.shape
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ref), vox)  # both [k, j, i]
    ours = read_nifti(path).geometry
    np.testing.assert_allclose(ref.GetOrigin(), ours.origin_lps, atol=1e-4)
    np.testing.assert_allclose(ref.GetSpacing(), ours.spacing_mm, atol=1e-5)
    np.testing.assert_allclose(np.reshape(ref.GetDirection(), (3, 3)), ours.direction_matrix, atol=1e-5)


def test_reads_simpleitk_written_nifti(tmp_path: Path) -> None:
    img = sitk.GetImageFromArray(volume_for(FEET_FIRST))
    img.SetOrigin(FEET_FIRST.origin_lps)
    img.SetSpacing(FEET_FIRST.spacing_mm)
    img.SetDirection(FEET_FIRST.direction_matrix.ravel().tolist())
    path = str(tmp_path / "sitk.nii.gz")
    sitk.WriteImage(img, path)
    ours = read_nifti(path)
    assert ours.geometry.isclose(FEET_FIRST, 1e-4)
    np.testing.assert_array_equal(ours.voxels, sitk.GetArrayViewFromImage(img))


def test_label_map_intent_and_bool(tmp_path: Path) -> None:
    g = ImageGeometry((5, 4, 3), (1, 1, 2))
    mask = np.zeros(g.array_shape, bool)
    mask[1, 2, 3] = True
    path = write_nifti(tmp_path / "m.nii.gz", mask, g, label_map=True, description="lesion mask")
    img = read_nifti(path)
    assert img.voxels.dtype == np.uint8 and img.voxels[1, 2, 3] == 1 and img.voxels.sum() == 1
    assert img.header["intent_code"] == 1002
    assert img.header["descrip"] == "lesion mask"


def test_qform_only_and_no_transform(tmp_path: Path) -> None:
    g = ImageGeometry((4, 3, 2), (0.5, 0.75, 2.0), (10.0, -20.0, 30.0))
    data = np.zeros(g.shape, np.int16)
    img = nib.Nifti1Image(data, None)
    img.set_qform(g.ijk_to_ras_matrix(), code=1)
    img.set_sform(np.eye(4), code=0)
    path = str(tmp_path / "q.nii")
    nib.save(img, path)
    got = read_nifti(path)
    assert got.transform_source == "qform" and got.geometry.isclose(g, 1e-5)

    bare = nib.Nifti1Image(data, None)
    bare.header.set_zooms((0.5, 0.75, 2.0))
    bare.set_qform(None, code=0)
    bare.set_sform(None, code=0)
    path2 = str(tmp_path / "bare.nii")
    nib.save(bare, path2)
    got2 = read_nifti(path2)
    assert got2.transform_source == "pixdim"
    assert [p.code for p in got2.problems] == [ProblemCode.NIFTI_NO_SPATIAL_TRANSFORM]
    assert got2.geometry.spacing_mm == (0.5, 0.75, 2.0)


def test_qform_sform_mismatch_is_reported(tmp_path: Path) -> None:
    g = ImageGeometry((4, 3, 2), (1, 1, 1))
    img = nib.Nifti1Image(np.zeros(g.shape, np.uint8), None)
    img.set_sform(g.ijk_to_ras_matrix(), code=1)
    shifted = g.ijk_to_ras_matrix().copy()
    shifted[0, 3] += 2.0
    img.set_qform(shifted, code=1)
    path = str(tmp_path / "mm.nii")
    nib.save(img, path)
    got = read_nifti(path)
    assert got.transform_source == "sform"
    assert [p.code for p in got.problems] == [ProblemCode.NIFTI_QFORM_SFORM_MISMATCH]
    assert "2 mm" in got.problems[0].message


def test_2d_and_single_volume_4d(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.arange(12, dtype=np.uint8).reshape(4, 3), np.eye(4)), str(tmp_path / "a.nii"))
    got = read_nifti(tmp_path / "a.nii")
    assert got.geometry.shape == (4, 3, 1) and got.voxels.shape == (1, 3, 4)
    assert got.voxels[0, 2, 1] == np.arange(12).reshape(4, 3)[1, 2]
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2, 1), np.uint8), np.eye(4)), str(tmp_path / "b.nii"))
    assert read_nifti(tmp_path / "b.nii").geometry.shape == (4, 3, 2)


def test_errors_name_file_and_rule(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_nifti(tmp_path / "missing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"this is not nifti")
    with pytest.raises(InputError, match=r"bad\.nii\.gz: not a readable NIfTI"):
        read_nifti(bad)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.uint8), np.eye(4)), str(tmp_path / "t.nii"))
    with pytest.raises(InputError, match="has 3 volumes"):
        read_nifti(tmp_path / "t.nii")
    with pytest.raises(InputError, match=r"must end with \.nii or \.nii\.gz"):
        write_nifti(tmp_path / "x.nrrd", np.zeros((1, 1, 1)), ImageGeometry((1, 1, 1), (1, 1, 1)))
    with pytest.raises(InputError, match="does not match the geometry"):
        write_nifti(tmp_path / "x.nii", np.zeros((2, 1, 1)), ImageGeometry((1, 1, 1), (1, 1, 1)))
    sheared = np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), sheared), str(tmp_path / "s.nii"))
    with pytest.raises(InputError, match=r"s\.nii: sform: .*orthonormal"):
        read_nifti_geometry(tmp_path / "s.nii")


def test_write_is_atomic_and_leaves_no_temp_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = ImageGeometry((3, 3, 3), (1, 1, 1))
    target = tmp_path / "keep.nii.gz"
    write_nifti(target, np.ones(g.array_shape, np.uint8), g)
    before = target.read_bytes()

    def half_write(img: object, filename: str) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_nifti(target, np.zeros(g.array_shape, np.uint8), g)
    assert target.read_bytes() == before  # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["keep.nii.gz"]  # and no temporary file is left


def _nibabel_bytes(path: Path, vox: np.ndarray, g: ImageGeometry, label_map: bool, description: str) -> bytes:
    affine = g.ijk_to_ras_matrix()
    img = nib.Nifti1Image(vox.transpose(2, 1, 0), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    if label_map:
        img.header.set_intent(1002)
    img.header["descrip"] = description.encode("ascii")
    nib.save(img, str(path))
    return path.read_bytes()


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "int32", "float32", "float64"])
def test_nifti1_writer_without_nibabel_writes_what_nibabel_writes(tmp_path: Path, dtype: str) -> None:
    """R-5.7: the hand-written NIfTI-1 writer (used for .nii so that an RTSS import need not import
    nibabel) produces the same bytes as nibabel for oblique, left-handed, anisotropic, off-origin
    grids: header fields, quaternion, sform and data."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(11)
    for n in range(40):
        rot = Rotation.random(random_state=n).as_matrix()
        if n % 3 == 0:
            rot[:, 2] *= -1  # left-handed: qfac -1
        if n % 7 == 0:
            rot = np.eye(3)[[1, 0, 2]] * np.array([1.0, -1.0, 1.0])  # a permutation (w = 0 branches)
        g = ImageGeometry(shape=(5, 4, 3), spacing_mm=tuple(rng.uniform(0.2, 6.0, 3)),
                          origin_lps=tuple(rng.uniform(-400, 400, 3)), direction=tuple(map(tuple, rot)))
        vox = volume_for(g, "int32").astype(dtype) if dtype != "uint8" else rng.integers(0, 20, g.array_shape,
                                                                                         dtype=np.uint8)
        ours = write_nifti(tmp_path / "ours.nii", vox, g, label_map=n % 2 == 0, description="mmanno test")
        theirs = _nibabel_bytes(tmp_path / "theirs.nii", vox, g, n % 2 == 0, "mmanno test")
        assert Path(ours).read_bytes() == theirs, n
        back = read_nifti(ours)
        np.testing.assert_array_equal(back.voxels, vox)
        assert back.voxels.dtype == vox.dtype


def test_rtss_import_path_needs_neither_pydicom_nor_nibabel(tmp_path: Path, sample_case) -> None:  # type: ignore[no-untyped-def]
    """R-5.7 (speed): an RTSS import to .nii reads the series headers, the structure set and writes
    the labelmap without importing pydicom, nibabel or jsonschema (0.35 s of a 0.95 s import)."""
    import json

    from .rtss_cases import run_cli_in_fresh_process

    case = sample_case("ct-chest")
    entry = json.loads(case.manifest.read_text())["structure_sets"][0]
    rtss = case.root / entry["dir"] / entry["file"]
    assert run_cli_in_fresh_process(["rtss", "import", str(rtss), "--series", str(case.root / "dicom"),
                                     "--out", str(tmp_path / "l.nii"), "--quiet"]) == (0, [])
    assert read_nifti(tmp_path / "l.nii").voxels.any()


@pytest.mark.parametrize("preallocate", [True, False])
def test_large_nifti1_is_written_through_a_map_or_plainly_with_the_same_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preallocate: bool) -> None:
    """R-5.7: a labelmap of several MB goes through the memory-mapped writer (or, where the file
    system cannot preallocate, plain writes): the file is byte for byte what nibabel writes."""
    g = ImageGeometry(shape=(160, 128, 70), spacing_mm=(0.8, 0.8, 2.5), origin_lps=(-60.0, 40.0, -200.0),
                      direction=OBLIQUE.direction)
    vox = np.random.default_rng(5).integers(0, 30, g.array_shape, dtype=np.uint8)
    assert vox.nbytes > 1 << 20
    if not preallocate:
        def refuse(fd: int, offset: int, length: int) -> None:
            raise OSError(95, "Operation not supported")

        monkeypatch.setattr(os, "posix_fallocate", refuse, raising=False)
    ours = write_nifti(tmp_path / "big.nii", vox, g, label_map=True, description="mmanno test")
    assert Path(ours).read_bytes() == _nibabel_bytes(tmp_path / "theirs.nii", vox, g, True, "mmanno test")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.nii", "theirs.nii"]  # no temporary left


def _headers(data: np.ndarray, affine: np.ndarray) -> dict:  # type: ignore[type-arg]
    """NIfTI-1 files nibabel writes with every transform arrangement the fast reader meets."""
    flipped = affine.copy()
    flipped[:3, 2] *= -1
    moved = affine.copy()
    moved[0, 3] += 5.0
    out = {}
    for name, sform, s_code, qform, q_code, dtype in (
            ("both", affine, 1, affine, 1, "uint8"), ("qform_only", None, 0, affine, 1, "uint8"),
            ("sform_only", affine, 2, None, 0, "uint8"), ("left_handed", flipped, 1, flipped, 1, "int16"),
            ("left_handed_qform", None, 0, flipped, 1, "uint8"), ("mismatch", moved, 1, affine, 4, "uint8"),
            ("none", None, 0, None, 0, "float32"), ("uint16", affine, 1, affine, 1, "uint16")):
        img = nib.Nifti1Image(data.astype(dtype), affine)
        img.set_sform(sform, code=s_code)
        img.set_qform(qform, code=q_code)
        img.header["descrip"] = f"case {name}".encode("ascii")
        out[name] = img
    return out


@pytest.mark.parametrize("case", ["both", "qform_only", "sform_only", "left_handed", "left_handed_qform", "mismatch",
                                  "none", "uint16", "one_slice", "two_d", "single_volume_4d"])
def test_uncompressed_nifti1_read_without_nibabel_as_nibabel_reads_it(tmp_path: Path, case: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """R-5.7 (speed, exactness): uncompressed NIfTI-1 files are read from their header bytes and a
    memory map (so an RTSS export from mask files need not import nibabel); on oblique grids with
    sform, qform (left-handed: qfac -1), both (disagreeing: reported), neither, 2-D and 4-D-of-one
    files the geometry, voxels, header fields and problems are those of the nibabel path."""
    from scipy.spatial.transform import Rotation

    from RTSSBridgeLib import nifti

    rotation = Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.array([0.7, 0.8, 2.5])
    affine[:3, 3] = [-100.0, 20.0, 300.0]
    data = np.random.default_rng(5).integers(0, 4, size=(7, 6, 5))
    images = _headers(data, affine)
    images["one_slice"] = nib.Nifti1Image(data[:, :, :1].astype(np.uint8), affine)
    images["two_d"] = nib.Nifti1Image(data[:, :, 0].astype(np.uint8), affine)
    images["single_volume_4d"] = nib.Nifti1Image(data[..., None].astype(np.uint8), affine)
    path = tmp_path / f"{case}.nii"
    nib.save(images[case], str(path))
    assert nifti._nifti1_header(str(path)) is not None  # the fast path reads it
    fast, fast_geometry = read_nifti(path), read_nifti_geometry(path)
    monkeypatch.setattr(nifti, "_nifti1_header", lambda p: None)
    slow = read_nifti(path)
    assert fast.geometry.max_corner_distance_mm(slow.geometry) < 1e-9
    assert fast_geometry == fast.geometry
    assert fast.transform_source == slow.transform_source
    assert fast.voxels.dtype == slow.voxels.dtype
    np.testing.assert_array_equal(fast.voxels, slow.voxels)
    assert fast.header == slow.header
    assert [(p.code, p.severity) for p in fast.problems] == [(p.code, p.severity) for p in slow.problems]


def test_nifti_files_the_fast_reader_leaves_to_nibabel(tmp_path: Path) -> None:
    """Scaled data, compressed files, several volumes, big-endian and truncated files are not read
    by the fast path (nibabel applies the scaling and reports the defects)."""
    from RTSSBridgeLib import nifti

    data = np.arange(24, dtype=np.int16).reshape(4, 3, 2)
    scaled = nib.Nifti1Image(data, np.eye(4))
    scaled.header.set_slope_inter(2.0, 1.0)
    nib.save(scaled, str(tmp_path / "scaled.nii"))
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "c.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.uint8), np.eye(4)), str(tmp_path / "t.nii"))
    big = nib.Nifti1Image(data, np.eye(4), header=nib.Nifti1Header(endianness=">"))
    nib.save(big, str(tmp_path / "big.nii"))
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "cut.nii"))
    (tmp_path / "cut.nii").write_bytes((tmp_path / "cut.nii").read_bytes()[:360])
    for name in ("scaled.nii", "c.nii.gz", "t.nii", "big.nii", "cut.nii"):
        assert nifti._nifti1_header(str(tmp_path / name)) is None, name
    np.testing.assert_array_equal(read_nifti(tmp_path / "scaled.nii").voxels, data.T * 2.0 + 1.0)
    np.testing.assert_array_equal(read_nifti(tmp_path / "big.nii").voxels, data.T)
    with pytest.raises(InputError, match=r"cut\.nii"):
        read_nifti(tmp_path / "cut.nii").voxels.sum()
