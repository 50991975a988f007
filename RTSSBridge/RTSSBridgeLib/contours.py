"""Planar contours <-> voxel masks: the exact kernels of RT Structure Set import and export (R-5.3, R-5.7).

Both directions work in continuous voxel indices of the image plane (``i`` along a row, ``j`` down
the columns; voxel centres at integers), which :class:`~RTSSBridgeLib.geometry.ImageGeometry`
produces from LPS; nothing here knows millimetres.

Filling (:func:`rasterise`)
    A voxel is inside when its *centre* lies inside the polygons of its slice under the
    **even-odd rule over all polygons of that slice together**: a contour inside another is a
    hole, an island inside that hole is filled again. This is the convention of plastimatch
    ``--xor-contours`` and dcmrtstruct2nii. It is computed by scanlines: every polygon edge is
    intersected with the voxel columns ``i`` it spans (half-open ``[x_min, x_max)``, so a vertex on
    a scanline is counted once), each crossing toggles the voxels below it, and an exclusive-or
    accumulation down the columns turns toggles into inside/outside. All slices of an ROI are done
    in one pass over its bounding box, so the cost is the box size plus the number of crossings.

Tracing (:func:`trace`)
    Contours are laid along voxel *boundaries* (half-integer coordinates), one closed loop per
    boundary component, holes included. Filling those loops with the rule above gives back
    exactly the traced mask: no voxel centre lies on a boundary, and the even-odd parity of a
    centre only depends on the set of boundary edges, which is exactly the mask's boundary.
    Where two voxels touch only at a corner, the loops turn so that each keeps to its own voxel
    (4-connected foreground), so loops never cross each other. Straight runs are merged, so a loop
    has one point per corner. The loops are found without a per-edge Python loop: directed
    boundary edges are linked into a permutation (``next``), cycles are labelled by pointer jumping
    and ordered by list ranking, all as numpy array operations. On the 11 ROIs of a
    512 x 512 x 177 CT this is what makes export several times faster than plastimatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .roi import RoiMask

#: The four directions of a boundary edge in corner coordinates (x right, y down).
_DX = np.array([1, 0, -1, 0], dtype=np.int64)
_DY = np.array([0, 1, 0, -1], dtype=np.int64)


@dataclass(frozen=True)
class Polygon:
    """One closed planar polygon on slice ``k``: ``points`` is ``(n, 2)`` continuous ``(i, j)``."""

    k: int
    points: np.ndarray


def rasterise(polygons: Sequence[Polygon], shape_kji: Tuple[int, int, int]) -> RoiMask:
    """Fill ``polygons`` (even-odd per slice, voxel centres) on a grid of ``shape_kji``.

    Polygons with fewer than 3 points are ignored (callers report them). Parts outside the grid
    are clipped. Returns the mask cropped to its bounding box.
    """
    kept = [p for p in polygons if np.asarray(p.points).ndim == 2 and len(p.points) >= 3]
    if not kept:
        return RoiMask.empty(shape_kji)
    lengths = np.array([len(p.points) for p in kept])
    return rasterise_arrays(np.array([p.k for p in kept], dtype=np.int64), np.concatenate([[0], np.cumsum(lengths)]),
                            np.concatenate([np.asarray(p.points, dtype=np.float64) for p in kept]), shape_kji)


def rasterise_arrays(polygon_k: np.ndarray, offsets: np.ndarray, points: np.ndarray,
                     shape_kji: Tuple[int, int, int]) -> RoiMask:
    """:func:`rasterise` for polygons given as arrays: polygon ``n`` lies on slice ``polygon_k[n]``
    and has the points ``points[offsets[n]:offsets[n + 1]]`` (continuous ``(i, j)``).

    Scanlines run down the columns (x = i): each edge is intersected with the columns it spans
    (half-open ``[x_min, x_max)``), each crossing toggles the voxel centres below it, and the
    exclusive-or accumulation runs along j. Accumulating along the middle axis keeps numpy's inner
    loop on contiguous memory: 2x faster than along rows on the 13 ROIs of the benchmark CT.
    """
    return fill_toggles(crossings(polygon_k, offsets, points, shape_kji), shape_kji)


@dataclass(frozen=True)
class Toggles:
    """The crossings of a set of polygons, before filling: the box (``origin`` ``(k, j, i)`` and
    ``box_shape``) and the flat indices into it of the voxels whose column parity flips. Small
    (a few bytes per crossing), so it can be handed between processes instead of the mask."""

    origin: Tuple[int, int, int]
    box_shape: Tuple[int, int, int]
    flat: np.ndarray


def crossings(polygon_k: np.ndarray, offsets: np.ndarray, points: np.ndarray,
              shape_kji: Tuple[int, int, int]) -> Optional[Toggles]:
    """The first half of :func:`rasterise_arrays`: where the polygons' edges cross the voxel
    columns (None when nothing is filled)."""
    nk, nj, ni = (int(s) for s in shape_kji)
    counts: np.ndarray = np.diff(np.asarray(offsets, dtype=np.int64)).astype(np.int64)
    valid = (counts >= 3) & (polygon_k >= 0) & (polygon_k < nk)
    if not valid.any():
        return None
    if not valid.all():
        keep_point = np.repeat(valid, counts)
        points = points[keep_point]
        polygon_k = polygon_k[valid]
        counts = counts[valid]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    following = np.arange(len(points)) + 1
    following[starts + counts - 1] = starts  # each polygon closes on its first point
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = x0[following], y0[following]
    k = np.repeat(polygon_k, counts)
    # Columns c crossed by an edge: x_lo <= c < x_hi (a vertex on a column counts for one edge only).
    c_start = np.maximum(np.ceil(np.minimum(x0, x1)), 0).astype(np.int64)
    c_stop = np.minimum(np.ceil(np.maximum(x0, x1)), ni).astype(np.int64)
    n_cols = np.maximum(c_stop - c_start, 0)
    total = int(n_cols.sum())
    if total == 0:
        return None
    edge = np.repeat(np.arange(len(k)), n_cols)
    first = np.repeat(np.cumsum(n_cols) - n_cols, n_cols)
    cols = c_start[edge] + (np.arange(total) - first)
    ex0, ey0, ex1, ey1 = x0[edge], y0[edge], x1[edge], y1[edge]
    y_cross = ey0 + (cols - ex0) * (ey1 - ey0) / (ex1 - ex0)
    # The crossing toggles every voxel centre strictly below it: rows >= floor(y) + 1.
    rows = np.clip(np.floor(y_cross).astype(np.int64) + 1, 0, nj)
    slices = k[edge]
    k0, k1 = int(slices.min()), int(slices.max()) + 1
    r0, r1 = int(rows.min()), int(rows.max()) + 1
    c0, c1 = int(cols.min()), int(cols.max()) + 1
    # The box is widened to a multiple of 8 columns (within the image) so that the accumulation
    # runs on uint64 words: the exclusive-or is bitwise, so 8 voxels per operation give the same
    # bytes (0.07 s -> 0.012 s for the 177 x 400 x 512 box of a body contour).
    width = -(-(c1 - c0) // 8) * 8
    if width <= ni:
        c0 = min(c0, ni - width)
    else:
        width = c1 - c0
    height = r1 - r0
    flat = ((slices - k0) * height + (rows - r0)) * width + (cols - c0)
    unique, hits = np.unique(flat, return_counts=True)
    return Toggles((k0, r0, c0), (k1 - k0, height, width), unique[(hits & 1).astype(bool)])


def fill_toggles(toggles: Optional[Toggles], shape_kji: Tuple[int, int, int],
                 buffer: Optional[np.ndarray] = None) -> RoiMask:
    """The second half of :func:`rasterise_arrays`: the mask from its crossings. ``buffer`` (uint8,
    zeros, at least :func:`box_bytes` long) receives the box instead of a new array."""
    if toggles is None:
        return RoiMask.empty(shape_kji)
    depth, height, width = toggles.box_shape
    n = depth * height * width
    flips = np.zeros(n, dtype=np.uint8) if buffer is None else buffer[:n]
    flips[toggles.flat] = 1
    box = flips.reshape(depth, height, width)
    words = box.view(np.uint64) if width % 8 == 0 else box
    np.bitwise_xor.accumulate(words, axis=1, out=words)
    inside = box[:, : height - 1, :].view(np.bool_)
    # The box spans the crossings, so it is tight up to an empty margin row at most; shrinking it
    # would cost three more passes over the box (0.1 s for a body contour) and gain nothing.
    return RoiMask(shape_kji, toggles.origin, inside)


def box_bytes(toggles: Optional[Toggles]) -> int:
    """Bytes :func:`fill_toggles` needs for the box of ``toggles``."""
    return 0 if toggles is None else int(np.prod(toggles.box_shape))


@dataclass(frozen=True)
class TracedLoops:
    """Boundary loops of a mask: loop ``n`` lies on slice ``k[n]`` and has the corner points
    ``points[offsets[n]:offsets[n + 1]]`` (continuous ``(i, j)`` of the full grid, half-integers)."""

    k: np.ndarray
    offsets: np.ndarray
    points: np.ndarray

    def __len__(self) -> int:
        return len(self.k)

    def loop(self, n: int) -> np.ndarray:
        return self.points[self.offsets[n]: self.offsets[n + 1]]

    def polygons(self) -> List[Polygon]:
        return [Polygon(int(self.k[n]), self.loop(n)) for n in range(len(self))]


def trace(mask: RoiMask) -> TracedLoops:
    """Closed loops along the voxel boundaries of ``mask``, per slice, holes included.

    Loops are ordered by slice, then by where they start (raster order of their first top edge).
    Each keeps the foreground on its right in image coordinates (x right, y down): outer
    boundaries run clockwise on the screen, holes counter-clockwise. Every loop is a simple
    polygon (loops may touch each other at a corner, never cross).
    """
    empty = TracedLoops(np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros((0, 2)))
    data = mask.data
    if not data.size or not data.any():
        return empty
    nk, nj, ni = data.shape
    padded = np.zeros((nk, nj + 2, ni + 2), dtype=bool)
    padded[:, 1:-1, 1:-1] = data
    # Pixel (py, px) of the padded grid spans corners [px, px + 1] x [py, py + 1]. Transitions are
    # found on the flat array (neighbours along x are 1 apart, along y one row apart): contiguous
    # 1-D comparisons are several times faster than strided 3-D ones, and the zero padding keeps
    # rows and slices from leaking into each other.
    flat = padded.ravel()
    row = ni + 2
    plane = (nj + 2) * row
    across = np.flatnonzero(flat[:-row] ^ flat[row:]) + row  # the pixel below a horizontal edge
    below_fg = flat[across]
    along = np.flatnonzero(flat[:-1] ^ flat[1:]) + 1  # the pixel right of a vertical edge
    right_fg = flat[along]
    pieces = []
    for pixels, fg, kind in ((across, below_fg, "top"), (along, right_fg, "left"),
                             (across, ~below_fg, "bottom"), (along, ~right_fg, "right")):
        qk, rest = np.divmod(pixels[fg], plane)
        qy, qx = np.divmod(rest, row)
        if kind == "top":  # top edge of the pixel below: (x, y) -> (x + 1, y), direction 0
            pieces.append((qk, qx, qy, 0))
        elif kind == "left":  # left edge of the pixel on the right: (x, y + 1) -> (x, y), direction 3
            pieces.append((qk, qx, qy + 1, 3))
        elif kind == "bottom":  # bottom edge of the pixel above: (x + 1, y) -> (x, y), direction 2
            pieces.append((qk, qx + 1, qy, 2))
        else:  # right edge of the pixel on the left: (x, y) -> (x, y + 1), direction 1
            pieces.append((qk, qx, qy, 1))
    # Top edges are numbered first and in raster order, so each loop's smallest edge is a top edge.
    k = np.concatenate([p[0] for p in pieces]).astype(np.int64)
    sx = np.concatenate([p[1] for p in pieces]).astype(np.int64)
    sy = np.concatenate([p[2] for p in pieces]).astype(np.int64)
    d = np.concatenate([np.full(len(p[0]), p[3], dtype=np.int64) for p in pieces])
    width, height = ni + 3, nj + 3
    start_id = (k * height + sy) * width + sx
    end_id = (k * height + sy + _DY[d]) * width + sx + _DX[d]
    # Link each edge to the edge leaving its end vertex; at a corner shared by two diagonal
    # foreground pixels there are two, and the right turn keeps to the same pixel.
    order = np.argsort(start_id, kind="stable")
    sorted_start = start_id[order]
    lo = np.searchsorted(sorted_start, end_id, side="left")
    hi = np.searchsorted(sorted_start, end_id, side="right")
    first = order[lo]
    second = order[np.minimum(lo + 1, len(order) - 1)]
    want = (d + 1) % 4
    nxt = np.where((hi - lo == 2) & (d[first] != want), second, first)
    rep, rank = _cycles(nxt)
    # Edges grouped by loop, each loop in travel order starting at its smallest edge index.
    seq = np.lexsort((-rank, rep))
    loop_rep = rep[seq]
    starts = np.concatenate([[0], np.nonzero(np.diff(loop_rep))[0] + 1])
    stops = np.concatenate([starts[1:], [len(seq)]])
    d_seq = d[seq]
    prev = np.empty_like(d_seq)
    prev[1:] = d_seq[:-1]
    prev[starts] = d_seq[stops - 1]  # the last edge of each loop precedes its first
    corner = d_seq != prev
    corner_idx = np.nonzero(corner)[0]
    loop_of_corner = np.searchsorted(starts, corner_idx, side="right") - 1
    counts = np.bincount(loop_of_corner, minlength=len(starts))
    edges = seq[corner_idx]
    points = np.column_stack([sx[edges] - 1.5 + mask.offset[2], sy[edges] - 1.5 + mask.offset[1]])
    # Loops come out ordered by their smallest edge index: top edges are numbered first, in
    # raster order (k, y, x), so loops are sorted by slice and start at their first top edge,
    # whose start is always a corner (an edge further left on the same row would come first).
    loop_k = k[seq[starts]] + mask.offset[0]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return _split_pinches(loop_k, offsets, points, start_id[edges])


def _split_pinches(loop_k: np.ndarray, offsets: np.ndarray, points: np.ndarray,
                   vertex: np.ndarray) -> TracedLoops:
    """Split loops that pass a corner twice into simple loops.

    Where two background voxels touch at a corner inside the foreground (or, with the opposite
    turn, two foreground voxels), one boundary loop passes that corner twice, touching itself.
    Cutting it there gives two simple polygons with the same edges, so the even-odd fill is
    unchanged and readers that expect simple polygons (surface builders) get them. Such corners
    are rare, so the loops that have one are split in Python.
    """
    n_loops = len(loop_k)
    loop_of = np.repeat(np.arange(n_loops), np.diff(offsets))
    key = loop_of.astype(np.int64) * (int(vertex.max(initial=0)) + 1) + vertex
    unique, counts = np.unique(key, return_counts=True)
    pinched = set((unique[counts > 1] // (int(vertex.max(initial=0)) + 1)).tolist())
    if not pinched:
        return TracedLoops(k=loop_k, offsets=offsets, points=points)
    new_k: List[int] = []
    pieces: List[np.ndarray] = []
    for n in range(n_loops):
        a, b = int(offsets[n]), int(offsets[n + 1])
        if n not in pinched:
            new_k.append(int(loop_k[n]))
            pieces.append(np.arange(a, b))
            continue
        for part in _split_sequence(list(range(a, b)), vertex):
            new_k.append(int(loop_k[n]))
            pieces.append(np.asarray(part, dtype=np.int64))
    index = np.concatenate(pieces)
    sizes = np.array([len(piece) for piece in pieces])
    return TracedLoops(k=np.asarray(new_k, dtype=np.int64), offsets=np.concatenate([[0], np.cumsum(sizes)]),
                       points=points[index])


def _split_sequence(sequence: List[int], vertex: np.ndarray) -> List[List[int]]:
    seen: dict = {}
    for position, corner in enumerate(sequence):
        v = int(vertex[corner])
        if v in seen:
            first = seen[v]
            inner = sequence[first:position]
            outer = sequence[:first] + sequence[position:]
            return _split_sequence(inner, vertex) + _split_sequence(outer, vertex)
        seen[v] = position
    return [sequence]


def _cycles(nxt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """For a permutation ``nxt``: the smallest index of each element's cycle and the element's
    distance (in steps) to the end of its cycle when the cycle starts at that smallest index."""
    n = len(nxt)
    rep = np.arange(n)
    jump = nxt.copy()
    while True:  # pointer jumping: after t rounds rep covers 2**t elements ahead
        new_rep = np.minimum(rep, rep[jump])
        jump = jump[jump]
        if np.array_equal(new_rep, rep):
            break
        rep = new_rep
    # List ranking with each cycle cut before its representative.
    idx = np.arange(n)
    terminal = nxt == rep
    succ = np.where(terminal, idx, nxt)
    dist = np.where(terminal, 0, 1).astype(np.int64)
    while True:
        dist = dist + dist[succ]
        new_succ = succ[succ]
        if np.array_equal(new_succ, succ):
            break
        succ = new_succ
    return rep, dist
