"""``mr-brain-mets``: brain MR with metastases in three series (seed 002, R-002, R-8.4.1).

One study, one FrameOfReferenceUID, three series in acquisition order:

* ``T1W`` (SeriesNumber 3, ``AXI T1 SE``): 256 x 256 x 135 at 0.9375 mm, 1 mm slices;
* ``T2W`` (4, ``AXI T2 TSE``): 256 x 256 x 40, slice step 3.5 mm with SliceThickness 3.0 mm (a
  0.5 mm gap); the head moved between T1W and T2W: a known rigid motion recorded in
  ``case.json`` ``registration``;
* ``T1W_C`` (5, ``AXI T1 SE+C``, primary): the T1W grid after gadolinium; metastases enhance.

uint16, BitsStored 12, no Rescale attributes (classic MR). Ground truth on the T1W+C grid:
``mr_labels.nii.gz`` (1 brain, 2 skull, 10 + n lesion n), ``lesions.json`` (ROI names in seed
002 style such as ``R_lat_temp``, ``L_frontal`` and ``Skull``) and ``landmarks.json`` (pairs of
positions in the T1W+C and T2W frames for target registration error). As in seed 002 the lesion
contours are also delivered as an RT Structure Set on the axial T1W+C (``dicom/RTSTRUCT``, label
``ROIs in axC``, lesions in magenta, ``*Skull`` in red), exported from the same labels.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import numpy as np

from ..geometry import ImageGeometry
from .case import (
    Context,
    KindPlan,
    KindResult,
    SampleOptions,
    VolumePlan,
    make_series,
    make_study,
    rounded,
)
from .dicom_writer import PixelEncoding
from .ground_truth import write_json, write_labelmap_nifti
from .identity import Identity, make_identity
from .phantom import (
    Ellipsoid,
    Intersection,
    Phantom,
    PhantomSampler,
    apply_matrix,
    rigid_matrix,
    rotation_matrix,
    vec3,
)
from .rtstruct import RoiSpec, ground_truth_entry, write_structure_set

MATRIX = 256
PIXEL_SPACING_MM = 0.9375
T1_SLICE_MM = 1.0
T2_SLICES = 40
T2_STEP_MM = 3.5
T2_THICKNESS_MM = 3.0
FOV_CENTRE = (0.0, 0.0, 2.0)
NOISE = 18.0
#: Label values of ``mr_labels.nii.gz``; lesion ``n`` has value ``LESION_LABEL_BASE + n``.
LABELS: Dict[int, Tuple[str, str]] = {1: ("BRAIN", "brain (parenchyma and ventricles)"), 2: ("SKULL", "Skull")}
LESION_LABEL_BASE = 10

BRAIN = Ellipsoid((0.0, 0.0, 2.0), (65.0, 85.0, 66.0))
VENTRICLES = (Ellipsoid((-10.0, -2.0, 14.0), (6.0, 22.0, 10.0)), Ellipsoid((10.0, -2.0, 14.0), (6.0, 22.0, 10.0)))
EYES = (Ellipsoid((-32.0, -82.0, -42.0), (12.0, 12.0, 11.0)), Ellipsoid((32.0, -82.0, -42.0), (12.0, 12.0, 11.0)))

# Signal per tissue: (T1W, T2W, T1W+C)
SIGNAL: Dict[str, Tuple[float, float, float]] = {
    "background": (0.0, 0.0, 0.0),
    "scalp": (1100.0, 700.0, 1100.0),
    "skull": (120.0, 100.0, 120.0),
    "csf": (300.0, 2000.0, 310.0),
    "gm": (650.0, 1000.0, 680.0),
    "wm": (900.0, 750.0, 910.0),
    "ventricle": (280.0, 2100.0, 285.0),
    "vitreous": (250.0, 2200.0, 250.0),
    "edema": (600.0, 1500.0, 620.0),
    "lesion": (620.0, 1300.0, 1750.0),
    "necrosis": (350.0, 1700.0, 380.0),
}
SERIES_SIGNAL_INDEX = {"T1W": 0, "T2W": 1, "T1W_C": 2}


def identity(options: SampleOptions) -> Identity:
    """The fake patient of this sample."""
    return make_identity(options.seed, options.kind,
                         history="lung adenocarcinoma, headache and dizziness, referred for gamma knife planning")


def t1_geometry(n_slices: int) -> ImageGeometry:
    """The axial T1W / T1W+C grid (before ``oblique``)."""
    half = (MATRIX - 1) * PIXEL_SPACING_MM / 2.0
    z0 = FOV_CENTRE[2] - (n_slices - 1) * T1_SLICE_MM / 2.0
    return ImageGeometry((MATRIX, MATRIX, n_slices), (PIXEL_SPACING_MM, PIXEL_SPACING_MM, T1_SLICE_MM),
                         (FOV_CENTRE[0] - half, FOV_CENTRE[1] - half, z0))


def t2_geometry() -> ImageGeometry:
    """The axial T2W grid (its own slices; the scanner frame is shared)."""
    half = (MATRIX - 1) * PIXEL_SPACING_MM / 2.0
    z0 = FOV_CENTRE[2] - (T2_SLICES - 1) * T2_STEP_MM / 2.0
    return ImageGeometry((MATRIX, MATRIX, T2_SLICES), (PIXEL_SPACING_MM, PIXEL_SPACING_MM, T2_STEP_MM),
                         (FOV_CENTRE[0] - half, FOV_CENTRE[1] - half, z0))


def head_motion(ctx: Context) -> Tuple[np.ndarray, List[float], List[float], List[float]]:
    """Rigid matrix M (T1W+C LPS -> T2W LPS of the same anatomical point) and its parameters."""
    rng = ctx.rng("head-motion")
    angles = [float(rng.uniform(1.5, 4.0) * rng.choice([-1.0, 1.0])) for _ in range(3)]
    shift = [float(rng.uniform(1.0, 4.0) * rng.choice([-1.0, 1.0])) for _ in range(3)]
    centre = [0.0, 0.0, 0.0]
    rot = rotation_matrix("z", angles[2]) @ rotation_matrix("y", angles[1]) @ rotation_matrix("x", angles[0])
    c = np.asarray(centre)
    matrix = rigid_matrix(rot, c + np.asarray(shift) - rot @ c)
    return matrix, angles, shift, centre


def roi_name(centre: np.ndarray) -> str:
    """Seed 002 style ROI name from side and location (``R_lat_temp``, ``L_frontal`` ...)."""
    x, y, z = (float(v) for v in centre)
    side = "R" if x < 0 else "L"  # LPS: x grows to the patient's left
    ax = abs(x)
    if z < -25.0 and y > 25.0:
        region = "mid_cblm" if ax < 20.0 else "lat_cblm"
    elif y < -25.0:
        region = "lat_frontal" if ax > 30.0 else "frontal"
    elif y > 45.0:
        region = "occipole" if y > 60.0 else "occipital"
    elif ax >= 30.0:
        region = "lat_temp" if z < 10.0 else "parietal"
    elif z >= 15.0:
        region = "parietal"
    else:
        region = "basal_ganglia"
    return f"{side}_{region}"


def place_lesions(ctx: Context, z_range: Tuple[float, float]) -> List[Dict[str, Any]]:
    """3-8 metastases inside the brain, clear of the ventricles and of each other."""
    rng = ctx.rng("lesions")
    count = int(rng.integers(3, 9))
    lesions: List[Dict[str, Any]] = []
    names: Dict[str, int] = {}
    attempts = 0
    while len(lesions) < count and attempts < 5000:
        attempts += 1
        r = float(rng.uniform(1.5, 6.0))
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        depth = float(rng.uniform(0.35, 1.0)) ** (1.0 / 3.0)
        centre = np.asarray(BRAIN.centre) + direction * depth * (np.asarray(BRAIN.semi_axes) - 2.2 * r - 6.0)
        lo, hi = z_range
        margin = r + 1.0 if hi - lo > 2.0 * r + 2.0 else 0.0  # thin coverage: the centre inside suffices
        if not lo + margin <= centre[2] <= hi - margin:
            continue
        if any(np.linalg.norm(centre - np.asarray(v.centre)) < 18.0 + r for v in VENTRICLES):
            continue
        if any(np.linalg.norm(centre - np.asarray(o["centre_lps"])) < 2.0 * (r + o["radius_mm"]) + 4.0
               for o in lesions):
            continue
        name = roi_name(centre)
        names[name] = names.get(name, 0) + 1
        if names[name] > 1:
            name = f"{name}_{names[name]}"
        stretch = (1.0, float(rng.uniform(0.85, 1.0)), float(rng.uniform(0.85, 1.0)))
        lesions.append({
            "centre_lps": centre.tolist(), "radius_mm": r, "semi_axes_mm": [r * s for s in stretch],
            "roi_name": name, "necrotic": r >= 4.0,
        })
    return lesions


def anatomy(lesions: List[Dict[str, Any]]) -> Phantom:
    """Head phantom in the T1W+C patient frame (LPS mm)."""
    ph = Phantom()
    ph.add("scalp", Ellipsoid((0.0, 0.0, 0.0), (78.0, 98.0, 80.0)))
    ph.add("skull", Ellipsoid((0.0, 0.0, 0.0), (73.0, 93.0, 75.0)))
    ph.add("csf", Ellipsoid((0.0, 0.0, 1.0), (67.5, 87.5, 69.0)))
    ph.add("gm", BRAIN)
    ph.add("wm", Ellipsoid((0.0, 3.0, 8.0), (50.0, 66.0, 48.0)))
    ph.add("gm", Ellipsoid((0.0, 55.0, -42.0), (44.0, 24.0, 16.0)))  # cerebellar cortex
    for v in VENTRICLES:
        ph.add("ventricle", v)
    for e in EYES:
        ph.add("vitreous", e)
    for lesion in lesions:
        ph.add("edema", Intersection(Ellipsoid(vec3(lesion["centre_lps"]),
                                               vec3(2.0 * a for a in lesion["semi_axes_mm"])), BRAIN))
    for n, lesion in enumerate(lesions, start=1):
        centre = vec3(lesion["centre_lps"])
        ph.add(f"lesion_{n}", Ellipsoid(centre, vec3(lesion["semi_axes_mm"])))
        if lesion["necrotic"]:
            ph.add(f"necrosis_{n}", Ellipsoid(centre, vec3(0.5 * a for a in lesion["semi_axes_mm"])))
    return ph


def _lut(phantom: Phantom, series_key: str) -> np.ndarray:
    idx = SERIES_SIGNAL_INDEX[series_key]
    lut = np.zeros(len(phantom.tissues), dtype=np.float64)
    for t, name in enumerate(phantom.tissues):
        base = name.split("_")[0]
        lut[t] = SIGNAL[base][idx]
    return lut


def build(ctx: Context) -> KindPlan:
    """Plan the mr-brain-mets case."""
    opts = ctx.options
    base = t1_geometry(opts.primary_slices)
    t1c_geometry = ctx.oblique_geometry(base) if opts.oblique else base
    z_lo = float(base.slice_position_lps(0)[2])
    z_hi = float(base.slice_position_lps(base.shape[2] - 1)[2])
    lesions = place_lesions(ctx, (max(z_lo, -55.0), min(z_hi, 60.0)))
    phantom = anatomy(lesions)
    motion, angles, shift, centre = head_motion(ctx)
    frame_uid = ctx.uid("frame-of-reference")
    study = make_study(ctx, "MR", "GK image special process")
    label_lut = np.zeros(len(phantom.tissues), dtype=np.uint8)
    for t, name in enumerate(phantom.tissues):
        if name in ("gm", "wm", "ventricle", "edema"):
            label_lut[t] = 1
        elif name == "skull":
            label_lut[t] = 2
        elif name.startswith(("lesion_", "necrosis_")):
            label_lut[t] = LESION_LABEL_BASE + int(name.split("_")[1])
    common = {
        "MagneticFieldStrength": "3", "ImagingFrequency": "123.2", "ImagedNucleus": "1H",
        "NumberOfAverages": "1", "ReceiveCoilName": "Head_32", "TransmitCoilName": "Body",
        "InPlanePhaseEncodingDirection": "ROW", "AcquisitionMatrix": [0, 256, 256, 0], "PixelBandwidth": "190",
        "PercentSampling": "100", "PercentPhaseFieldOfView": "100", "dBdt": "0", "SAR": "0.9",
        "MRAcquisitionType": "2D", "WindowCenter": "700", "WindowWidth": "1400",
    }
    protocols = {
        "T1W": dict(common, ScanningSequence="SE", SequenceVariant=["SK", "SP"], ScanOptions="",
                    SequenceName="*se2d1", RepetitionTime="550", EchoTime="9.8", EchoTrainLength=1,
                    FlipAngle="90", SpacingBetweenSlices=str(T1_SLICE_MM)),
        "T2W": dict(common, ScanningSequence="SE", SequenceVariant=["SK", "SP", "OSP"], ScanOptions="FS",
                    SequenceName="*tse2d1_15", RepetitionTime="5000", EchoTime="95", EchoTrainLength=15,
                    FlipAngle="150", SpacingBetweenSlices=str(T2_STEP_MM), SliceThickness=str(T2_THICKNESS_MM),
                    WindowCenter="1000", WindowWidth="2200"),
        "T1W_C": dict(common, ScanningSequence="SE", SequenceVariant=["SK", "SP"], ScanOptions="",
                      SequenceName="*se2d1", RepetitionTime="550", EchoTime="9.8", EchoTrainLength=1,
                      FlipAngle="90", SpacingBetweenSlices=str(T1_SLICE_MM),
                      ContrastBolusAgent="Gadobutrol 1.0 mmol/ml", ContrastBolusVolume="7.5",
                      ContrastBolusRoute="IV", ContrastBolusStartTime=f"{study.time}.000000",
                      ContrastBolusIngredient="GADOLINIUM", WindowCenter="800", WindowWidth="1600"),
    }
    specs = (  # key, folder, number, description, minutes, geometry, pose, role
        ("T1W", "MR_T1W", 3, "AXI T1 SE", 2.0, base, None, "secondary"),
        ("T2W", "MR_T2W", 4, "AXI T2 TSE", 7.0, t2_geometry(), motion, "secondary"),
        ("T1W_C", "MR_T1W_C", 5, "AXI T1 SE+C", 21.0, t1c_geometry, None, "primary"),
    )
    volumes = []
    for key, folder, number, description, minutes, geometry, pose, role in specs:
        sampler = PhantomSampler(phantom, geometry, pose)
        lut = _lut(phantom, key)

        def values(k: int, tissue: np.ndarray, lut: np.ndarray = lut, key: str = key,
                   sampler: PhantomSampler = sampler) -> np.ndarray:
            x, y, z = sampler.coordinates(k)
            bias = 1.0 + 0.06 * (y / 100.0) + 0.04 * (z / 100.0) - 0.03 * (x / 100.0)
            rng = ctx.rng("noise", key, k)
            n1 = rng.standard_normal(tissue.shape, dtype=np.float32)
            n2 = rng.standard_normal(tissue.shape, dtype=np.float32)
            signal = lut[tissue] * bias
            return np.sqrt((signal + NOISE * n1) ** 2 + (NOISE * n2) ** 2)  # Rician magnitude

        series = make_series(ctx, study, key, "MR", number=number, description=description, minutes_after=minutes,
                             frame_of_reference_uid=frame_uid, body_part="BRAIN", protocol=description,
                             model_name="SynthMR 3T", attributes=protocols[key])
        volumes.append(VolumePlan(
            key=key, folder=folder, modality="MR", geometry=geometry, encoding=PixelEncoding(16, 12, 0),
            sampler=sampler, values=values, study=study, series=series, role=role,
            label_lut=label_lut if key == "T1W_C" else None, oblique=opts.oblique and key == "T1W_C",
            description=f"{description}: uint16 BitsStored 12, no Rescale attributes"
                        + ("; head moved (see registration)" if pose is not None else "")))
    return KindPlan(volumes=volumes, studies=[study], finish=_finish, finish_work=1,
                    data={"lesions": lesions, "motion": motion, "angles": angles, "shift": shift,
                          "centre": centre})


def _finish(ctx: Context, plan: KindPlan) -> KindResult:
    t1c = plan.volume("T1W_C")
    t2 = plan.volume("T2W")
    assert t1c.labels is not None
    write_labelmap_nifti(ctx.path("ground_truth/mr_labels.nii.gz"), t1c.labels, t1c.geometry)
    motion = plan.data["motion"]
    rois = []
    for n, lesion in enumerate(plan.data["lesions"], start=1):
        a, b, c = lesion["semi_axes_mm"]
        centre = np.asarray(lesion["centre_lps"])
        rois.append({
            "roi_number": n, "roi_name": lesion["roi_name"], "label_value": LESION_LABEL_BASE + n,
            "type": "metastasis", "centre_lps_mm": rounded(centre),
            "centre_ijk": rounded(t1c.geometry.lps_to_ijk(centre)),
            "radius_mm": round(lesion["radius_mm"], 3), "semi_axes_mm": rounded([a, b, c], 3),
            "volume_mm3": round(4.0 / 3.0 * math.pi * a * b * c, 2),
            "n_voxels": int(np.count_nonzero(t1c.labels == LESION_LABEL_BASE + n)),
            "enhancement": "ring" if lesion["necrotic"] else "solid",
        })
    rois.append({"roi_number": len(rois) + 1, "roi_name": "Skull", "label_value": 2, "type": "organ",
                 "n_voxels": int(np.count_nonzero(t1c.labels == 2))})
    write_json(ctx.path("ground_truth/lesions.json"), {
        "series_key": "T1W_C", "series_instance_uid": t1c.series.series_instance_uid,
        "frame_of_reference_uid": t1c.series.frame_of_reference_uid,
        "structure_set_label": "ROIs in axC",
        "rois": rois,
    })
    points: List[Tuple[str, np.ndarray]] = [
        ("ventricle_right_centre", np.asarray(VENTRICLES[0].centre)),
        ("ventricle_left_centre", np.asarray(VENTRICLES[1].centre)),
        ("eye_right_centre", np.asarray(EYES[0].centre)),
        ("eye_left_centre", np.asarray(EYES[1].centre)),
        ("brain_anterior_pole", np.array([0.0, -85.0, 2.0])),
        ("brain_posterior_pole", np.array([0.0, 85.0, 2.0])),
    ]
    points += [(f"lesion_{r['roi_name']}", np.asarray(les["centre_lps"]))
               for r, les in zip(rois, plan.data["lesions"])]
    pairs = []
    for name, p in points:
        q = apply_matrix(motion, p)
        pairs.append({"name": name, "fixed_lps_mm": rounded(p, 6), "moving_lps_mm": rounded(q, 6),
                      "fixed_ijk": rounded(t1c.geometry.lps_to_ijk(p)),
                      "moving_ijk": rounded(t2.geometry.lps_to_ijk(q))})
    write_json(ctx.path("ground_truth/landmarks.json"), {
        "fixed_series_key": "T1W_C", "moving_series_key": "T2W",
        "meaning": "each pair is one anatomical point: fixed_lps_mm in the T1W+C images, moving_lps_mm in the "
                   "T2W images (moving = matrix_lps @ fixed)",
        "matrix_lps": rounded(motion, 10),
        "pairs": pairs,
    })
    specs = [RoiSpec(r["roi_number"], r["roi_name"], r["label_value"], (255, 0, 255), "GTV",
                     f"METASTASIS_{r['roi_number']}") for r in rois if r["type"] == "metastasis"]
    specs.append(RoiSpec(len(rois), "*Skull", 2, (255, 0, 0), "ORGAN", "SKULL"))
    structure_set = write_structure_set(ctx, t1c, specs, label="ROIs in axC", name="GK lesion contours",
                                        description="RTSTRUCT lesion contours on AXI T1 SE+C", series_number=6,
                                        minutes_after=45.0)
    ctx.step()
    labels = [{"value": v, "code": code, "name": name} for v, (code, name) in LABELS.items()]
    labels += [{"value": r["label_value"], "code": f"METASTASIS_{r['roi_number']}", "name": r["roi_name"]}
               for r in rois if r["type"] == "metastasis"]
    return KindResult(
        ground_truth=[
            ground_truth_entry(structure_set, "RT Structure Set on the T1W+C series (seed 002 style: label 'ROIs in "
                                              "axC', lesion ROIs such as R_lat_temp, plus *Skull), exported from "
                                              "mr_labels.nii.gz along voxel boundaries (imports back exactly)."),
            {"name": "labels", "path": "ground_truth/mr_labels.nii.gz", "format": "nifti", "series_key": "T1W_C",
             "labels": labels, "description": "Labelmap on the T1W+C grid: brain (incl. ventricles and oedema), "
                                              "skull, each metastasis (incl. necrotic core)."},
            {"name": "lesions", "path": "ground_truth/lesions.json", "format": "json", "series_key": "T1W_C",
             "description": "RTSS-style ROI list (seed 002 names) with centres, sizes and label values."},
            {"name": "landmarks", "path": "ground_truth/landmarks.json", "format": "json", "series_key": "T2W",
             "description": "Landmark pairs (T1W+C frame, T2W frame) for registration error."},
        ],
        extra={"structure_sets": [structure_set], "registration": {
            "fixed_series_key": "T1W_C", "moving_series_key": "T2W",
            "matrix_lps": rounded(motion, 10),
            "meaning": "p_T2W = matrix_lps @ p_T1W_C: the LPS position in the T2W images of an anatomical point "
                       "seen at LPS p_T1W_C in the T1W+C (and T1W) images; the head moved between the series, the "
                       "FrameOfReferenceUID is shared. Resampling T2W onto the T1W+C grid uses this matrix as the "
                       "fixed-to-moving (ITK) transform.",
            "rotation_deg": rounded(plan.data["angles"], 6),
            "translation_mm": rounded(plan.data["shift"], 6),
            "centre_lps_mm": rounded(plan.data["centre"], 6),
            "landmarks_path": "ground_truth/landmarks.json",
        }})
