"""``ct-chest``: a thin-slice chest CT with lung nodules (seed 001, R-001, R-7.2).

512 x 512 pixels of 0.703125 mm, 1.25 mm slices (SliceThickness equals the position step),
140 slices by default, head-first supine, axial. uint16 with BitsStored 12 and RescaleIntercept
-1024 (HU). Anatomy: body (fat, muscle), table, ribs, spine, trachea, aorta, mediastinum,
heart, both lungs (about -850 HU) and 2-4 nodules of 3-15 mm.

Ground truth: ``ground_truth/ct_labels.nii.gz`` (labels in :data:`LABELS` plus 10 + n for
nodule n), ``ground_truth/nodules.json`` (seed 001 position, classification, pathology,
TNM and stage per nodule) and ``ground_truth/follow_up.json`` (seed 001 follow-up table). The lungs
and nodules are also written as an RT Structure Set on the CT (``dicom/RTSTRUCT``; TG-263 style
names ``Lung_L``, ``Lung_R``, ``Nodule_N1`` ...; the lung ROIs have holes where the nodules are,
as in the labelmap).
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
from .dicom_writer import PixelEncoding, head_to_feet_instance_numbers, instance_uid
from .ground_truth import write_json, write_labelmap_nifti
from .identity import Identity, make_identity
from .phantom import (
    Banded,
    Box,
    Difference,
    Ellipsoid,
    EllipticCylinder,
    Phantom,
    PhantomSampler,
    mat3,
    rotation_matrix,
    vec3,
)
from .rtstruct import RoiSpec, ground_truth_entry, write_structure_set

MATRIX = 512
PIXEL_SPACING_MM = 0.703125
SLICE_SPACING_MM = 1.25
Z_CENTRE_MM = -185.0
NOISE_HU = 12.0
#: Label values of ``ct_labels.nii.gz``; nodule ``n`` (1-based) has value ``NODULE_LABEL_BASE + n``.
LABELS: Dict[int, Tuple[str, str]] = {1: ("LUNG_LEFT", "left lung"), 2: ("LUNG_RIGHT", "right lung")}
NODULE_LABEL_BASE = 10

HU: Dict[str, float] = {
    "background": -1000.0, "fat": -100.0, "muscle": 45.0, "table_shell": 250.0, "table_foam": -900.0,
    "bone_cortical": 900.0, "bone_cancellous": 220.0, "csf": 10.0, "lung_left": -850.0,
    "lung_right": -850.0, "mediastinum": -40.0, "heart": 40.0, "blood": 45.0, "airway": -1000.0,
}
NODULE_HU = {"solid": 35.0, "part-solid": -350.0, "ground-glass": -620.0}

LEFT_LUNG = Ellipsoid((68.0, 0.0, -185.0), (52.0, 68.0, 80.0))
RIGHT_LUNG = Ellipsoid((-70.0, 0.0, -188.0), (56.0, 70.0, 82.0))
HEART = Ellipsoid((18.0, -22.0, -222.0), (44.0, 40.0, 46.0))

_PATHOLOGY = {
    "malignant": (("adenocarcinoma", "腺癌"), ("squamous cell carcinoma", "鳞状细胞癌"),
                  ("small cell carcinoma", "小细胞癌")),
    "benign": (("hamartoma", "错构瘤"), ("granuloma", "肉芽肿"), ("inflammatory pseudotumour", "炎性假瘤")),
}


def identity(options: SampleOptions) -> Identity:
    """The fake patient of this sample."""
    return make_identity(options.seed, options.kind,
                         history="cough for three months, 30 pack-years smoker, nodule on outside chest X-ray")


def base_geometry(n_slices: int) -> ImageGeometry:
    """The axial head-first-supine grid (before ``oblique``)."""
    half = (MATRIX - 1) * PIXEL_SPACING_MM / 2.0
    z0 = Z_CENTRE_MM - (n_slices - 1) * SLICE_SPACING_MM / 2.0
    return ImageGeometry((MATRIX, MATRIX, n_slices), (PIXEL_SPACING_MM, PIXEL_SPACING_MM, SLICE_SPACING_MM),
                         (-half, -half, z0))


def anatomy() -> Phantom:
    """Chest phantom without nodules (LPS millimetres, fixed in patient space)."""
    ph = Phantom()
    ph.add("table_shell", Box((-210.0, 121.0, -2000.0), (210.0, 135.0, 2000.0)))
    ph.add("table_foam", Box((-200.0, 124.0, -2000.0), (200.0, 132.0, 2000.0)))
    ph.add("fat", EllipticCylinder((0.0, 0.0), (165.0, 115.0), -2000.0, 2000.0))
    ph.add("muscle", EllipticCylinder((0.0, 2.0), (156.0, 106.0), -2000.0, 2000.0))
    ribs = Difference(EllipticCylinder((0.0, 0.0), (150.0, 100.0), -290.0, -85.0),
                      EllipticCylinder((0.0, 0.0), (141.0, 91.0), -2000.0, 2000.0))
    ph.add("bone_cortical", Banded(ribs, period_mm=26.0, thickness_mm=9.0, phase_mm=3.0, tilt=0.35))
    ph.add("mediastinum", EllipticCylinder((0.0, -8.0), (26.0, 62.0), -2000.0, 2000.0))
    ph.add("lung_right", RIGHT_LUNG)
    ph.add("lung_left", LEFT_LUNG)
    ph.add("heart", HEART)
    ph.add("blood", EllipticCylinder((22.0, 38.0), (12.0, 12.0), -2000.0, -150.0))  # descending aorta
    ph.add("blood", Ellipsoid((8.0, 5.0, -150.0), (14.0, 34.0, 14.0)))  # aortic arch
    ph.add("airway", EllipticCylinder((0.0, -2.0), (9.0, 8.0), -150.0, 2000.0))
    vertebra = EllipticCylinder((0.0, 72.0), (19.0, 16.0), -2000.0, 2000.0)
    ph.add("bone_cortical", Banded(vertebra, period_mm=27.0, thickness_mm=22.0))
    ph.add("bone_cancellous", Banded(EllipticCylinder((0.0, 72.0), (16.5, 13.5), -2000.0, 2000.0),
                                     period_mm=27.0, thickness_mm=22.0, phase_mm=-1.0))
    ph.add("bone_cortical", Banded(EllipticCylinder((0.0, 104.0), (6.0, 12.0), -2000.0, 2000.0),
                                   period_mm=27.0, thickness_mm=18.0, phase_mm=6.0, tilt=-0.3))
    ph.add("csf", EllipticCylinder((0.0, 94.0), (7.5, 6.5), -2000.0, 2000.0))
    return ph


def _tnm(diameter_mm: float, rng: np.random.Generator) -> Tuple[Dict[str, str], str, str]:
    t = "T1a" if diameter_mm <= 10 else ("T1b" if diameter_mm <= 20 else "T1c")
    n = ("N0", "N1", "N2")[int(rng.choice(3, p=[0.8, 0.15, 0.05]))]
    stage = {"N0": {"T1a": "IA1", "T1b": "IA2", "T1c": "IA3"}[t], "N1": "IIB", "N2": "IIIA"}[n]
    return {"T": t, "N": n, "M": "M0"}, f"{t}{n}M0", stage


def place_nodules(ctx: Context, z_range: Tuple[float, float]) -> List[Dict[str, Any]]:
    """2-4 nodules inside the lungs, clear of the heart and of each other, within ``z_range``."""
    rng = ctx.rng("nodules")
    count = int(rng.integers(2, 5))
    nodules: List[Dict[str, Any]] = []
    attempts = 0
    while len(nodules) < count and attempts < 5000:
        attempts += 1
        diameter = float(rng.uniform(3.0, 15.0))
        r = diameter / 2.0
        side = "left" if rng.random() < 0.5 else "right"
        lung = LEFT_LUNG if side == "left" else RIGHT_LUNG
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        depth = float(rng.uniform(0.0, 1.0)) ** (1.0 / 3.0)
        centre = np.asarray(lung.centre) + direction * depth * (np.asarray(lung.semi_axes) - r - 4.0)
        lo, hi = z_range
        margin = r + 1.0 if hi - lo > 2.0 * r + 2.0 else 0.0  # thin coverage: the centre inside suffices
        if not lo + margin <= centre[2] <= hi - margin:
            continue
        grown_heart = Ellipsoid(HEART.centre, vec3(a + r + 5.0 for a in HEART.semi_axes))
        if grown_heart.contains(*centre):
            continue
        if any(np.linalg.norm(centre - np.asarray(o["centre_lps"])) < r + o["diameter_mm"] / 2 + 6.0
               for o in nodules):
            continue
        density = ("solid", "part-solid", "ground-glass")[int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
        ratios = (1.0, float(rng.uniform(0.75, 1.0)), float(rng.uniform(0.75, 1.0)))
        malignant = rng.random() < (0.75 if diameter >= 8.0 else 0.3)
        classification = "malignant" if malignant else "benign"
        pathology = _PATHOLOGY[classification][int(rng.integers(3))]
        if malignant:
            tnm, tnm_text, stage = _tnm(diameter, rng)
        else:
            tnm, tnm_text, stage = None, None, None
        nodules.append({
            "centre_lps": centre.tolist(), "diameter_mm": diameter,
            "semi_axes_mm": [r * q for q in ratios],
            "rotation_deg": [float(rng.uniform(0, 180)), float(rng.uniform(0, 60))],
            "lung": side, "density": density, "classification": classification,
            "pathology": pathology, "tnm": tnm, "tnm_text": tnm_text, "stage": stage,
        })
    return nodules


def nodule_shape(nodule: Dict[str, Any]) -> Ellipsoid:
    """The analytic ellipsoid of a planned nodule."""
    rot = rotation_matrix("z", nodule["rotation_deg"][0]) @ rotation_matrix("x", nodule["rotation_deg"][1])
    return Ellipsoid(vec3(nodule["centre_lps"]), vec3(nodule["semi_axes_mm"]), mat3(rot))


def build(ctx: Context) -> KindPlan:
    """Plan the ct-chest case."""
    opts = ctx.options
    base = base_geometry(opts.primary_slices)
    geometry = ctx.oblique_geometry(base) if opts.oblique else base
    phantom = anatomy()
    z_lo = float(base.slice_position_lps(0)[2])
    z_hi = float(base.slice_position_lps(base.shape[2] - 1)[2])
    nodules = place_nodules(ctx, (z_lo, z_hi))
    for n, nodule in enumerate(nodules, start=1):
        phantom.add(f"nodule_{n}", nodule_shape(nodule))
    lut = phantom.lookup(HU, default=HU["muscle"])
    for n, nodule in enumerate(nodules, start=1):
        lut[phantom.tissue(f"nodule_{n}")] = NODULE_HU[nodule["density"]]
    label_lut = np.zeros(len(phantom.tissues), dtype=np.uint8)
    label_lut[phantom.tissue("lung_left")] = 1
    label_lut[phantom.tissue("lung_right")] = 2
    for n in range(1, len(nodules) + 1):
        label_lut[phantom.tissue(f"nodule_{n}")] = NODULE_LABEL_BASE + n

    def values(k: int, tissue: np.ndarray) -> np.ndarray:
        noise = ctx.rng("noise", "CT", k).standard_normal(tissue.shape, dtype=np.float32) * NOISE_HU
        return lut[tissue] + noise

    study = make_study(ctx, "CT", "CT CHEST WITHOUT CONTRAST")
    attributes = {
        "KVP": "120", "ConvolutionKernel": "B60f", "DataCollectionDiameter": "500",
        "ReconstructionDiameter": "360", "DistanceSourceToDetector": "1085.6", "DistanceSourceToPatient": "595",
        "GantryDetectorTilt": "0", "TableHeight": "160", "RotationDirection": "CW", "ExposureTime": 500,
        "XRayTubeCurrent": 180, "Exposure": 90, "FilterType": "FLAT", "GeneratorPower": 24,
        "FocalSpots": ["1.2"], "CTDIvol": 7.6, "SpiralPitchFactor": 1.0, "ScanOptions": "HELICAL MODE",
        "SingleCollimationWidth": 0.625, "TotalCollimationWidth": 40.0, "TableSpeed": 40.0,
        "WindowCenter": ["-600", "40"], "WindowWidth": ["1500", "400"],
        "WindowCenterWidthExplanation": ["LUNG", "MEDIASTINUM"],
        "SliceThickness": "1.25",
    }
    series = make_series(ctx, study, "CT", "CT", number=2, description="Chest 1.25mm B60f", minutes_after=3.0,
                         frame_of_reference_uid=ctx.uid("frame-of-reference"), body_part="CHEST",
                         protocol="Chest HR 1.25", model_name="SynthCT 128", attributes=attributes)
    volume = VolumePlan(
        key="CT", folder="CT_CHEST", modality="CT", geometry=geometry,
        encoding=PixelEncoding(16, 12, 0, rescale=True, rescale_intercept=-1024.0, rescale_type="HU"),
        sampler=PhantomSampler(phantom, geometry), values=values, study=study, series=series,
        label_lut=label_lut, oblique=opts.oblique,
        description="Thin-slice chest CT (HU), uint16 BitsStored 12, RescaleIntercept -1024")
    return KindPlan(volumes=[volume], studies=[study], finish=_finish, finish_work=1,
                    data={"nodules": nodules, "phantom": phantom})


def _finish(ctx: Context, plan: KindPlan) -> KindResult:
    volume = plan.volume("CT")
    geometry = volume.geometry
    assert volume.labels is not None
    write_labelmap_nifti(ctx.path("ground_truth/ct_labels.nii.gz"), volume.labels, geometry)
    numbers = head_to_feet_instance_numbers(geometry)
    rng = ctx.rng("follow-up")
    entries = []
    for n, nodule in enumerate(plan.data["nodules"], start=1):
        centre = np.asarray(nodule["centre_lps"])
        ijk = geometry.lps_to_ijk(centre)
        i, j, k = (round(float(v)) for v in ijk)
        k = min(max(k, 0), geometry.shape[2] - 1)
        value = NODULE_LABEL_BASE + n
        a, b, c = nodule["semi_axes_mm"]
        entries.append({
            "id": f"N{n}",
            "label_value": value,
            "centre_lps_mm": rounded(centre),
            "centre_ijk": rounded(ijk),
            "x": i, "y": j, "k": k, "z": k + 1,
            "instance_number": numbers[k],
            "sop_instance_uid": instance_uid(volume.series.series_instance_uid, k),
            "diameter_mm": round(2.0 * max(a, b, c), 3),
            "semi_axes_mm": rounded([a, b, c], 3),
            "volume_mm3": round(4.0 / 3.0 * math.pi * a * b * c, 2),
            "n_voxels": int(np.count_nonzero(volume.labels == value)),
            "lung": nodule["lung"],
            "density": nodule["density"],
            "mean_hu": NODULE_HU[nodule["density"]],
            "classification": nodule["classification"],
            "pathology_type": nodule["pathology"][0],
            "pathology_type_zh": nodule["pathology"][1],
            "tnm": nodule["tnm"],
            "tnm_text": nodule["tnm_text"],
            "clinical_stage": nodule["stage"],
        })
    write_json(ctx.path("ground_truth/nodules.json"), {
        "series_key": "CT",
        "series_instance_uid": volume.series.series_instance_uid,
        "conventions": {
            "x": "column of the nodule centre on its slice, pixels from the top-left corner, increasing to the right",
            "y": "row of the nodule centre, pixels from the top-left corner, increasing downwards",
            "k": "0-based slice index in ascending position order along the slice normal",
            "z": "seed 001 style 1-based slice number in ascending position order (k + 1)",
            "instance_number": "InstanceNumber of slice k (numbers run head to feet, unlike k)",
            "tnm": "AJCC 8th edition, malignant nodules only (null for benign)",
        },
        "nodules": entries,
    })
    ident = ctx.identity
    dead = int(rng.random() < 0.35)
    follow_up = {
        "ID": ident.patient_id,
        "Gender": ident.sex,
        "Age": int(ident.age[:3]),
        "Smoke": ("never", "former", "current")[int(rng.integers(3))],
        "smoking_pack_years": int(rng.integers(0, 50)),
        "status_death": dead,
        "survival_months": round(float(rng.uniform(4.0, 84.0)), 1),
        "recurrence": int(rng.random() < 0.3),
        "conventions": {"status_death": "1 = died (event), 0 = censored at last follow-up",
                        "survival_months": "months from the CT to death or censoring",
                        "recurrence": "1 = recurrence observed during follow-up"},
    }
    write_json(ctx.path("ground_truth/follow_up.json"), follow_up)
    specs = [RoiSpec(1, "Lung_L", 1, (194, 105, 66), "ORGAN", "LUNG_LEFT"),
             RoiSpec(2, "Lung_R", 2, (121, 92, 197), "ORGAN", "LUNG_RIGHT")]
    specs += [RoiSpec(2 + n, f"Nodule_{e['id']}", e["label_value"], (255, 0, 0), "GTV", f"NODULE_{e['id'][1:]}")
              for n, e in enumerate(entries, start=1)]
    structure_set = write_structure_set(ctx, volume, specs, label="LUNG NODULES", name="Lungs and nodules",
                                        description="RTSTRUCT lungs and nodules", series_number=102,
                                        minutes_after=30.0)
    ctx.step()
    labels = [{"value": v, "code": code, "name": name} for v, (code, name) in LABELS.items()]
    labels += [{"value": e["label_value"], "code": f"NODULE_{e['id'][1:]}", "name": f"lung nodule {e['id']}"}
               for e in entries]
    return KindResult(extra={"structure_sets": [structure_set]}, ground_truth=[
        ground_truth_entry(structure_set, "RT Structure Set on the CT: Lung_L, Lung_R (with holes where nodules are) "
                                          "and one ROI per nodule, exported from ct_labels.nii.gz along voxel "
                                          "boundaries (imports back exactly)."),
        {"name": "labels", "path": "ground_truth/ct_labels.nii.gz", "format": "nifti", "series_key": "CT",
         "labels": labels, "description": "Labelmap on the CT grid: lungs (vessels excluded) and each nodule."},
        {"name": "nodules", "path": "ground_truth/nodules.json", "format": "json", "series_key": "CT",
         "description": "Nodule list in seed 001 style: x, y, k/z, InstanceNumber, size, class, pathology, TNM."},
        {"name": "follow_up", "path": "ground_truth/follow_up.json", "format": "json", "series_key": None,
         "description": "Seed 001 follow-up row: gender, age, smoking, death/censor flag, survival, recurrence."},
    ])
