"""Contour kernels (RTSSBridgeLib.contours): even-odd filling at voxel centres and exact boundary tracing.

R-5.3 (spatial consistency), R-5.7 (RTSS in and out): a mask traced into contours and filled back
is the same mask, voxel for voxel, whatever its shape.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from RTSSBridgeLib.contours import Polygon, rasterise, trace
from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.roi import RoiMask, dice


def square(k: int, i0: float, j0: float, i1: float, j1: float) -> Polygon:
    return Polygon(k, np.array([[i0, j0], [i1, j0], [i1, j1], [i0, j1]], dtype=float))


def test_even_odd_fill_at_voxel_centres_with_hole_and_island() -> None:
    """Nested contours alternate: outer filled, hole empty, island filled (plastimatch --xor-contours)."""
    polys = [square(1, 0.5, 0.5, 9.5, 9.5), square(1, 2.5, 2.5, 7.5, 7.5), square(1, 4.2, 4.2, 5.8, 5.8)]
    mask = rasterise(polys, (3, 12, 12)).full()
    expected = np.zeros((3, 12, 12), dtype=bool)
    expected[1, 1:10, 1:10] = True
    expected[1, 3:8, 3:8] = False
    expected[1, 5, 5] = True
    assert np.array_equal(mask, expected)


def test_only_centres_inside_count_and_polygons_are_clipped_to_the_grid() -> None:
    """A voxel belongs to the ROI when its centre is inside: 0.49 voxels of margin adds nothing, and
    parts outside the grid are cut off (the ROI is not dropped)."""
    mask = rasterise([square(0, 1.51, 1.51, 3.49, 3.49)], (1, 6, 6)).full()
    assert np.argwhere(mask).tolist() == [[0, 2, 2], [0, 2, 3], [0, 3, 2], [0, 3, 3]]
    clipped = rasterise([square(0, -5.0, -5.0, 1.2, 20.0)], (1, 4, 4))
    assert clipped.full()[0].tolist() == [[True, True, False, False]] * 4
    assert rasterise([square(0, 10.0, 10.0, 12.0, 12.0)], (1, 4, 4)).is_empty()


def test_fewer_than_three_points_and_slices_outside_are_ignored() -> None:
    assert rasterise([Polygon(0, np.array([[0.0, 0.0], [3.0, 3.0]]))], (1, 4, 4)).is_empty()
    assert rasterise([square(5, 0.0, 0.0, 3.0, 3.0)], (2, 4, 4)).is_empty()


def test_self_overlapping_contours_on_one_plane_xor() -> None:
    """Two overlapping contours on one plane: the overlap is a hole (even-odd), as plastimatch --xor-contours."""
    mask = rasterise([square(0, -0.5, -0.5, 3.5, 1.5), square(0, 1.5, -0.5, 5.5, 1.5)], (1, 2, 6)).full()[0]
    assert mask.tolist() == [[True, True, False, False, True, True]] * 2


def test_trace_single_voxel_is_one_square_around_its_centre() -> None:
    full = np.zeros((2, 5, 5), dtype=bool)
    full[1, 2, 3] = True
    loops = trace(RoiMask.from_full(full))
    assert len(loops) == 1 and int(loops.k[0]) == 1
    assert sorted(map(tuple, loops.loop(0).tolist())) == [(2.5, 1.5), (2.5, 2.5), (3.5, 1.5), (3.5, 2.5)]


def test_trace_hole_gives_inner_loop_and_corners_only() -> None:
    full = np.zeros((1, 7, 7), dtype=bool)
    full[0, 1:6, 1:6] = True
    full[0, 3, 3] = False
    loops = trace(RoiMask.from_full(full))
    assert len(loops) == 2
    assert [len(loops.loop(n)) for n in range(2)] == [4, 4]  # straight runs merged: corners only
    assert np.array_equal(rasterise(loops.polygons(), (1, 7, 7)).full(), full)


def test_diagonal_voxels_get_separate_loops_that_do_not_cross() -> None:
    """Voxels touching only at a corner stay separate loops (4-connected foreground)."""
    full = np.zeros((1, 4, 4), dtype=bool)
    full[0, 1, 1] = full[0, 2, 2] = True
    loops = trace(RoiMask.from_full(full))
    assert len(loops) == 2 and all(len(loops.loop(n)) == 4 for n in range(2))
    # the complementary saddle: a 2x2 block missing two diagonal voxels inside a larger region
    full = np.ones((1, 4, 4), dtype=bool)
    full[0, 1, 1] = full[0, 2, 2] = False
    loops = trace(RoiMask.from_full(full))
    assert np.array_equal(rasterise(loops.polygons(), (1, 4, 4)).full(), full)
    for n in range(len(loops)):
        points = [tuple(p) for p in loops.loop(n).tolist()]
        assert len(points) == len(set(points)), "a loop visits a corner twice"


def test_trace_of_border_touching_mask_lies_on_the_outer_voxel_boundary() -> None:
    full = np.ones((1, 3, 4), dtype=bool)
    loops = trace(RoiMask.from_full(full))
    assert sorted(map(tuple, loops.loop(0).tolist())) == [(-0.5, -0.5), (-0.5, 2.5), (3.5, -0.5), (3.5, 2.5)]


def test_empty_mask_traces_to_nothing() -> None:
    assert len(trace(RoiMask.empty((2, 3, 4)))) == 0


@settings(max_examples=150, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9))))
def test_trace_then_fill_is_exact_for_any_mask(full: np.ndarray) -> None:
    """Property (R-5.7): fill(trace(mask)) == mask for every boolean volume, holes, islands and
    diagonal contacts included; every loop is a simple polygon of at least 4 corners."""
    mask = RoiMask.from_full(full)
    loops = trace(mask)
    back = rasterise(loops.polygons(), full.shape)
    assert np.array_equal(back.full(), full)
    for n in range(len(loops)):
        corners = [tuple(p) for p in loops.loop(n).tolist()]
        assert len(corners) >= 4 and len(set(corners)) == len(corners)


def _boundary_edges(full: np.ndarray) -> set:  # type: ignore[type-arg]
    """Directed unit edges (k, x0, y0, x1, y1) of every voxel boundary, foreground on the right
    (x right, y down), in corner coordinates of the full grid (voxel (j, i) spans [i, i+1] x [j, j+1])."""
    edges = set()
    _nk, nj, ni = full.shape

    def at(k: int, j: int, i: int) -> bool:
        return 0 <= j < nj and 0 <= i < ni and bool(full[k, j, i])

    for k, j, i in zip(*np.nonzero(full)):
        if not at(k, j - 1, i):
            edges.add((k, i, j, i + 1, j))
        if not at(k, j, i + 1):
            edges.add((k, i + 1, j, i + 1, j + 1))
        if not at(k, j + 1, i):
            edges.add((k, i + 1, j + 1, i, j + 1))
        if not at(k, j, i - 1):
            edges.add((k, i, j + 1, i, j))
    return edges


def _loop_edges(loops) -> set:  # type: ignore[no-untyped-def, type-arg]
    """The unit edges the traced loops run along (corners are half-integers: +0.5 to corner coordinates)."""
    edges = set()
    for n in range(len(loops)):
        points = (loops.loop(n) + 0.5).astype(int).tolist()
        for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
            assert (x0 == x1) != (y0 == y1), "an edge that is not axis-aligned"
            step_x, step_y = int(np.sign(x1 - x0)), int(np.sign(y1 - y0))
            for s in range(max(abs(x1 - x0), abs(y1 - y0))):
                edges.add((int(loops.k[n]), x0 + s * step_x, y0 + s * step_y, x0 + (s + 1) * step_x,
                           y0 + (s + 1) * step_y))
    return edges


@pytest.mark.parametrize("seed", range(6))
def test_traced_loops_are_the_voxel_boundary_corner_by_corner(seed: int) -> None:
    """R-5.7: on slices with many contours, holes, islands and diagonal contacts (saddles of both
    kinds) the loops run along exactly the mask's boundary edges, foreground on the right (outer
    loops clockwise on the screen, holes counter-clockwise), one point per corner (no straight
    vertex), ordered by slice, each starting at its first corner in raster order."""
    rng = np.random.default_rng(seed)
    full = rng.random((3, 23, 31)) < (0.3 + 0.1 * seed)
    full[1, 5:18, 4:25] = True  # a large region with holes and saddles inside
    full[1, 8:15:2, 7:22:2] = False
    full[2] = False
    full[2, 0, :] = True  # a border-touching row and one voxel
    full[2, 10, 10] = True
    loops = trace(RoiMask.from_full(full))
    assert _loop_edges(loops) == _boundary_edges(full)
    assert list(loops.k) == sorted(loops.k)
    for n in range(len(loops)):
        points = loops.loop(n)
        following, previous = np.roll(points, -1, axis=0), np.roll(points, 1, axis=0)
        into, out = points - previous, following - points
        straight = into[:, 0] * out[:, 1] - into[:, 1] * out[:, 0] == 0
        assert not straight.any(), "a point that is not a corner"
        first = min(map(tuple, points[:, ::-1].tolist()))  # raster order: row (y) then column (x)
        assert tuple(points[0, ::-1].tolist()) == first
    back = rasterise(loops.polygons(), full.shape)
    assert np.array_equal(back.full(), full)


def test_roimask_crop_paint_and_dice() -> None:
    full = np.zeros((4, 5, 6), dtype=bool)
    full[1:3, 2, 1:4] = True
    mask = RoiMask.from_full(full)
    assert mask.offset == (1, 2, 1) and mask.data.shape == (2, 1, 3) and mask.count() == 6
    assert mask.slices_k() == [1, 2]
    target = np.zeros((4, 5, 6), dtype=np.uint8)
    mask.paint(target, 7)
    assert int(target.sum()) == 42
    other = full.copy()
    other[1, 2, 1] = False
    assert dice(mask, RoiMask.from_full(other)) == pytest.approx(2 * 5 / 11)
    assert dice(RoiMask.empty((4, 5, 6)), RoiMask.empty((4, 5, 6))) == 1.0
    assert mask.same_as(RoiMask.from_full(full)) and not mask.same_as(RoiMask.from_full(other))


@pytest.mark.parametrize(("make", "match"), [
    (lambda: RoiMask((4, 5), (0, 0, 0), np.zeros((1, 1, 1))), "three positive integers"),
    (lambda: RoiMask((4, 5, 6), (3, 0, 0), np.ones((2, 1, 1))), "leaves the grid"),
    (lambda: RoiMask.from_full(np.zeros((4, 5))), "3-D"),
    (lambda: dice(RoiMask.empty((1, 2, 3)), RoiMask.empty((1, 2, 4))), "different grids"),
    (lambda: RoiMask.empty((1, 2, 3)).paint(np.zeros((1, 2, 4)), 1), "not the mask grid"),
])
def test_invalid_masks_are_refused(make, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=match):
        make()
