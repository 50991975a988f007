"""Image registration on SimpleITK (R-8.4.1.1, R-8.4.1.2, R-7.4, R-6.5).

Model: rigid (``Euler3DTransform``), affine (``AffineTransform``) or ``bspline`` (rigid, then a
B-spline free-form deformation on top, for tissue that deforms). Metric: Mattes mutual information
(works across MR contrasts and CT/PET). Optimiser: regular-step gradient descent with scales from
physical shift, multi-resolution (shrink factors with Gaussian smoothing in mm). Initialisation:
the image centres (``geometry``) or the intensity centres of mass (``moments``).

Determinism: the metric samples a fixed number of fixed-image positions drawn from a fixed seed,
and the number of threads is fixed, so the same inputs give the same transform; multithreaded
sums may differ in the last bits (measured: matrix entries within 5e-9).

Speed (benchmarks/bench_registration.py, mr-brain-mets, 2 shared cores, medians of 3 interleaved
runs, 2026-11-22): rigid 5.2 s vs itk-elastix's default rigid map 3.0 s (1.74x), affine 8.4 s vs 3.0 s
(2.84x); before skipping the gradient filter in metric evaluations and running the affine stage at
the middle level only, 1.73x / 3.0x on a busier machine. Most of the rest is the coarse level (93
iterations over 40 000 samples) and ITK smoothing the full-resolution fixed image at every level.

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
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

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

    ``shrink_factors`` / ``smoothing_sigmas_mm`` give the pyramid, coarse to fine;
    At every level ``samples`` fixed-image positions (or all voxels when fewer) are drawn with ``seed``.
    """

    mode: str = "rigid"
    initialisation: str = "geometry"
    histogram_bins: int = 50
    samples: int = 40000
    seed: int = DEFAULT_SEED
    shrink_factors: Tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_mm: Tuple[float, ...] = (2.0, 1.0, 1.0)
    iterations: int = 100
    max_step_mm: float = 1.0
    convergence_window: int = 20
    convergence_minimum: float = 1e-7
    bspline_mesh: Tuple[int, int, int] = (6, 6, 6)
    bspline_iterations: int = 60
    threads: int = 2

    def __post_init__(self) -> None:
        checks = [
            (self.mode in MODES, "mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}"),
            (self.initialisation in INITIALISATIONS, "initialisation",
             f"must be one of {', '.join(INITIALISATIONS)}, got {self.initialisation!r}"),
            (8 <= self.histogram_bins <= 256, "histogram_bins", f"must be 8..256, got {self.histogram_bins}"),
            (1000 <= self.samples <= 10_000_000, "samples", f"must be 1000..10000000, got {self.samples}"),
            (len(self.shrink_factors) >= 1 and len(self.shrink_factors) == len(self.smoothing_sigmas_mm),
             "shrink_factors", "needs one smoothing sigma per level"),
            (all(int(f) >= 1 for f in self.shrink_factors), "shrink_factors", "must be >= 1"),
            (all(s >= 0 for s in self.smoothing_sigmas_mm), "smoothing_sigmas_mm", "must be >= 0"),
            (1 <= self.iterations <= 10000, "iterations", f"must be 1..10000, got {self.iterations}"),
            (0.0 < self.max_step_mm <= 50.0, "max_step_mm", f"must be in (0, 50], got {self.max_step_mm}"),
            (2 <= self.convergence_window <= 1000, "convergence_window", "must be 2..1000"),
            (self.convergence_minimum > 0, "convergence_minimum", "must be > 0"),
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
        for key in ("shrink_factors", "smoothing_sigmas_mm", "bspline_mesh"):
            data[key] = list(data[key])
        return data

    def replace(self, **changes: Any) -> RegistrationParameters:
        values = asdict(self)
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


def _method(params: RegistrationParameters, fixed: sitk.Image, levels: Optional[Sequence[int]] = None,
            sigmas: Optional[Sequence[float]] = None, iterations: Optional[int] = None) -> sitk.ImageRegistrationMethod:
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=params.histogram_bins)
    factors = [int(f) for f in (levels or params.shrink_factors)]
    _sample(reg, params, fixed, factors)
    reg.SetInterpolator(sitk.sitkLinear)
    # Mattes MI needs only the moving image's gradient: not filtering the fixed image saves 0.3 s per
    # level and per metric evaluation on mr-brain-mets with the same result. (Computing the moving
    # gradient at the sample points only is faster still but ended at 1.02 mm TRE instead of 0.56.)
    reg.SetMetricUseFixedImageGradientFilter(False)
    reg.SetMetricUseMovingImageGradientFilter(True)
    # Gradient descent with the learning rate re-estimated at every iteration and steps of at most
    # max_step_mm. Measured on mr-brain-mets T2W -> T1W+C (rigid, 3 levels): mean TRE 0.56 mm in 5.8 s;
    # regular-step descent (learning rate 2, relaxation 0.6) ended at 1.8 mm after 12 s, jumping
    # away at every level restart, and an unsmoothed finest level trapped it in the Rician noise.
    reg.SetOptimizerAsGradientDescent(
        learningRate=1.0, numberOfIterations=iterations if iterations is not None else params.iterations,
        convergenceMinimumValue=params.convergence_minimum, convergenceWindowSize=params.convergence_window,
        estimateLearningRate=reg.EachIteration, maximumStepSizeInPhysicalUnits=params.max_step_mm)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([int(f) for f in (levels or params.shrink_factors)])
    reg.SetSmoothingSigmasPerLevel([float(s) for s in (sigmas if sigmas is not None else params.smoothing_sigmas_mm)])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetNumberOfThreads(params.threads)
    return reg


def _sample(reg: Any, params: RegistrationParameters, fixed: sitk.Image, factors: Sequence[int]) -> None:
    """Random sampling with a fixed seed: ``params.samples`` positions at every pyramid level.

    Measured on mr-brain-mets (256x256x135 fixed): 5 % of the full-resolution voxels (440 000
    samples) cost 0.23 s per iteration; 40 000 give the same TRE at a tenth of the time."""
    size = np.asarray(fixed.GetSize(), dtype=np.float64)
    fractions = [float(min(1.0, params.samples / max(1.0, float(np.prod(np.ceil(size / f)))))) for f in factors]
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentagePerLevel(fractions, params.seed)


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


def evaluate_metric(params: RegistrationParameters, fixed: sitk.Image, moving: sitk.Image, transform: Any) -> float:
    """Mattes MI (ITK sign: lower is better) of ``moving`` through ``transform`` at full resolution,
    with the same samples as the registration."""
    reg = _method(params, fixed, levels=[1], sigmas=[0.0])
    # The value needs no image gradient: skipping the moving-image gradient filter gives the same
    # value (mr-brain-mets: -0.727638 both ways) and saves a third of each evaluation (2.9 -> 2.2 s
    # on the loaded 2-core machine).
    reg.SetMetricUseMovingImageGradientFilter(False)
    reg.SetInitialTransform(transform, inPlace=False)
    return float(reg.MetricEvaluate(fixed, moving))


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
    if initial is not None:
        init = _from_matrix(sitk.Euler3DTransform(), transform_matrix_lps(initial), f_img, rigid=True)
    else:
        init = _initial(p, f_img, m_img, False)
    try:
        metric_before = evaluate_metric(p, f_img, m_img, init)
    except RuntimeError as exc:
        raise InputError(f"the images do not overlap under the initial transform ({_itk_reason(exc)}); "
                         "rule: fixed and moving must show the same anatomy", field="moving") from exc
    init, stop, iterations = _run(p, f_img, m_img, init)
    notes: List[str] = []
    metric_after: Optional[float] = None
    if p.mode == "affine":
        # Affine starts from the rigid result (from the centres alone an affine model shrinks the
        # moving image: mutual information rewards more background overlap). The affine stage is kept
        # only when it improves the full-resolution metric; otherwise the rigid matrix is returned as
        # an affine transform and the result says so. Measured on mr-brain-mets T2W -> T1W+C (a rigid
        # head motion, 3.5 mm slices): the affine stage drifted to scale 0.92 (metric -0.71 vs -0.95).
        # Speed (issue 7 goal: no slower than elastix's affine map): the affine stage runs only at
        # the middle pyramid level (_affine_levels; the rigid stage already fitted full resolution),
        # and the full-resolution metric of the kept transform is reused as ``metric_after`` (one
        # evaluation fewer: 0.8-2.9 s on the 2-core machine).
        rigid_matrix = transform_matrix_lps(init)
        rigid_metric = evaluate_metric(p, f_img, m_img, init)
        affine = _from_matrix(sitk.AffineTransform(3), rigid_matrix, f_img, rigid=False)
        levels, sigmas = _affine_levels(p)
        affine, stop2, more = _run(p, f_img, m_img, affine, levels, sigmas)
        stop, iterations = f"rigid: {stop}; affine: {stop2}", iterations + more
        affine_metric = evaluate_metric(p, f_img, m_img, affine)
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
        _sample(reg_b, p, f_img, [2, 1])
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
        metric_after = evaluate_metric(p, f_img, m_img, transform)
    return RegistrationResult(transform=transform, parameters=p, metric_before=metric_before,
                              metric_after=metric_after, stop_condition=" ".join(stop.split())[:400],
                              iterations=iterations, elapsed_s=time.perf_counter() - start,
                              versions=library_versions(), fixed=fixed.describe(), moving=moving.describe(),
                              notes=notes)


def _affine_levels(p: RegistrationParameters) -> Tuple[Tuple[int, ...], Tuple[float, ...]]:
    """The pyramid level(s) of the affine stage: the middle one (second finest), or the only one.

    Measured on mr-brain-mets (2 cores, loaded machine, one process): the affine stage at the two
    finest levels (2, 1) took 4.0 s, at the middle level (2) alone 1.9 s, same kept transform and
    TRE (0.557 mm; the stage is rejected there as the motion is rigid). The full-resolution fit is
    already done by the rigid stage; the affine stage only adds scale/shear, which the half-resolution
    level resolves (Testing/test_fusion.py: affine recovers an oblique anisotropic motion within 1 mm).
    """
    n = len(p.shrink_factors)
    k = n - 2 if n >= 2 else 0
    return (int(p.shrink_factors[k]),), (float(p.smoothing_sigmas_mm[k]),)


def _run(p: RegistrationParameters, f_img: Any, m_img: Any, transform: Any, levels: Optional[Sequence[int]] = None,
         sigmas: Optional[Sequence[float]] = None) -> Tuple[Any, str, int]:
    reg = _method(p, f_img, levels=levels, sigmas=sigmas)
    reg.SetInitialTransform(transform, inPlace=True)
    try:
        reg.Execute(f_img, m_img)
    except RuntimeError as exc:
        raise InputError(f"registration failed ({_itk_reason(exc)})", field="moving") from exc
    return transform, reg.GetOptimizerStopConditionDescription(), int(reg.GetOptimizerIteration())


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
