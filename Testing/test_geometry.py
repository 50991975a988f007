"""ImageGeometry: IJK <-> LPS <-> RAS, matrices, DICOM and NIfTI views (SPEC Appendix B/C, R-5.3).

Geometry is checked against independent implementations (SimpleITK's index->point mapping and
nibabel's apply_affine) on oblique, anisotropic, non-square-pixel, feet-first and non-origin
grids; round trips must be exact to 1e-6 mm.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from RTSSBridgeLib.errors import GeometryError
from RTSSBridgeLib.geometry import LPS_TO_RAS, ImageGeometry, lps_to_ras, ras_to_lps


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


OBLIQUE = ImageGeometry(
    shape=(100, 60, 37),
    spacing_mm=(0.7, 0.45, 3.3),  # anisotropic and non-square in-plane
    origin_lps=(-123.25, 87.5, -402.125),  # far from the origin
    direction=tuple(map(tuple, rotation(0.21, -0.13, 0.4))),
)
# Feet-first supine axial: the image x axis points to the patient's right, slices run inferior.
FEET_FIRST = ImageGeometry.from_dicom([-1, 0, 0, 0, 1, 0], [180.0, -170.0, 25.0], [0.8, 0.6], rows=300, columns=250,
                                      n_slices=40, slice_spacing_mm=2.5)
CASES = {"oblique": OBLIQUE, "feet_first": FEET_FIRST,
         "axial": ImageGeometry((512, 512, 120), (0.703125, 0.703125, 1.25), (-180.0, -180.0, -250.0))}


def random_ijk(geometry: ImageGeometry, n: int = 500) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.uniform(-5, 1, size=(n, 3)) + rng.uniform(0, 1, size=(n, 3)) * np.asarray(geometry.shape)


def sitk_image(g: ImageGeometry) -> sitk.Image:
    img = sitk.Image(list(g.shape), sitk.sitkUInt8)
    img.SetSpacing(g.spacing_mm)
    img.SetOrigin(g.origin_lps)
    img.SetDirection(g.direction_matrix.ravel().tolist())
    return img


@pytest.mark.parametrize("name", sorted(CASES))
def test_ijk_to_lps_agrees_with_simpleitk(name: str) -> None:
    g = CASES[name]
    img = sitk_image(g)
    ijk = random_ijk(g, 200)
    expected = np.array([img.TransformContinuousIndexToPhysicalPoint(p.tolist()) for p in ijk])
    np.testing.assert_allclose(g.ijk_to_lps(ijk), expected, atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_ijk_to_ras_agrees_with_nibabel_affine(name: str) -> None:
    g = CASES[name]
    ijk = random_ijk(g)
    np.testing.assert_allclose(g.ijk_to_ras(ijk), nib.affines.apply_affine(g.ijk_to_ras_matrix(), ijk), atol=1e-9)
    # RAS is LPS with x and y negated, nothing else
    np.testing.assert_array_equal(g.ijk_to_ras(ijk)[:, 2], g.ijk_to_lps(ijk)[:, 2])
    np.testing.assert_array_equal(g.ijk_to_ras(ijk)[:, :2], -g.ijk_to_lps(ijk)[:, :2])


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trips_exact_to_1e6_mm(name: str) -> None:
    g = CASES[name]
    ijk = random_ijk(g)
    lps = g.ijk_to_lps(ijk)
    back = g.lps_to_ijk(lps)
    # compare in mm: the index error times the spacing
    assert np.max(np.abs(back - ijk) * np.asarray(g.spacing_mm)) < 1e-6
    np.testing.assert_allclose(g.ras_to_ijk(g.ijk_to_ras(ijk)), ijk, atol=1e-9)
    np.testing.assert_array_equal(ras_to_lps(lps_to_ras(lps)), lps)
    # matrices are inverse of each other
    np.testing.assert_allclose(g.ijk_to_lps_matrix() @ g.lps_to_ijk_matrix(), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(g.ijk_to_ras_matrix() @ g.ras_to_ijk_matrix(), np.eye(4), atol=1e-12)
    np.testing.assert_array_equal(g.ijk_to_ras_matrix()[:3, :3], LPS_TO_RAS @ g.ijk_to_lps_matrix()[:3, :3])


@pytest.mark.parametrize("name", sorted(CASES))
def test_matrix_decomposition_round_trip(name: str) -> None:
    g = CASES[name]
    again = ImageGeometry.from_ijk_to_lps_matrix(g.shape, g.ijk_to_lps_matrix())
    assert again.max_corner_distance_mm(g) < 1e-9
    from_ras = ImageGeometry.from_ijk_to_ras_matrix(g.shape, g.ijk_to_ras_matrix())
    assert from_ras.max_corner_distance_mm(g) < 1e-9
    np.testing.assert_allclose(from_ras.spacing_mm, g.spacing_mm, atol=1e-12)
    np.testing.assert_allclose(from_ras.direction_matrix, g.direction_matrix, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_dict_round_trip_is_exact(name: str) -> None:
    g = CASES[name]
    assert ImageGeometry.from_dict(g.to_dict()) == g


def test_non_square_pixel_spacing_follows_dicom_row_column_order() -> None:
    # PixelSpacing = [row spacing (along j), column spacing (along i)]
    g = ImageGeometry.from_dicom([1, 0, 0, 0, 1, 0], [10.0, 20.0, 30.0], [0.5, 0.9], rows=4, columns=6)
    assert g.spacing_mm == (0.9, 0.5, 1.0)
    assert g.shape == (6, 4, 1)
    np.testing.assert_allclose(g.ijk_to_lps([1, 0, 0]), [10.9, 20.0, 30.0])
    np.testing.assert_allclose(g.ijk_to_lps([0, 1, 0]), [10.0, 20.5, 30.0])
    assert g.dicom_pixel_spacing() == [0.5, 0.9]


def test_feet_first_axes_and_slice_positions() -> None:
    g = FEET_FIRST
    assert g.axis_codes() == "RPI"
    np.testing.assert_allclose(g.slice_normal(), [0, 0, -1])
    np.testing.assert_allclose(g.slice_position_lps(4), [180.0, -170.0, 25.0 - 4 * 2.5])
    np.testing.assert_allclose(g.dicom_orientation(), [-1, 0, 0, 0, 1, 0])


def test_from_dicom_normalises_cosines_like_itk() -> None:
    iop = [0.9541666, -0.2080757, 0.2151061, 0.2785886, 0.880128, -0.3843997]  # 7 decimals, |v| != 1
    g = ImageGeometry.from_dicom(iop, [0, 0, 0], [2.5, 3.5], rows=50, columns=100)
    np.testing.assert_allclose(np.linalg.norm(g.direction_matrix, axis=0), 1.0, atol=1e-15)
    np.testing.assert_allclose(g.direction_matrix[:, 0], np.asarray(iop[:3]), atol=1e-7)
    assert g.is_oblique()


def test_isclose_and_corner_distance() -> None:
    g = OBLIQUE
    shifted = ImageGeometry(g.shape, g.spacing_mm, tuple(np.add(g.origin_lps, [0, 0, 5e-5])), g.direction)
    assert g.isclose(shifted, tol_mm=1e-4)
    assert not g.isclose(shifted, tol_mm=1e-5)
    assert g.max_corner_distance_mm(g.with_shape((100, 60, 36))) == math.inf
    # a spacing error shows at the far corner, not at the origin
    stretched = ImageGeometry(g.shape, (0.7, 0.45, 3.3 + 1e-5), g.origin_lps, g.direction)
    assert math.isclose(g.max_corner_distance_mm(stretched), 36 * 1e-5, rel_tol=1e-6)


def test_contains_and_corners() -> None:
    g = CASES["axial"]
    assert g.contains_ijk([[0, 0, 0], [511.4, 511.4, 119.4]]).all()
    assert not g.contains_ijk([511.6, 0, 0])
    assert g.corners_lps().shape == (8, 3)
    assert math.isclose(g.voxel_volume_mm3, 0.703125 * 0.703125 * 1.25)


@settings(max_examples=200, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-math.pi, math.pi, allow_nan=False)] * 3),
    spacing=st.tuples(*[st.floats(0.05, 10.0)] * 3),
    origin=st.tuples(*[st.floats(-1000.0, 1000.0)] * 3),
    flip=st.booleans(),
    ijk=st.tuples(*[st.floats(-50.0, 600.0)] * 3),
)
def test_round_trip_property(angles, spacing, origin, flip, ijk) -> None:  # type: ignore[no-untyped-def]
    d = rotation(*angles)
    if flip:  # left-handed grids exist in NIfTI files
        d = d @ np.diag([1.0, 1.0, -1.0])
    g = ImageGeometry((512, 512, 300), spacing, origin, tuple(map(tuple, d)))
    lps = g.ijk_to_lps(ijk)
    assert np.max(np.abs(g.lps_to_ijk(lps) - np.asarray(ijk)) * np.asarray(spacing)) < 1e-6
    ras = g.ijk_to_ras(ijk)
    assert np.max(np.abs(g.ras_to_ijk(ras) - np.asarray(ijk)) * np.asarray(spacing)) < 1e-6
    again = ImageGeometry.from_ijk_to_ras_matrix(g.shape, g.ijk_to_ras_matrix())
    assert again.max_corner_distance_mm(g) < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        ({"shape": (0, 4, 4)}, "shape", "positive integers"),
        ({"shape": (4, 4)}, "shape", "three positive integers"),
        ({"shape": (4.5, 4, 4)}, "shape", "positive integers"),
        ({"spacing_mm": (1, -1, 1)}, "spacing_mm", "must be positive"),
        ({"spacing_mm": (1, float("nan"), 1)}, "spacing_mm", "finite"),
        ({"origin_lps": (0, 0)}, "origin_lps", "three numbers"),
        ({"origin_lps": (0, float("inf"), 0)}, "origin_lps", "finite"),
        ({"direction": ((1, 0, 0), (0, 1, 0), (0, 0.5, 1))}, "direction", "orthonormal"),
        ({"direction": ((1, 0), (0, 1))}, "direction", "3x3"),
    ],
)
def test_invalid_geometry_is_rejected_naming_field_and_rule(kwargs, field, rule) -> None:  # type: ignore[no-untyped-def]
    base = {"shape": (4, 4, 4), "spacing_mm": (1, 1, 1), "origin_lps": (0, 0, 0),
            "direction": ((1, 0, 0), (0, 1, 0), (0, 0, 1))}
    base.update(kwargs)
    with pytest.raises(GeometryError, match=rule) as info:
        ImageGeometry(**base)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


def test_invalid_dicom_attributes_are_named() -> None:
    with pytest.raises(GeometryError, match="ImageOrientationPatient"):
        ImageGeometry.from_dicom([1, 0, 0, 0, 0, 0], [0, 0, 0], [1, 1], 2, 2)
    with pytest.raises(GeometryError, match="PixelSpacing"):
        ImageGeometry.from_dicom([1, 0, 0, 0, 1, 0], [0, 0, 0], [1, 0], 2, 2)
    with pytest.raises(GeometryError, match="ImagePositionPatient"):
        ImageGeometry.from_dicom([1, 0, 0, 0, 1, 0], [0, 0], [1, 1], 2, 2)
    with pytest.raises(GeometryError, match="last row"):
        bad_last_row = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]])
        ImageGeometry.from_ijk_to_lps_matrix((2, 2, 2), bad_last_row)
    with pytest.raises(GeometryError, match="last axis of length 3"):
        OBLIQUE.ijk_to_lps([1, 2])
