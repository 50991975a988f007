"""Image registration on SimpleITK (R-8.4.1.1, R-8.4.1.2, R-7.4, R-6.5).

Model: rigid (``Euler3DTransform``), affine (``AffineTransform``) or ``bspline`` (rigid, then a
B-spline free-form deformation on top, for tissue that deforms). Metric: Mattes mutual information
(works across MR contrasts and CT/PET). Initialisation: the image centres (``geometry``) or the
intensity centres of mass (``moments``). Multi-resolution: the pyramid (block-averaged, then
Gaussian-smoothed in mm) is built once; at every level a *stochastic* gradient descent draws 3 000
new sample positions every 5 iterations (one short, warm-started ITK run per draw), with steps
(scales from the physical shift) shrinking geometrically over the level, and the finest level
returns the mean of its last positions - the scheme of elastix's stochastic optimiser, built from
SimpleITK's registration method, which keeps one sample set per run.

Determinism: every draw's seed is derived from the fixed ``seed`` and the number of threads is
fixed; positions are rounded to 1e-6 after every draw so that the last-bit differences of
multithreaded sums (1e-12) cannot grow over the chained runs: the same inputs give the same transform.

Measured (benchmarks/bench_registration.py, mr-brain-mets T2W -> T1W+C, fresh process per run,
interleaved with itk-elastix's default maps, 2 threads each; numbers and the table of every
setting tried in benchmarks/README.md): see ``Speed and accuracy`` there. In short: the previous
scheme (one draw of 40 000 samples per level, 1 mm steps, convergence window) took 1.74x / 2.84x
elastix's time for rigid / affine at 0.87 mm seed-averaged TRE (elastix 0.59 mm); this one is
0.47x / 0.58x elastix's time (2026-11-22 07:51 UTC run, load ~1.1) at 0.29 mm TRE on the default
seed and 0.20 mm over five seeds (elastix rigid 0.59 / 0.59 mm, affine 1.31 / 1.41 mm).

Direction (as ITK): the transform maps a point of the *fixed* image (LPS mm) to the same
anatomical point in the *moving* image: ``p_moving = matrix_lps @ p_fixed``. Resampling the
moving image onto the fixed grid uses it directly. ``matrix_ras`` is the same map written in RAS
(``F @ matrix_lps @ F`` with ``F = diag(-1, -1, 1, 1)``); a Slicer transform node that displays the
moving volume in the fixed frame holds it as its *transform from parent* (see
:mod:`MultiModalAnnotationLib.mrml.fusion`).
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

import numpy as np

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.fileio import atomic_path
from RTSSBridgeLib.geometry import lps_map_to_ras

from .images import FusionImage, to_sitk

if TYPE_CHECKING:
    import SimpleITK as sitk

PathLike = Union[str, "os.PathLike[str]"]
MODES = ("rigid", "affine", "bspline")
INITIALISATIONS = ("geometry", "moments", "identity")
TRANSFORM_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt")
#: The default sampling seed (any fixed number; recorded with every result).
DEFAULT_SEED = 20260812


@dataclass(frozen=True)
class RegistrationParameters:
    """Every setting of one registration (recorded in the result, R-6.5).

    ``shrink_factors`` / ``smoothing_sigmas_mm`` give the pyramid, coarse to fine; ``iterations``
    is one count per level (an int means the same count at every level). The optimiser draws
    ``samples`` new fixed-image positions every ``draw_iterations`` iterations (seeds derived from
    ``seed``); its steps shrink geometrically over each level from ``max_step_mm`` x the level's
    shrink factor to ``step_decay`` times that. The finest level samples the fixed image binned by
    ``finest_fixed_bin`` (the moving image stays at full resolution) and returns the mean of the
    positions after its last ``average_draws`` draws. ``metric_samples`` seeded positions of the
    fixed image binned by ``finest_fixed_bin`` give ``metric_before`` / ``metric_after`` and decide
    whether the affine stage (``affine_iterations`` at the middle level) is kept. With
    ``crop_fraction`` > 0 the fixed image is first cropped to :func:`content_box` (voxels above its
    minimum + ``crop_fraction`` of the range up to its 99th percentile, ``crop_margin`` voxels around),
    so that no samples fall on the air around the body.
    """

    mode: str = "rigid"
    initialisation: str = "geometry"
    histogram_bins: int = 50
    samples: int = 3000
    draw_iterations: int = 5
    seed: int = DEFAULT_SEED
    shrink_factors: Tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_mm: Tuple[float, ...] = (2.0, 1.0, 1.0)
    iterations: Union[int, Tuple[int, ...]] = (300, 200, 60)
    max_step_mm: float = 0.5
    step_decay: float = 0.2
    average_draws: int = 6
    finest_fixed_bin: int = 2
    crop_fraction: float = 0.1
    crop_margin: int = 4
    affine_iterations: int = 60
    metric_samples: int = 40000
    bspline_mesh: Tuple[int, int, int] = (6, 6, 6)
    bspline_iterations: int = 60
    bspline_samples: int = 40000
    threads: int = 2

    def __post_init__(self) -> None:
        levels = len(self.shrink_factors)
        if isinstance(self.iterations, (int, np.integer)):
            object.__setattr__(self, "iterations", tuple(int(self.iterations) for _ in range(levels)))
        else:
            object.__setattr__(self, "iterations", tuple(int(v) for v in self.iterations))
        iterations: Tuple[int, ...] = self.iterations  # type: ignore[assignment]
        checks = [
            (self.mode in MODES, "mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}"),
            (self.initialisation in INITIALISATIONS, "initialisation",
             f"must be one of {', '.join(INITIALISATIONS)}, got {self.initialisation!r}"),
            (8 <= self.histogram_bins <= 256, "histogram_bins", f"must be 8..256, got {self.histogram_bins}"),
            (500 <= self.samples <= 10_000_000, "samples", f"must be 500..10000000, got {self.samples}"),
            (1 <= self.draw_iterations <= 1000, "draw_iterations", f"must be 1..1000, got {self.draw_iterations}"),
            (levels >= 1 and levels == len(self.smoothing_sigmas_mm),
             "shrink_factors", "needs one smoothing sigma per level"),
            (all(int(f) >= 1 for f in self.shrink_factors), "shrink_factors", "must be >= 1"),
            (all(s >= 0 for s in self.smoothing_sigmas_mm), "smoothing_sigmas_mm", "must be >= 0"),
            (len(iterations) == levels and all(1 <= v <= 10000 for v in iterations), "iterations",
             f"must be 1..10000 per level ({levels} level(s)), got {list(iterations)}"),
            (0.0 < self.max_step_mm <= 50.0, "max_step_mm", f"must be in (0, 50], got {self.max_step_mm}"),
            (0.0 < self.step_decay <= 1.0, "step_decay", f"must be in (0, 1], got {self.step_decay}"),
            (0 <= self.average_draws <= 1000, "average_draws", f"must be 0..1000, got {self.average_draws}"),
            (1 <= self.finest_fixed_bin <= 8, "finest_fixed_bin", f"must be 1..8, got {self.finest_fixed_bin}"),
            (0.0 <= self.crop_fraction < 1.0, "crop_fraction", f"must be in [0, 1), got {self.crop_fraction}"),
            (0 <= self.crop_margin <= 1000, "crop_margin", f"must be 0..1000, got {self.crop_margin}"),
            (1 <= self.affine_iterations <= 10000, "affine_iterations", "must be 1..10000"),
            (1000 <= self.metric_samples <= 10_000_000, "metric_samples", "must be 1000..10000000"),
            (1000 <= self.bspline_samples <= 10_000_000, "bspline_samples", "must be 1000..10000000"),
            (all(int(m) >= 1 for m in self.bspline_mesh) and len(self.bspline_mesh) == 3, "bspline_mesh",
             "three mesh sizes >= 1"),
            (1 <= self.threads <= 256, "threads", f"must be 1..256, got {self.threads}"),
            (0 <= self.seed < 2**31, "seed", f"must be 0..2**31-1, got {self.seed}"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise InputError(rule, field=name)

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        for key in ("shrink_factors", "smoothing_sigmas_mm", "bspline_mesh", "iterations"):
            data[key] = list(data[key])
        data["metric_evaluation"] = (f"Mattes MI at {self.metric_samples} seeded positions of the fixed image binned "
                                     f"by {self.finest_fixed_bin}"
                                     f"{' and cropped to its content box' if self.crop_fraction > 0 else ''} "
                                     "(sampled), unsmoothed moving image")
        return data

    def replace(self, **changes: Any) -> RegistrationParameters:
        values = asdict(self)
        if "shrink_factors" in changes and "iterations" not in changes:
            values["iterations"] = values["iterations"][-1]  # one count per level of the new pyramid
        values.update(changes)
        return RegistrationParameters(**values)


def library_versions() -> Dict[str, str]:
    """Versions of what computed the registration (R-6.5)."""
    import SimpleITK as sitk

    from .. import __version__

    itk = sitk.Version()
    return {"MultiModalAnnotation": __version__, "SimpleITK": itk.VersionString(), "ITK": itk.ITKVersionString(),
            "numpy": np.__version__, "python": platform.python_version()}


@dataclass
class RegistrationResult:
    """A finished registration. ``transform`` maps fixed LPS points to moving LPS points."""

    transform: Any  # SimpleITK transform (Euler3D, Affine, or Composite for bspline)
    parameters: RegistrationParameters
    metric_before: float
    metric_after: float
    stop_condition: str
    iterations: int
    elapsed_s: float
    versions: Dict[str, str]
    fixed: Dict[str, Any] = field(default_factory=dict)
    moving: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return self.parameters.mode

    @property
    def deformable(self) -> bool:
        return self.parameters.mode == "bspline"

    @property
    def matrix_lps(self) -> np.ndarray:
        """4x4 fixed -> moving in LPS (the linear part for ``bspline``)."""
        return transform_matrix_lps(self.transform)

    @property
    def matrix_ras(self) -> np.ndarray:
        return lps_map_to_ras(self.matrix_lps)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON of ``mmanno register`` (``registration-result`` schema), without file fields."""
        m = self.matrix_lps
        return {
            "mode": self.mode, "deformable": self.deformable,
            "direction": "fixed_to_moving",
            "matrix_lps": matrix_json(m), "matrix_ras": matrix_json(lps_map_to_ras(m)),
            "rotation_deg": round(rotation_angle_deg(m[:3, :3]), 6) if self.mode == "rigid" else None,
            "translation_mm": [round(float(v), 6) for v in m[:3, 3]],
            "metric": "mattes_mutual_information",
            "metric_before": float(self.metric_before), "metric_after": float(self.metric_after),
            "stop_condition": self.stop_condition, "iterations": int(self.iterations),
            "elapsed_s": round(self.elapsed_s, 3),
            "parameters": self.parameters.to_dict(), "versions": dict(self.versions),
            "fixed": dict(self.fixed), "moving": dict(self.moving), "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- matrices
def matrix_json(m: np.ndarray) -> List[List[float]]:
    return [[float(v) for v in row] for row in np.asarray(m, dtype=np.float64)]




def rotation_angle_deg(rotation: Any) -> float:
    """Angle of the rotation closest to a 3x3 matrix (degrees, 0..180)."""
    r = np.asarray(rotation, dtype=np.float64)
    u, _, vt = np.linalg.svd(r)
    q = u @ vt
    cos = (float(np.trace(q)) - 1.0) / 2.0
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def _linear_parts(transform: Any) -> List[Any]:
    import SimpleITK as sitk

    if isinstance(transform, sitk.CompositeTransform):
        parts = [transform.GetNthTransform(n) for n in range(transform.GetNumberOfTransforms())]
    else:
        parts = [transform]
    return [p.Downcast() if hasattr(p, "Downcast") else p for p in parts]


def transform_matrix_lps(transform: Any) -> np.ndarray:
    """4x4 homogeneous matrix of the linear part(s) of an ITK transform (fixed -> moving, LPS).

    A composite applies its *last* added transform first (ITK's order); deformable parts are skipped.
    """
    import SimpleITK as sitk

    total = np.eye(4)
    for part in _linear_parts(transform):
        if isinstance(part, (sitk.BSplineTransform, sitk.DisplacementFieldTransform)):
            continue
        dim = part.GetDimension()
        if dim != 3:
            raise InputError(f"transform has dimension {dim}; rule: 3-D", field="transform")
        if not hasattr(part, "GetMatrix"):
            if isinstance(part, sitk.TranslationTransform):
                m = np.eye(4)
                m[:3, 3] = part.GetOffset()
            elif part.GetName() == "IdentityTransform":
                m = np.eye(4)
            else:
                raise InputError(f"{part.GetName()} has no matrix", field="transform")
        else:
            a = np.asarray(part.GetMatrix(), dtype=np.float64).reshape(3, 3)
            c = np.asarray(part.GetCenter(), dtype=np.float64)
            t = np.asarray(part.GetTranslation(), dtype=np.float64)
            m = np.eye(4)
            m[:3, :3] = a
            m[:3, 3] = t + c - a @ c
        total = total @ m  # composite: T = T_first_added o ... : p -> T1(T2(p)) = M1 @ M2 @ p
    return total


def matrix_to_affine_transform(matrix_lps: Any) -> Any:
    """A SimpleITK ``AffineTransform`` (centre 0) for a 4x4 fixed -> moving LPS matrix."""
    import SimpleITK as sitk

    m = np.asarray(matrix_lps, dtype=np.float64)
    t = sitk.AffineTransform(3)
    t.SetMatrix(tuple(float(v) for v in m[:3, :3].ravel()))
    t.SetTranslation(tuple(float(v) for v in m[:3, 3]))
    return t


def map_points(transform: Any, points_lps: Any) -> np.ndarray:
    """Points (N, 3) of the fixed space mapped by ``transform`` (to the moving space), LPS mm."""
    p = np.asarray(points_lps, dtype=np.float64).reshape(-1, 3)
    return np.array([transform.TransformPoint(tuple(float(v) for v in q)) for q in p], dtype=np.float64)


# --------------------------------------------------------------------------- files
def write_transform(transform: Any, path: PathLike) -> Path:
    """Write an ITK transform file (``.h5`` HDF5 or ``.tfm``/``.txt`` text) atomically."""
    import SimpleITK as sitk

    target = Path(path)
    if not target.name.lower().endswith(TRANSFORM_SUFFIXES):
        raise InputError(f"unknown transform file type; rule: one of {', '.join(TRANSFORM_SUFFIXES)}",
                         file=str(target), field="--out")
    with atomic_path(target) as tmp:
        tmp.unlink()  # the HDF5 writer wants to create the file itself
        sitk.WriteTransform(transform, str(tmp))
    return target


def read_transform(path: PathLike) -> Any:
    """Read an ITK transform file; a missing or unreadable file is one :class:`InputError` line."""
    import SimpleITK as sitk

    text = os.fspath(path)
    if not os.path.isfile(text):
        raise InputError("no such transform file", file=text)
    try:
        transform = sitk.ReadTransform(text)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InputError(f"not a readable ITK transform file ({first[:160]})", file=text) from exc
    return transform.Downcast() if hasattr(transform, "Downcast") else transform


# --------------------------------------------------------------------------- registration
def _prepare(image: FusionImage) -> sitk.Image:
    return to_sitk(image.voxels, image.geometry)


def content_box(voxels: np.ndarray, fraction: float = 0.1, margin: int = 4) -> Tuple[Tuple[int, int, int],
                                                                                     Tuple[int, int, int]]:
    """The box (start, size; ITK order i, j, k) around the voxels above ``min + fraction * (p99 - min)``
    with ``margin`` voxels around it, clipped to the array: the body or head without the air around
    it on MR (dark background), CT (air at -1000 HU; with -2000 HU padding outside the reconstruction
    circle only the padding is cut, as air then lies above the threshold) and PET (zero background).
    The whole array when nothing lies above the threshold. The 99th percentile of every second
    voxel along each axis (0.01 s on mr-brain-mets instead of 0.12 s for all voxels).

    Why: mr-brain-mets T2W -> T1W+C, rigid, 5 sampling seeds: TRE 0.29 0.16 0.21 0.20 0.15 mm (mean
    0.20) cropped at 0.1 with a 4-voxel margin, vs 0.29 0.29 0.28 0.28 0.27 (0.28) uncropped, same time.
    """
    a = np.asarray(voxels)
    lo = float(a.min())
    high = float(np.percentile(a[::2, ::2, ::2], 99))
    shape = np.asarray(a.shape)
    full = (tuple(int(v) for v in [0, 0, 0]), tuple(int(v) for v in shape[::-1]))
    if not high > lo:
        return full  # type: ignore[return-value]
    inside = a > lo + fraction * (high - lo)
    axes = []
    for axis in range(3):
        other = tuple(x for x in range(3) if x != axis)
        hit = np.flatnonzero(inside.any(axis=other))
        if hit.size == 0:
            return full  # type: ignore[return-value]
        axes.append((max(0, int(hit[0]) - margin), min(int(shape[axis]), int(hit[-1]) + margin + 1)))
    start = tuple(axes[axis][0] for axis in (2, 1, 0))
    size = tuple(axes[axis][1] - axes[axis][0] for axis in (2, 1, 0))
    return start, size  # type: ignore[return-value]


def _crop(image: FusionImage, f_img: sitk.Image, p: RegistrationParameters) -> sitk.Image:
    import SimpleITK as sitk

    if p.crop_fraction <= 0:
        return f_img
    start, size = content_box(image.voxels, p.crop_fraction, p.crop_margin)
    size = tuple(max(s, min(4, full)) for s, full in zip(size, f_img.GetSize()))
    start = tuple(min(st, full - s) for st, s, full in zip(start, size, f_img.GetSize()))
    if tuple(size) == tuple(f_img.GetSize()):
        return f_img
    return sitk.RegionOfInterest(f_img, [int(v) for v in size], [int(v) for v in start])


def _bin(image: sitk.Image, factor: int, base_mm: float, max_voxels: Optional[int] = None) -> sitk.Image:
    """``image`` averaged over blocks of about ``factor * base_mm`` (per axis: an axis whose voxels
    are already that coarse is kept; at least 4 voxels remain along every axis). With
    ``max_voxels`` the blocks grow until the result has at most that many voxels."""
    import SimpleITK as sitk

    while True:
        factors = []
        for size, spacing in zip(image.GetSize(), image.GetSpacing()):
            f = max(1, round(factor * base_mm / spacing))
            factors.append(max(1, min(f, size // 4)))
        sizes = [size // f for size, f in zip(image.GetSize(), factors)]
        if max_voxels is None or int(np.prod(sizes)) <= max_voxels or max(sizes) <= 4:
            break
        factor += 1
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


#: Largest fixed grid of a pyramid level (voxels). ITK's per-run set-up scales with the fixed grid
#: (mr-brain-mets: 16 ms per draw at 1.1 M voxels, 29 ms with the 2.6 M-voxel moving image; a
#: 512x512x100 CT binned by 2 in-plane, 6.5 M voxels, took 13 s per registration); the samples
#: are placed within the voxels and the moving image is still interpolated at its own resolution.
FIXED_VOXEL_BUDGET = 2_000_000


def _smooth(image: sitk.Image, sigma_mm: float) -> sitk.Image:
    import SimpleITK as sitk

    return sitk.SmoothingRecursiveGaussian(image, float(sigma_mm)) if sigma_mm > 0 else image


def _pyramid(p: RegistrationParameters, f_img: sitk.Image, m_img: sitk.Image,
             binned_fixed: sitk.Image) -> List[Tuple[int, sitk.Image, sitk.Image]]:
    """(shrink factor, fixed, moving) per level, built once on the binned images.

    Measured on mr-brain-mets (2 cores): letting ITK's registration method build each level costs
    ~0.7 s per finer level (it smooths the full-resolution fixed image and computes a moving
    gradient image every time); binning first (BinShrink averages, an anti-aliasing step of its
    own) and smoothing the small image costs 0.04 s for the shrink-4 level. At the finest level the
    fixed image is binned by ``finest_fixed_bin`` (2): 0.9 s vs 3.4 s per registration with a
    full-resolution fixed image at the same seed-averaged TRE (0.66 vs 0.73 mm, 20 draws) - the
    fixed grid only places the samples; the moving image is interpolated at full resolution."""
    base = min(f_img.GetSpacing())
    levels = []
    n = len(p.shrink_factors)
    for k, (factor, sigma) in enumerate(zip(p.shrink_factors, p.smoothing_sigmas_mm)):
        f = int(factor)
        if k == n - 1 and f <= p.finest_fixed_bin:
            fixed = _smooth(binned_fixed, sigma)
        elif f >= p.finest_fixed_bin:
            fixed = _smooth(_bin(binned_fixed, f, base, FIXED_VOXEL_BUDGET), sigma)  # bins of bins
        else:
            fixed = _smooth(_bin(f_img, f, base, FIXED_VOXEL_BUDGET), sigma)
        levels.append((f, fixed, _smooth(_bin(m_img, f, base), sigma)))
    return levels


def _metric(p: RegistrationParameters, fixed: sitk.Image, samples: int, seed: int) -> sitk.ImageRegistrationMethod:
    """Mattes MI over ``samples`` random positions of ``fixed`` (a fixed seed), linear interpolation."""
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=p.histogram_bins)
    voxels = float(np.prod(fixed.GetSize()))
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(float(min(1.0, samples / max(1.0, voxels))), _seed(seed))
    reg.SetInterpolator(sitk.sitkLinear)
    # Mattes MI needs only the moving image's gradient, and only at the samples: ITK computes it
    # there by central differences when no gradient image is built. Building the gradient image
    # cost 0.8 s per call at full resolution (mr-brain-mets), which a scheme of short calls cannot pay.
    reg.SetMetricUseFixedImageGradientFilter(False)
    reg.SetMetricUseMovingImageGradientFilter(False)
    reg.SetShrinkFactorsPerLevel([1])
    reg.SetSmoothingSigmasPerLevel([0.0])
    reg.SetNumberOfThreads(p.threads)
    return reg


def _seed(value: int) -> int:
    """A sampling seed ITK accepts as fixed (0 means "wall clock" in SimpleITK)."""
    return 1 + int(value) % (2**31 - 2)


def evaluate_metric(params: RegistrationParameters, fixed: sitk.Image, moving: sitk.Image, transform: Any) -> float:
    """Mattes MI (ITK sign: lower is better) of ``moving`` through ``transform``, sampled: at
    ``params.metric_samples`` seeded positions of ``fixed`` (pass the fixed image binned by
    ``finest_fixed_bin``, as :func:`register` does). Measured on mr-brain-mets: 0.1 s, where the
    same 40 000 samples on the full-resolution fixed grid cost 0.65 s (ITK's per-call setup scales
    with the fixed grid)."""
    reg = _metric(params, fixed, params.metric_samples, params.seed)
    reg.SetInitialTransform(transform, inPlace=False)
    return float(reg.MetricEvaluate(fixed, moving))


def _stochastic_level(p: RegistrationParameters, fixed: sitk.Image, moving: sitk.Image, transform: Any,
                      iterations: int, first_step_mm: float, seed: int, average: int) -> Tuple[str, int]:
    """Stochastic gradient descent at one pyramid level: ``samples`` new positions every
    ``draw_iterations`` iterations (one short ITK run per draw, warm-started), the maximum step
    shrinking geometrically from ``first_step_mm`` to ``step_decay`` times that; with ``average``,
    the mean of the positions after the last ``average`` draws.

    Why (mr-brain-mets T2W -> T1W+C, rigid, TRE over 5 sampling seeds; benchmarks/README.md):
    one draw of 40 000 samples per level with 1 mm steps stopped wherever the 20-iteration
    convergence window caught it (0.87 mm seed-averaged; a through-plane tilt of the 3.5 mm-slice
    T2W image barely changes MI, so descent drifts along that valley); regular-step, line-search,
    L-BFGS, Powell and simplex optimisers on one draw ended at 0.5-1.1 mm. New samples every 5
    iterations with decaying steps, as elastix does every iteration, reached 0.23-0.28 mm in 200
    iterations per level. The positions are rounded to 1e-6 after every draw: ITK's multithreaded
    sums differ in the last bits between runs (1e-12) and hundreds of chained short runs would
    otherwise amplify that; rounded, the same seed gives the same matrix."""
    draws = max(1, -(-iterations // p.draw_iterations))
    last_step = first_step_mm * p.step_decay
    positions: List[np.ndarray] = []
    done, stop = 0, ""
    for k in range(draws):
        step = first_step_mm * (last_step / first_step_mm) ** (k / max(1, draws - 1))
        reg = _metric(p, fixed, p.samples, seed + 104729 * k)
        reg.SetOptimizerAsGradientDescent(
            learningRate=1.0, numberOfIterations=min(p.draw_iterations, iterations - done),
            convergenceMinimumValue=1e-12, convergenceWindowSize=1000,
            estimateLearningRate=reg.EachIteration, maximumStepSizeInPhysicalUnits=float(step))
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetInitialTransform(transform, inPlace=True)
        try:
            reg.Execute(fixed, moving)
        except RuntimeError as exc:
            raise InputError(f"registration failed ({_itk_reason(exc)})", field="moving") from exc
        done += int(reg.GetOptimizerIteration())
        stop = reg.GetOptimizerStopConditionDescription()
        position = np.round(np.asarray(transform.GetParameters(), dtype=np.float64), 6)
        transform.SetParameters(tuple(float(v) for v in position))
        positions.append(position)
    if average > 1:
        mean: np.ndarray = np.round(np.stack(positions[-min(average, len(positions)):]).mean(axis=0), 6)
        transform.SetParameters(tuple(float(v) for v in mean.tolist()))
    return f"{draws} draws of {p.samples} samples, last: {stop}", done


def register(fixed: FusionImage, moving: FusionImage, params: Optional[RegistrationParameters] = None,
             initial: Optional[Any] = None) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` (the transform maps fixed points to moving points).

    ``initial`` (an ITK transform, fixed -> moving) replaces the centre initialisation. Raises
    :class:`InputError` when the images do not overlap or the optimiser fails.
    """
    import SimpleITK as sitk

    p = params or RegistrationParameters()
    start = time.perf_counter()
    f_img, m_img = _prepare(fixed), _prepare(moving)
    for name, img in (("fixed", f_img), ("moving", m_img)):
        if min(img.GetSize()) < 4:
            raise InputError(f"the {name} image has {list(img.GetSize())} voxels; rule: at least 4 along each axis "
                             "for a multi-resolution registration", file=getattr(fixed if name == "fixed" else
                                                                                  moving, "source", None) or None)
    f_img = _crop(fixed, f_img, p)
    if initial is not None:
        init = _from_matrix(sitk.Euler3DTransform(), transform_matrix_lps(initial), f_img, rigid=True)
    else:
        init = _initial(p, f_img, m_img, False)
    binned = _bin(f_img, p.finest_fixed_bin, min(f_img.GetSpacing()), FIXED_VOXEL_BUDGET)
    try:
        metric_before = evaluate_metric(p, binned, m_img, init)
    except RuntimeError as exc:
        raise InputError(f"the images do not overlap under the initial transform ({_itk_reason(exc)}); "
                         "rule: fixed and moving must show the same anatomy", field="moving") from exc
    levels = _pyramid(p, f_img, m_img, binned)
    stops: List[str] = []
    iterations = 0
    level_iterations: Tuple[int, ...] = p.iterations  # type: ignore[assignment]
    for k, ((factor, f_level, m_level), count) in enumerate(zip(levels, level_iterations)):
        stop, done = _stochastic_level(p, f_level, m_level, init, count, p.max_step_mm * factor,
                                       p.seed + 7919 * k, p.average_draws if k == len(levels) - 1 else 0)
        stops.append(f"shrink {factor}: {stop}")
        iterations += done
    stop = "rigid: " + "; ".join(stops)
    notes: List[str] = []
    metric_after: Optional[float] = None
    if p.mode == "affine":
        # Affine starts from the rigid result (from the centres alone an affine model shrinks the
        # moving image: mutual information rewards more background overlap) and runs at the middle
        # pyramid level only (the rigid stage already fitted the finest level; scale and shear are
        # resolved at half resolution: Testing/test_fusion.py recovers an oblique anisotropic
        # motion within 1 mm). It is kept only when it improves the sampled metric; otherwise the
        # rigid matrix is returned as an affine transform and the result says so. Measured on
        # mr-brain-mets T2W -> T1W+C (a rigid head motion, 3.5 mm slices): see benchmarks/README.md.
        rigid_matrix = transform_matrix_lps(init)
        rigid_metric = evaluate_metric(p, binned, m_img, init)
        affine = _from_matrix(sitk.AffineTransform(3), rigid_matrix, f_img, rigid=False)
        k = len(levels) - 2 if len(levels) >= 2 else 0
        factor, f_level, m_level = levels[k]
        stop2, more = _stochastic_level(p, f_level, m_level, affine, p.affine_iterations, p.max_step_mm * factor,
                                        p.seed + 7919 * (len(levels) + 1), p.average_draws)
        stop, iterations = f"{stop}; affine at shrink {factor}: {stop2}", iterations + more
        affine_metric = evaluate_metric(p, binned, m_img, affine)
        if affine_metric < rigid_metric:
            init, metric_after = affine, affine_metric
        else:
            init, metric_after = _from_matrix(sitk.AffineTransform(3), rigid_matrix, f_img, rigid=False), rigid_metric
            notes.append(f"affine stage rejected: metric {affine_metric:.4f} not better than rigid {rigid_metric:.4f}; "
                         "the rigid matrix is returned")
    transform: Any = init
    if p.mode == "bspline":
        mesh = [int(m) for m in p.bspline_mesh]
        bspline = sitk.BSplineTransformInitializer(f_img, mesh, order=3)
        reg_b = sitk.ImageRegistrationMethod()
        reg_b.SetMetricAsMattesMutualInformation(numberOfHistogramBins=p.histogram_bins)
        size = np.asarray(f_img.GetSize(), dtype=np.float64)
        fractions = [float(min(1.0, p.bspline_samples / max(1.0, float(np.prod(np.ceil(size / f)))))) for f in (2, 1)]
        reg_b.SetMetricSamplingStrategy(reg_b.RANDOM)
        reg_b.SetMetricSamplingPercentagePerLevel(fractions, _seed(p.seed))
        reg_b.SetInterpolator(sitk.sitkLinear)
        reg_b.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=p.bspline_iterations,
                                   maximumNumberOfCorrections=5,
                                   maximumNumberOfFunctionEvaluations=4 * p.bspline_iterations)
        reg_b.SetShrinkFactorsPerLevel([2, 1])
        reg_b.SetSmoothingSigmasPerLevel([1.0, 0.0])
        reg_b.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg_b.SetNumberOfThreads(p.threads)
        reg_b.SetMovingInitialTransform(init)
        reg_b.SetInitialTransform(bspline, inPlace=True)
        try:
            reg_b.Execute(f_img, m_img)
        except RuntimeError as exc:
            raise InputError(f"B-spline registration failed ({_itk_reason(exc)})", field="moving") from exc
        composite = sitk.CompositeTransform(3)  # built after the optimisation: AddTransform copies
        composite.AddTransform(init)
        composite.AddTransform(bspline)  # applied first: p_moving = rigid(bspline(p_fixed))
        transform = composite
        stop = f"{stop}; B-spline: {reg_b.GetOptimizerStopConditionDescription()}"
        iterations += int(reg_b.GetOptimizerIteration())
    if metric_after is None or p.mode == "bspline":
        metric_after = evaluate_metric(p, binned, m_img, transform)
    return RegistrationResult(transform=transform, parameters=p, metric_before=metric_before,
                              metric_after=metric_after, stop_condition=" ".join(stop.split())[:400],
                              iterations=iterations, elapsed_s=time.perf_counter() - start,
                              versions=library_versions(), fixed=fixed.describe(), moving=moving.describe(),
                              notes=notes)


def _initial(params: RegistrationParameters, fixed: sitk.Image, moving: sitk.Image, affine: bool) -> Any:
    import SimpleITK as sitk

    kind = sitk.AffineTransform(3) if affine else sitk.Euler3DTransform()
    if params.initialisation == "identity":
        centre = fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in fixed.GetSize()])
        kind.SetCenter(centre)
        return kind
    mode = (sitk.CenteredTransformInitializerFilter.MOMENTS if params.initialisation == "moments"
            else sitk.CenteredTransformInitializerFilter.GEOMETRY)
    return sitk.CenteredTransformInitializer(fixed, moving, kind, mode)


def _from_matrix(transform: Any, matrix: np.ndarray, f_img: Any, rigid: bool) -> Any:
    """``transform`` (Euler or affine) set to the 4x4 ``matrix``, centred on the fixed image."""
    centre = np.asarray(f_img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in f_img.GetSize()]))
    a = _nearest_rotation(matrix[:3, :3]) if rigid else matrix[:3, :3]
    transform.SetCenter(tuple(float(v) for v in centre))
    transform.SetMatrix(tuple(float(v) for v in a.ravel()))
    transform.SetTranslation(tuple(float(v) for v in (matrix[:3, 3] + matrix[:3, :3] @ centre - centre)))
    return transform


def _nearest_rotation(a: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(a)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


def _itk_reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text[:200]


def resample_onto(fixed: FusionImage, moving: FusionImage, transform: Any, default: float = 0.0,
                  interpolator: str = "linear") -> FusionImage:
    """``moving`` resampled onto the grid of ``fixed`` through ``transform`` (fixed -> moving):
    the registered ("hardened") moving image annotations may be drawn on (8.4.1.4)."""
    import SimpleITK as sitk

    kind = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}[interpolator]
    out = sitk.Resample(_prepare(moving), _prepare(fixed), transform, kind, float(default), sitk.sitkFloat32)
    voxels = sitk.GetArrayFromImage(out)
    return FusionImage(voxels, fixed.geometry, source=moving.source, modality=moving.modality,
                       series_instance_uid=moving.series_instance_uid,
                       frame_of_reference_uid=fixed.frame_of_reference_uid,
                       info={**moving.info, "resampled_onto": fixed.series_instance_uid or fixed.source})
