"""Analytic phantoms defined in patient space and sampled at voxel centres (R-5.3, R-7.2).

A :class:`Phantom` is an ordered list of layers ``(shape, tissue)``; later layers paint over
earlier ones. A :class:`PhantomSampler` evaluates the phantom on one slice of an
:class:`~RTSSBridgeLib.geometry.ImageGeometry` at a time, so any grid (axial, oblique,
feet-first, anisotropic) works and memory stays at one slice. Every voxel gets exactly one
tissue index, so intensities and ground-truth masks derived from the same tissue map agree
exactly on the sampled grid.

Shapes are evaluated only inside the voxel window their bounding box projects to, which keeps
a 512 x 512 slice with a dozen structures at a few milliseconds.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..geometry import ImageGeometry

Vector3 = Tuple[float, float, float]


def vec3(values: Any) -> Vector3:
    """Three floats from any 3-sequence."""
    a = [float(v) for v in values]
    if len(a) != 3:
        raise ValueError(f"expected 3 numbers, got {len(a)}")
    return (a[0], a[1], a[2])


def mat3(matrix: Any) -> Tuple[Vector3, Vector3, Vector3]:
    """A 3x3 matrix as a tuple of row tuples."""
    rows = [vec3(r) for r in np.asarray(matrix, dtype=np.float64).tolist()]
    return (rows[0], rows[1], rows[2])


def rotation_matrix(axis: str, degrees: float) -> np.ndarray:
    """3x3 right-handed rotation by ``degrees`` about the patient axis ``axis`` (``x``, ``y`` or ``z``)."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    if axis == "y":
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    if axis == "z":
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")


def rigid_matrix(rotation: np.ndarray, translation: Sequence[float]) -> np.ndarray:
    """4x4 homogeneous matrix ``[R t; 0 1]``."""
    m = np.eye(4)
    m[:3, :3] = rotation
    m[:3, 3] = np.asarray(translation, dtype=np.float64)
    return m


def apply_matrix(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 homogeneous matrix to points ``(..., 3)``."""
    p = np.asarray(points, dtype=np.float64)
    return p @ matrix[:3, :3].T + matrix[:3, 3]


class Shape(abc.ABC):
    """A solid region of phantom space (millimetres)."""

    @abc.abstractmethod
    def bounds(self) -> np.ndarray:
        """``(2, 3)`` array: minimum and maximum corner of an axis-aligned box holding the shape."""

    @abc.abstractmethod
    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Boolean array, True where the point ``(x, y, z)`` lies inside (arrays broadcast)."""


@dataclass(frozen=True)
class Ellipsoid(Shape):
    """Ellipsoid with ``semi_axes`` along the columns of ``rotation`` (identity: along x, y, z)."""

    centre: Vector3
    semi_axes: Vector3
    rotation: Optional[Tuple[Vector3, Vector3, Vector3]] = None

    def _r(self) -> np.ndarray:
        return np.eye(3) if self.rotation is None else np.asarray(self.rotation, dtype=np.float64)

    def bounds(self) -> np.ndarray:
        r = self._r()
        half = np.sqrt(np.sum((r * np.asarray(self.semi_axes)) ** 2, axis=1))
        c = np.asarray(self.centre)
        return np.stack([c - half, c + half])

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        dx, dy, dz = x - self.centre[0], y - self.centre[1], z - self.centre[2]
        a, b, c = self.semi_axes
        if self.rotation is None:
            return (dx / a) ** 2 + (dy / b) ** 2 + (dz / c) ** 2 <= 1.0
        r = self._r()
        u = dx * r[0, 0] + dy * r[1, 0] + dz * r[2, 0]
        v = dx * r[0, 1] + dy * r[1, 1] + dz * r[2, 1]
        w = dx * r[0, 2] + dy * r[1, 2] + dz * r[2, 2]
        return (u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2 <= 1.0


def sphere(centre: Sequence[float], radius: float) -> Ellipsoid:
    """A sphere as an :class:`Ellipsoid`."""
    return Ellipsoid((float(centre[0]), float(centre[1]), float(centre[2])), (radius, radius, radius))


@dataclass(frozen=True)
class EllipticCylinder(Shape):
    """Cylinder along z with elliptic cross-section, between ``z_min`` and ``z_max``."""

    centre_xy: Tuple[float, float]
    semi_xy: Tuple[float, float]
    z_min: float
    z_max: float

    def bounds(self) -> np.ndarray:
        (cx, cy), (a, b) = self.centre_xy, self.semi_xy
        return np.array([[cx - a, cy - b, self.z_min], [cx + a, cy + b, self.z_max]])

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        (cx, cy), (a, b) = self.centre_xy, self.semi_xy
        return (((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0) & (z >= self.z_min) & (z <= self.z_max)


@dataclass(frozen=True)
class Box(Shape):
    """Axis-aligned box."""

    minimum: Vector3
    maximum: Vector3

    def bounds(self) -> np.ndarray:
        return np.array([self.minimum, self.maximum], dtype=np.float64)

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        lo, hi = self.minimum, self.maximum
        return (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2])


@dataclass(frozen=True)
class Difference(Shape):
    """``outer`` minus ``inner`` (a shell when ``inner`` sits inside ``outer``)."""

    outer: Shape
    inner: Shape

    def bounds(self) -> np.ndarray:
        return self.outer.bounds()

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self.outer.contains(x, y, z) & ~self.inner.contains(x, y, z)


@dataclass(frozen=True)
class Intersection(Shape):
    """Points inside both shapes."""

    first: Shape
    second: Shape

    def bounds(self) -> np.ndarray:
        a, b = self.first.bounds(), self.second.bounds()
        return np.stack([np.maximum(a[0], b[0]), np.minimum(a[1], b[1])])

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self.first.contains(x, y, z) & self.second.contains(x, y, z)


@dataclass(frozen=True)
class Banded(Shape):
    """``shape`` restricted to periodic bands across z (ribs, vertebral discs).

    A point is kept where ``(z + tilt * y - phase) mod period < thickness``; a positive ``tilt``
    makes a band run down towards anterior (smaller y), as ribs do.
    """

    shape: Shape
    period_mm: float
    thickness_mm: float
    phase_mm: float = 0.0
    tilt: float = 0.0

    def bounds(self) -> np.ndarray:
        return self.shape.bounds()

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        band = np.mod(z + self.tilt * y - self.phase_mm, self.period_mm) < self.thickness_mm
        return self.shape.contains(x, y, z) & band


@dataclass
class Phantom:
    """Ordered tissue layers; index 0 of :attr:`tissues` is the background."""

    tissues: List[str] = field(default_factory=lambda: ["background"])
    layers: List[Tuple[Shape, int]] = field(default_factory=list)

    def tissue(self, name: str) -> int:
        """Index of tissue ``name``, registering it when new (at most 255 tissues)."""
        if name not in self.tissues:
            if len(self.tissues) >= 255:
                raise ValueError("a phantom holds at most 255 tissues")
            self.tissues.append(name)
        return self.tissues.index(name)

    def add(self, tissue: str, shape: Shape) -> int:
        """Paint ``shape`` with ``tissue`` over everything painted before; returns the tissue index."""
        idx = self.tissue(tissue)
        self.layers.append((shape, idx))
        return idx

    def lookup(self, values: Dict[str, float], default: float = 0.0) -> np.ndarray:
        """Per-tissue value table (``lut[tissue_index]``) from a name -> value mapping."""
        lut = np.full(len(self.tissues), default, dtype=np.float64)
        for name, value in values.items():
            if name in self.tissues:
                lut[self.tissues.index(name)] = value
        return lut

    def indices(self, prefix: str) -> List[int]:
        """Indices of the tissues whose name starts with ``prefix``."""
        return [i for i, name in enumerate(self.tissues) if name.startswith(prefix)]


class PhantomSampler:
    """Evaluate a :class:`Phantom` at the voxel centres of one grid, slice by slice.

    Parameters
    ----------
    phantom:
        The phantom; its coordinates are phantom millimetres.
    geometry:
        The voxel grid (LPS).
    lps_from_phantom:
        Optional 4x4 rigid matrix placing the phantom in LPS (the patient's pose for this
        series); identity when omitted, i.e. phantom coordinates are LPS.
    """

    def __init__(self, phantom: Phantom, geometry: ImageGeometry,
                 lps_from_phantom: Optional[np.ndarray] = None) -> None:
        self.phantom = phantom
        self.geometry = geometry
        pose = np.eye(4) if lps_from_phantom is None else np.asarray(lps_from_phantom, dtype=np.float64)
        self.lps_from_phantom = pose
        # voxel index -> phantom coordinates
        self._affine = np.linalg.inv(pose) @ geometry.ijk_to_lps_matrix()
        ni, nj, nk = geometry.shape
        self._windows: List[Optional[Tuple[int, int, int, int, int, int]]] = []
        for shape, _ in phantom.layers:
            b = shape.bounds()
            corners = np.array([[b[a][0], b[c][1], b[d][2]] for a in (0, 1) for c in (0, 1) for d in (0, 1)])
            ijk = geometry.lps_to_ijk(apply_matrix(pose, corners))
            lo = np.floor(ijk.min(axis=0)).astype(int) - 1
            hi = np.ceil(ijk.max(axis=0)).astype(int) + 2
            i0, j0, k0 = (max(0, int(v)) for v in lo)
            i1, j1, k1 = min(ni, int(hi[0])), min(nj, int(hi[1])), min(nk, int(hi[2]))
            self._windows.append((i0, i1, j0, j1, k0, k1) if i0 < i1 and j0 < j1 and k0 < k1 else None)

    def coordinates(self, k: int, i0: int = 0, i1: Optional[int] = None, j0: int = 0,
                    j1: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Phantom coordinates (x, y, z arrays ``[j, i]``) of voxel centres of slice ``k`` in a window."""
        ni, nj, _ = self.geometry.shape
        ii = np.arange(i0, ni if i1 is None else i1, dtype=np.float64)[None, :]
        jj = np.arange(j0, nj if j1 is None else j1, dtype=np.float64)[:, None]
        a = self._affine
        out = []
        for r in range(3):
            out.append(a[r, 0] * ii + a[r, 1] * jj + (a[r, 2] * float(k) + a[r, 3]))
        return out[0], out[1], out[2]

    def tissue_slice(self, k: int) -> np.ndarray:
        """Tissue index of every voxel of slice ``k``, ``uint8`` array ``[j, i]``."""
        ni, nj, _ = self.geometry.shape
        out = np.zeros((nj, ni), dtype=np.uint8)
        for (shape, idx), win in zip(self.phantom.layers, self._windows):
            if win is None or not (win[4] <= k < win[5]):
                continue
            i0, i1, j0, j1 = win[:4]
            x, y, z = self.coordinates(k, i0, i1, j0, j1)
            inside = shape.contains(x, y, z)
            if inside.any():
                out[j0:j1, i0:i1][inside] = idx
        return out
