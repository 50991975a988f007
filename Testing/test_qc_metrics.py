"""QC metric kernels and registry (R-9.1, Appendix D, SPEC "Decisions").

Values are checked against independent references: analytic shapes whose boundary distances are
known exactly (boxes, box shells, single voxels on oblique anisotropic grids), brute-force
all-pairs distances (``scipy.spatial.distance.cdist``) on random shapes, the Metrics Reloaded
algorithm written out with scipy (``binary_erosion`` + ``distance_transform_edt``), and the Metrics
Reloaded package itself when a checkout is given in ``MMANNO_METRICS_RELOADED``. Tolerances: 1e-6
for overlap, one voxel diagonal / 1000 for distances.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Dict

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from QCMetricsLib.kernels import (
    index_to_mm_matrix,
    pair_statistics,
    surface_voxels,
)
from QCMetricsLib.metrics import (
    DETECTION_METRICS,
    PAIR_METRICS,
    Direction,
    MetricOptions,
    compute_pair_metrics,
    kappa_from_counts,
    metric,
)


def values(ref: Any, test: Any, spacing: Any = (1.0, 1.0, 1.0), direction: Any = None, **kw: Any) -> Dict[str, float]:
    stats = pair_statistics(ref, test, spacing, direction, **kw)
    stats.tn = stats.counts.image_voxels - stats.counts.union
    return {k: v.value for k, v in compute_pair_metrics(stats, MetricOptions(nsd_tolerance_mm=1.5)).items()}


def diagonal(spacing: Any) -> float:
    return float(np.linalg.norm(spacing))


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = (math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def brute_force(ref: np.ndarray, test: np.ndarray, spacing: Any, direction: Any = None,
                tau: float = 1.5) -> Dict[str, float]:
    """All-pairs reference: surfaces by erosion (scipy, zero border), distances by cdist."""
    linear = index_to_mm_matrix(spacing, direction)
    sr = ref & ~ndimage.binary_erosion(ref, border_value=0)
    st = test & ~ndimage.binary_erosion(test, border_value=0)
    pr = np.argwhere(sr) @ linear.T
    pt = np.argwhere(st) @ linear.T
    d = cdist(pr, pt)
    a, b = d.min(axis=1), d.min(axis=0)
    return {
        "hausdorff_mm": max(a.max(), b.max()),
        "hausdorff95_mm": max(np.percentile(a, 95), np.percentile(b, 95)),
        "mean_surface_distance_mm": (a.sum() + b.sum()) / (a.size + b.size),
        "masd_mm": (a.mean() + b.mean()) / 2,
        "nsd": (np.count_nonzero(a <= tau + 1e-9) + np.count_nonzero(b <= tau + 1e-9)) / (a.size + b.size),
        "dice": 2 * np.count_nonzero(ref & test) / (np.count_nonzero(ref) + np.count_nonzero(test)),
        "iou": np.count_nonzero(ref & test) / np.count_nonzero(ref | test),
    }


def metrics_reloaded_algorithm(ref: np.ndarray, test: np.ndarray, axis_spacing: Any) -> Dict[str, float]:
    """Metrics Reloaded's measured_distance written out (border = mask - binary_erosion; EDT of the
    other border's complement with sampling = pixdim)."""
    br = ref & ~ndimage.binary_erosion(ref)
    bt = test & ~ndimage.binary_erosion(test)
    dr = ndimage.distance_transform_edt(~br, sampling=axis_spacing)
    dt = ndimage.distance_transform_edt(~bt, sampling=axis_spacing)
    a = dt[br]
    b = dr[bt]
    return {"hausdorff_mm": max(a.max(), b.max()), "hausdorff95_mm": max(np.percentile(a, 95), np.percentile(b, 95)),
            "mean_surface_distance_mm": (a.sum() + b.sum()) / (a.size + b.size),
            "masd_mm": 0.5 * (a.mean() + b.mean())}


def random_shape(rng: np.random.Generator, shape: Any, fill: float = 0.35) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.random(shape), 1.5)
    return noise > np.quantile(noise, 1 - fill)


# --------------------------------------------------------------------------- analytic shapes
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_shifted_box_has_the_shift_as_hausdorff_and_exact_overlap(axis: int) -> None:
    """R-9.1: a box and its copy shifted by d voxels along one axis: HD = d x spacing of that axis,
    Dice = (w - d) / w, volumes exact, on an anisotropic grid (numpy axis 0 = k)."""
    spacing_ijk = (0.7, 0.9, 2.5)
    axis_spacing = spacing_ijk[::-1][axis]
    shape = (30, 34, 38)
    ref = np.zeros(shape, bool)
    ref[5:25, 6:26, 7:27] = True
    d = 3
    test = np.roll(ref, d, axis=axis)
    v = values(ref, test, spacing_ijk)
    assert v["hausdorff_mm"] == pytest.approx(d * axis_spacing, abs=1e-12)
    assert v["dice"] == pytest.approx((20 - d) / 20, abs=1e-12)
    assert v["iou"] == pytest.approx((20 - d) / (20 + d), abs=1e-12)
    assert v["conformity"] == pytest.approx(1 - 2 * d / (20 - d), abs=1e-12)
    voxel_ml = 0.7 * 0.9 * 2.5 / 1000
    assert v["volume_ref_ml"] == pytest.approx(8000 * voxel_ml, rel=1e-12)
    assert v["volume_difference_ml"] == 0.0
    assert v["tp"] == 8000 - 400 * d and v["fp"] == 400 * d and v["fn"] == 400 * d


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.7, 1.0), (0.5, 1.2, 3.0)])
def test_box_shell_distances_are_known_exactly(spacing: Any) -> None:
    """A box inside a box grown by t voxels on every side (a shell of thickness t): the test corners
    are t x |spacing| from the reference corners and every reference boundary voxel is at most
    t x max(spacing) from the test boundary, so HD = t x |spacing| (anisotropic grids)."""
    t = 2
    ref = np.zeros((24, 24, 24), bool)
    ref[8:16, 8:16, 8:16] = True
    test = np.zeros_like(ref)
    test[8 - t:16 + t, 8 - t:16 + t, 8 - t:16 + t] = True
    stats = pair_statistics(ref, test, spacing)
    s = stats.surfaces
    assert s is not None
    if len(set(spacing)) == 1:
        assert s.ref_to_test.max() == pytest.approx(t * spacing[0], abs=1e-12)
    assert s.ref_to_test.max() <= t * max(spacing) + 1e-12  # a side face may be nearer than the opposite face
    assert s.test_to_ref.max() == pytest.approx(t * math.sqrt(sum(x * x for x in spacing)), abs=1e-12)
    assert metric("hausdorff_mm").compute(stats, MetricOptions()).value == pytest.approx(
        t * diagonal(spacing), abs=1e-12)
    assert metric("dice").compute(stats, MetricOptions()).value == pytest.approx(2 * 512 / (512 + 12**3), abs=1e-12)


def test_single_voxels_on_an_oblique_anisotropic_grid_are_their_physical_distance_apart() -> None:
    """Distances are between voxel centres in physical space: D @ diag(spacing) @ (di, dj, dk)."""
    direction = rotation(0.3, -0.5, 1.1)
    spacing = (0.6, 0.8, 2.0)
    ref = np.zeros((10, 10, 10), bool)
    test = np.zeros_like(ref)
    ref[2, 3, 4] = True  # (k, j, i)
    test[5, 1, 8] = True
    expected = float(np.linalg.norm(direction @ np.diag(spacing) @ np.array([8 - 4, 1 - 3, 5 - 2])))
    v = values(ref, test, spacing, direction)
    for name in ("hausdorff_mm", "hausdorff95_mm", "mean_surface_distance_mm", "masd_mm"):
        assert v[name] == pytest.approx(expected, abs=1e-12), name
    assert v["dice"] == 0.0 and v["nsd"] == 0.0


def test_distances_do_not_depend_on_orientation() -> None:
    """The same voxel masks on an axis-aligned and on an oblique grid (orthonormal direction) give
    the same distances: rotation preserves lengths."""
    rng = np.random.default_rng(3)
    ref = random_shape(rng, (20, 22, 18))
    test = random_shape(rng, (20, 22, 18))
    a = values(ref, test, (0.7, 0.8, 1.5))
    b = values(ref, test, (0.7, 0.8, 1.5), rotation(0.4, 0.2, -0.7))
    for name in ("hausdorff_mm", "hausdorff95_mm", "mean_surface_distance_mm", "masd_mm", "nsd"):
        assert b[name] == pytest.approx(a[name], abs=1e-9)


def test_concentric_spheres_are_their_radius_difference_apart() -> None:
    """Balls of radius 10 and 14 mm (concentric, 0.7 x 0.7 x 1.0 mm grid): HD and ASSD are the
    radius difference within one voxel diagonal (the voxelised spheres are not exact spheres)."""
    spacing = (0.7, 0.7, 1.0)
    k, j, i = np.ogrid[:40, :60, :60]
    r = np.sqrt(((i - 30) * 0.7) ** 2 + ((j - 30) * 0.7) ** 2 + ((k - 20) * 1.0) ** 2)
    v = values(r <= 10.0, r <= 14.0, spacing)
    for name in ("hausdorff_mm", "mean_surface_distance_mm", "masd_mm"):
        assert abs(v[name] - 4.0) < diagonal(spacing), name


# --------------------------------------------------------------------------- random shapes
@pytest.mark.parametrize("seed", range(6))
def test_random_shapes_equal_the_brute_force_reference(seed: int) -> None:
    """Random blobs on anisotropic and oblique grids, both algorithm paths (box and sparse):
    overlap within 1e-6, distances within one voxel diagonal / 1000 of all-pairs distances."""
    rng = np.random.default_rng(seed)
    shape = (14 + seed, 18, 16)
    ref = random_shape(rng, shape, 0.3)
    test = random_shape(rng, shape, 0.3)
    spacing = (0.5 + 0.3 * seed, 0.8, 1.0 + 0.5 * (seed % 3))
    direction = rotation(0.2 * seed, 0.5, -0.3) if seed % 2 else None
    reference = brute_force(ref, test, spacing, direction)
    for sparse in (False, True):
        ours = values(ref, test, spacing, direction, sparse=sparse)
        for name, expected in reference.items():
            tolerance = 1e-6 if name in ("dice", "iou", "nsd") else diagonal(spacing) / 1000
            assert ours[name] == pytest.approx(expected, abs=tolerance), (name, sparse)


@pytest.mark.parametrize("seed", range(3))
def test_random_shapes_equal_the_metrics_reloaded_algorithm(seed: int) -> None:
    """The Metrics Reloaded definitions (border by erosion, EDT with pixdim) give the same numbers,
    also through our EDT method."""
    rng = np.random.default_rng(100 + seed)
    ref = random_shape(rng, (16, 20, 24), 0.25)
    test = random_shape(rng, (16, 20, 24), 0.25)
    spacing_ijk = (0.7, 0.7, 1.0 + seed)
    expected = metrics_reloaded_algorithm(ref, test, spacing_ijk[::-1])
    for method in ("kdtree", "edt"):
        ours = values(ref, test, spacing_ijk, method=method)
        for name, value in expected.items():
            assert ours[name] == pytest.approx(value, abs=diagonal(spacing_ijk) / 1000), (name, method)


def test_against_the_metrics_reloaded_package_when_a_checkout_is_given() -> None:
    """Metrics Reloaded is not on PyPI; with MMANNO_METRICS_RELOADED=<checkout> this compares with
    its BinaryPairwiseMeasures directly."""
    path = os.environ.get("MMANNO_METRICS_RELOADED")
    if not path:
        pytest.skip("MMANNO_METRICS_RELOADED not set (Metrics Reloaded is not on PyPI); its algorithm is checked "
                    "in test_random_shapes_equal_the_metrics_reloaded_algorithm")
    sys.path.insert(0, path)
    try:
        from MetricsReloaded.metrics.pairwise_measures import BinaryPairwiseMeasures
    finally:
        sys.path.remove(path)
    rng = np.random.default_rng(7)
    ref = random_shape(rng, (16, 20, 24), 0.25)
    test = random_shape(rng, (16, 20, 24), 0.25)
    spacing = (0.7, 0.9, 1.5)
    m = BinaryPairwiseMeasures(test.astype(np.int8), ref.astype(np.int8), pixdim=spacing[::-1],
                               dict_args={"hd_perc": 95, "nsd": 1.5})
    hd, assd, hd95, masd = m.measured_distance()
    ours = values(ref, test, spacing)
    tol = diagonal(spacing) / 1000
    assert ours["hausdorff_mm"] == pytest.approx(hd, abs=tol)
    assert ours["hausdorff95_mm"] == pytest.approx(hd95, abs=tol)
    assert ours["mean_surface_distance_mm"] == pytest.approx(assd, abs=tol)
    assert ours["masd_mm"] == pytest.approx(masd, abs=tol)
    assert ours["dice"] == pytest.approx(m.dsc(), abs=1e-6)
    assert ours["nsd"] == pytest.approx(m.normalised_surface_distance(), abs=1e-6)


def test_surface_is_the_six_connected_boundary_with_zero_padding() -> None:
    """A box touching the image edge has its boundary there; a 3x3x3 cube's surface is 26 voxels."""
    mask = np.zeros((5, 5, 5), bool)
    mask[1:4, 1:4, 1:4] = True
    assert int(surface_voxels(mask).sum()) == 26
    full = np.ones((4, 5, 6), bool)
    s = surface_voxels(full)
    assert s.sum() == full.size - 2 * 3 * 4 and not s[1:-1, 1:-1, 1:-1].any()
    expected = full & ~ndimage.binary_erosion(full, border_value=0)
    assert np.array_equal(s, expected)


# --------------------------------------------------------------------------- documented special inputs
def test_empty_inputs_give_the_documented_results() -> None:
    """SPEC Decisions: one empty mask -> distances NaN with a reason (batch: worst case), never a
    silent 0 or infinity; both empty -> the documented agreement-on-absence values."""
    empty = np.zeros((6, 6, 6), bool)
    one = empty.copy()
    one[2:4, 2:4, 2:4] = True
    stats = pair_statistics(empty, empty)
    both = compute_pair_metrics(stats)
    assert both["dice"].value == 1.0 and "both masks empty" in both["dice"].reason
    assert both["iou"].value == 1.0 and both["nsd"].value == 1.0 and both["conformity"].value == 1.0
    assert both["hausdorff_mm"].value == 0.0 and "both masks empty" in both["hausdorff_mm"].reason
    assert math.isnan(both["sensitivity"].value) and math.isnan(both["precision"].value)
    ref_empty = compute_pair_metrics(pair_statistics(empty, one))
    test_empty = compute_pair_metrics(pair_statistics(one, empty))
    for name in ("hausdorff_mm", "hausdorff95_mm", "mean_surface_distance_mm", "masd_mm"):
        assert math.isnan(ref_empty[name].value) and "reference mask empty" in ref_empty[name].reason
        assert math.isnan(test_empty[name].value) and "test mask empty" in test_empty[name].reason
        assert ref_empty[name].json_value() is None
    assert ref_empty["dice"].value == 0.0 and test_empty["dice"].value == 0.0
    assert ref_empty["nsd"].value == 0.0
    assert math.isnan(test_empty["conformity"].value) and "TP = 0" in test_empty["conformity"].reason
    assert math.isnan(ref_empty["sensitivity"].value) and test_empty["sensitivity"].value == 0.0
    assert math.isnan(test_empty["precision"].value)
    assert math.isnan(ref_empty["relative_volume_difference"].value)
    assert test_empty["relative_volume_difference"].value == -100.0
    for m in PAIR_METRICS + DETECTION_METRICS:
        assert m.empty_policy.both_empty and m.empty_policy.ref_empty and m.empty_policy.test_empty, m.name


def test_identical_disjoint_and_single_voxel_inputs() -> None:
    """Identical: Dice 1, distances 0, NSD 1. Disjoint: Dice 0, conformity NaN (TP = 0), distances
    the gap. Single voxel against itself: its own surface, all distances 0."""
    rng = np.random.default_rng(1)
    shape = random_shape(rng, (12, 12, 12))
    same = values(shape, shape.copy(), (0.7, 0.7, 1.0))
    assert same["dice"] == 1.0 and same["iou"] == 1.0 and same["conformity"] == 1.0 and same["nsd"] == 1.0
    assert same["hausdorff_mm"] == 0.0 and same["mean_surface_distance_mm"] == 0.0
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    a[1:3, 1:3, 1:3] = True
    b[6:8, 1:3, 1:3] = True  # 4 slices apart along k (spacing 2 mm): boundary gap 4 * 2 mm
    disjoint = compute_pair_metrics(pair_statistics(a, b, (1.0, 1.0, 2.0)))
    assert disjoint["dice"].value == 0.0 and disjoint["iou"].value == 0.0
    assert math.isnan(disjoint["conformity"].value)
    assert disjoint["hausdorff_mm"].value == pytest.approx(5 * 2.0, abs=1e-12)  # k = 1 to k = 6
    assert disjoint["mean_surface_distance_mm"].value == pytest.approx(4.5 * 2.0, abs=1e-12)
    assert disjoint["nsd"].value == 0.0
    single = np.zeros((5, 5, 5), bool)
    single[2, 2, 2] = True
    v = values(single, single.copy())
    assert v["dice"] == 1.0 and v["hausdorff_mm"] == 0.0 and v["nsd"] == 1.0
    stats = pair_statistics(single, single)
    assert stats.surfaces is not None and stats.surfaces.n_ref_surface == 1


def test_sensitivity_specificity_accuracy_and_kappa_follow_the_confusion_matrix() -> None:
    """Standard Sen = TP/(TP+FN) (Appendix D's legend swaps words); Spe, Acc, kappa with TN from
    the domain; exact against numbers computed by hand."""
    tp, fp, fn, tn = 40, 10, 20, 930
    k = kappa_from_counts(tp, fp, fn, tn)
    n = tp + fp + fn + tn
    po = (tp + tn) / n
    pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n**2
    assert k.value == pytest.approx((po - pe) / (1 - pe), abs=1e-15)
    ref = np.zeros(1000, bool)
    test = np.zeros(1000, bool)
    ref[:60] = True
    test[20:70] = True
    stats = pair_statistics(ref.reshape(10, 10, 10), test.reshape(10, 10, 10))
    stats.tn = 1000 - stats.counts.union
    v = compute_pair_metrics(stats)
    assert (stats.counts.tp, stats.counts.fp, stats.counts.fn, stats.tn) == (tp, fp, fn, tn)
    assert v["sensitivity"].value == pytest.approx(40 / 60, abs=1e-15)
    assert v["precision"].value == pytest.approx(40 / 50, abs=1e-15)
    assert v["specificity"].value == pytest.approx(930 / 940, abs=1e-15)
    assert v["accuracy"].value == pytest.approx(970 / 1000, abs=1e-15)
    assert v["kappa"].value == pytest.approx(k.value, abs=1e-15)
    from sklearn.metrics import cohen_kappa_score

    assert v["kappa"].value == pytest.approx(cohen_kappa_score(ref, test), abs=1e-12)
    assert math.isnan(kappa_from_counts(0, 0, 0, 10).value)


def test_registry_declares_every_field_and_lists_each_name_once() -> None:
    """STYLE habit 9: name, titles (English and Chinese), unit, definition, reference, direction,
    empty policy; the issue's JSON keys are registry names."""
    names = [m.name for m in PAIR_METRICS + DETECTION_METRICS]
    assert len(names) == len(set(names))
    for key in ("dice", "iou", "conformity", "hausdorff_mm", "hausdorff95_mm", "mean_surface_distance_mm", "nsd",
                "volume_ref_ml", "volume_test_ml", "tp", "fp", "fn"):
        assert key in names
    for m in PAIR_METRICS + DETECTION_METRICS:
        assert m.title and m.title_zh and m.definition and m.reference and isinstance(m.direction, Direction)
        assert m.localized_title("zh") == m.title_zh and m.describe()["name"] == m.name
    with pytest.raises(KeyError, match="no metric named"):
        metric("no_such_metric")
    with pytest.raises(ValueError, match="nsd_tolerance_mm"):
        MetricOptions(nsd_tolerance_mm=-1.0)


def test_invalid_kernel_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        pair_statistics(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="spacing_mm"):
        pair_statistics(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="method"):
        pair_statistics(np.ones((2, 2, 2)), np.ones((2, 2, 2)), method="nope")
    with pytest.raises(ValueError, match="orthogonal"):
        pair_statistics(np.ones((3, 3, 3)), np.ones((3, 3, 3)), direction=np.array(
            [[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]), method="edt")
    with pytest.raises(ValueError, match="2-D or 3-D"):
        pair_statistics(np.zeros(4), np.zeros(4))
