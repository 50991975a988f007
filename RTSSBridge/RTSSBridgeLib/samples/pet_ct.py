"""``pet-ct``: FDG PET and low-dose CT of one study on different grids (R-8.4.1, R-7.2).

* ``CT`` (primary, SeriesNumber 2): 512 x 512 at 0.9765625 mm, 3 mm slices, 100 slices by
  default; int16 (PixelRepresentation 1, BitsStored 16) with RescaleIntercept -1024.
* ``PT`` (SeriesNumber 3): 192 x 192 at 3.6458 mm, 3.27 mm slices, 91 slices, its own origin;
  Units BQML, uint16 with a float RescaleSlope per slice, DecayCorrection START, full
  RadiopharmaceuticalInformationSequence (F-18 FDG).

Both share the FrameOfReferenceUID and are aligned (no motion). The torso phantom (compressed
craniocaudally so that chest, liver, kidneys and bladder fit in 30 cm) has body, lungs, heart,
liver, kidneys, bladder and spine; 2-3 FDG-avid lesions. Ground truth: lesion labelmaps on
both grids (``ct_lesions.nii.gz``, ``pet_lesions.nii.gz``: lesion n has value n),
``lesions.json`` and the SUV parameters in ``case.json`` ``suv``.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Dict, List

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
from .dicom_writer import PixelEncoding, format_ds
from .ground_truth import write_json, write_labelmap_nifti
from .identity import Identity, add_seconds, make_identity
from .phantom import Banded, Box, Ellipsoid, EllipticCylinder, Phantom, PhantomSampler, sphere, vec3

CT_MATRIX = 512
CT_PIXEL_MM = 500.0 / 512.0
CT_SLICE_MM = 3.0
CT_Z_CENTRE = -200.0
PET_MATRIX = 192
PET_PIXEL_MM = 700.0 / 192.0
PET_SLICE_MM = 3.27
PET_SLICES = 91
PET_ORIGIN_SHIFT = (1.8, -2.4)
PET_Z_CENTRE = -198.0
HALF_LIFE_S = 6586.2
UPTAKE_MINUTES = 62.0
CT_NOISE_HU = 18.0
PET_RELATIVE_NOISE = 0.12

HU: Dict[str, float] = {
    "background": -1000.0, "fat": -100.0, "muscle": 45.0, "table_shell": 250.0, "table_foam": -900.0,
    "lung": -840.0, "myocardium": 45.0, "blood_pool": 40.0, "liver": 58.0, "kidney": 32.0, "bladder": 8.0,
    "bone_cortical": 850.0, "bone_cancellous": 200.0,
}
SUV: Dict[str, float] = {
    "background": 0.0, "fat": 0.35, "muscle": 0.8, "table_shell": 0.0, "table_foam": 0.0, "lung": 0.35,
    "myocardium": 4.5, "blood_pool": 1.7, "liver": 2.3, "kidney": 3.2, "bladder": 22.0,
    "bone_cortical": 0.6, "bone_cancellous": 1.2,
}
LESION_TYPES = {  # name, organ, radius range (mm), SUV range, HU
    "lung": ("lung nodule", (6.0, 12.0), (7.0, 14.0), 30.0),
    "liver": ("liver metastasis", (8.0, 14.0), (6.0, 10.0), 35.0),
    "node": ("mediastinal lymph node", (6.0, 10.0), (5.0, 8.0), 38.0),
}
LUNGS = {"left": Ellipsoid((75.0, 0.0, -140.0), (58.0, 70.0, 85.0)),
         "right": Ellipsoid((-75.0, 0.0, -135.0), (62.0, 72.0, 88.0))}
LIVER = Ellipsoid((-65.0, -5.0, -255.0), (85.0, 80.0, 52.0))
HEART = Ellipsoid((20.0, -25.0, -175.0), (50.0, 45.0, 45.0))


def identity(options: SampleOptions) -> Identity:
    """The fake patient of this sample."""
    return make_identity(options.seed, options.kind,
                         history="right upper lobe mass on CT, staging FDG PET-CT, fasting 6 h, glucose 5.6 mmol/l")


def ct_base_geometry(n_slices: int) -> ImageGeometry:
    """The axial CT grid (before ``oblique``)."""
    half = (CT_MATRIX - 1) * CT_PIXEL_MM / 2.0
    z0 = CT_Z_CENTRE - (n_slices - 1) * CT_SLICE_MM / 2.0
    return ImageGeometry((CT_MATRIX, CT_MATRIX, n_slices), (CT_PIXEL_MM, CT_PIXEL_MM, CT_SLICE_MM), (-half, -half, z0))


def pet_geometry() -> ImageGeometry:
    """The PET grid: coarser pixels and slices, its own origin, same frame of reference."""
    half = (PET_MATRIX - 1) * PET_PIXEL_MM / 2.0
    z0 = PET_Z_CENTRE - (PET_SLICES - 1) * PET_SLICE_MM / 2.0
    return ImageGeometry((PET_MATRIX, PET_MATRIX, PET_SLICES), (PET_PIXEL_MM, PET_PIXEL_MM, PET_SLICE_MM),
                         (-half + PET_ORIGIN_SHIFT[0], -half + PET_ORIGIN_SHIFT[1], z0))


def place_lesions(ctx: Context) -> List[Dict[str, Any]]:
    """2-3 FDG-avid lesions: lung, liver and/or mediastinal node."""
    rng = ctx.rng("lesions")
    count = int(rng.integers(2, 4))
    kinds = list(rng.permutation(["lung", "liver", "node"]))[:count]
    lesions = []
    for kind in kinds:
        name, (r_lo, r_hi), (s_lo, s_hi), hu = LESION_TYPES[str(kind)]
        r = float(rng.uniform(r_lo, r_hi))
        if kind == "lung":
            side = "left" if rng.random() < 0.5 else "right"
            lung = LUNGS[side]
            clear_of = Ellipsoid(HEART.centre, vec3(a + r + 6.0 for a in HEART.semi_axes))
            while True:
                offset = rng.uniform(-0.45, 0.45, size=3) * (np.asarray(lung.semi_axes) - r)
                centre = np.asarray(lung.centre) + offset
                if not clear_of.contains(*centre):
                    break
            organ = f"{side} lung"
        elif kind == "liver":
            offset = rng.uniform(-0.4, 0.4, size=3) * (np.asarray(LIVER.semi_axes) - r)
            offset[2] = -abs(offset[2])  # keep it away from the dome under the lung
            centre = np.asarray(LIVER.centre) + offset
            organ = "liver"
        else:
            centre = np.array([float(rng.uniform(-12.0, 8.0)), float(rng.uniform(-20.0, 0.0)),
                               float(rng.uniform(-125.0, -105.0))])
            organ = "mediastinum"
        lesions.append({"type": name, "organ": organ, "centre_lps": centre.tolist(), "radius_mm": r,
                        "suv": float(rng.uniform(s_lo, s_hi)), "hu": hu})
    return lesions


def anatomy(lesions: List[Dict[str, Any]]) -> Phantom:
    """Torso phantom with the planned lesions (LPS mm)."""
    ph = Phantom()
    ph.add("table_shell", Box((-220.0, 126.0, -2000.0), (220.0, 140.0, 2000.0)))
    ph.add("table_foam", Box((-210.0, 129.0, -2000.0), (210.0, 137.0, 2000.0)))
    ph.add("fat", EllipticCylinder((0.0, 0.0), (175.0, 120.0), -2000.0, 2000.0))
    ph.add("muscle", EllipticCylinder((0.0, 2.0), (163.0, 110.0), -2000.0, 2000.0))
    ph.add("lung", LUNGS["left"])
    ph.add("lung", LUNGS["right"])
    ph.add("liver", LIVER)
    ph.add("myocardium", HEART)
    ph.add("blood_pool", Ellipsoid(HEART.centre, (32.0, 28.0, 28.0)))
    ph.add("kidney", Ellipsoid((68.0, 55.0, -300.0), (25.0, 20.0, 45.0)))
    ph.add("kidney", Ellipsoid((-68.0, 55.0, -305.0), (25.0, 20.0, 45.0)))
    ph.add("bladder", Ellipsoid((0.0, -25.0, -345.0), (42.0, 35.0, 28.0)))
    ph.add("bone_cortical", Banded(EllipticCylinder((0.0, 75.0), (20.0, 17.0), -2000.0, 2000.0),
                                   period_mm=28.0, thickness_mm=23.0))
    ph.add("bone_cancellous", Banded(EllipticCylinder((0.0, 75.0), (17.0, 14.0), -2000.0, 2000.0),
                                     period_mm=28.0, thickness_mm=23.0, phase_mm=-1.0))
    for n, lesion in enumerate(lesions, start=1):
        ph.add(f"lesion_{n}", sphere(lesion["centre_lps"], lesion["radius_mm"]))
    return ph


def suv_parameters(ctx: Context, series_date: str, series_time: str) -> Dict[str, Any]:
    """Dose, times and the Bq/ml -> SUVbw factor of this sample."""
    ident = ctx.identity
    rng = ctx.rng("dose")
    dose = round(float(ident.weight_kg * rng.uniform(3.4, 4.0) * 1e6), -4)
    start = _dt.datetime.strptime(series_date + series_time[:6], "%Y%m%d%H%M%S")
    injection = start - _dt.timedelta(minutes=UPTAKE_MINUTES)
    elapsed = (start - injection).total_seconds()
    decay = math.exp(-math.log(2.0) * elapsed / HALF_LIFE_S)
    return {
        "series_key": "PT", "units": "BQML", "weight_kg": ident.weight_kg, "injected_dose_bq": dose,
        "injection_datetime": f"{injection:%Y%m%d%H%M%S}.000000",
        "series_datetime": f"{start:%Y%m%d%H%M%S}.000000",
        "half_life_s": HALF_LIFE_S, "decay_correction": "START",
        "decay_factor_to_series_start": round(decay, 10),
        "bqml_to_suv_bw": (ident.weight_kg * 1000.0) / (dose * decay),
    }


def build(ctx: Context) -> KindPlan:
    """Plan the pet-ct case."""
    opts = ctx.options
    base = ct_base_geometry(opts.primary_slices)
    ct_geometry = ctx.oblique_geometry(base) if opts.oblique else base
    pt_geometry = pet_geometry()
    lesions = place_lesions(ctx)
    phantom = anatomy(lesions)
    hu_lut = phantom.lookup(HU, default=HU["muscle"])
    suv_lut = phantom.lookup(SUV, default=SUV["muscle"])
    label_lut = np.zeros(len(phantom.tissues), dtype=np.uint8)
    for n, lesion in enumerate(lesions, start=1):
        t = phantom.tissue(f"lesion_{n}")
        hu_lut[t] = lesion["hu"]
        suv_lut[t] = lesion["suv"]
        label_lut[t] = n
    study = make_study(ctx, "PETCT", "PET-CT WHOLE BODY FDG")
    frame_uid = ctx.uid("frame-of-reference")
    ct_series = make_series(
        ctx, study, "CT", "CT", number=2, description="CT WB 3.0 B30f", minutes_after=1.0,
        frame_of_reference_uid=frame_uid, body_part="WHOLEBODY", protocol="PET-CT WB FDG", model_name="SynthPET/CT 64",
        attributes={"KVP": "120", "ConvolutionKernel": "B30f", "XRayTubeCurrent": 60, "ExposureTime": 500,
                    "Exposure": 30, "ReconstructionDiameter": "500", "DataCollectionDiameter": "500",
                    "GantryDetectorTilt": "0", "TableHeight": "150", "RotationDirection": "CW",
                    "FilterType": "FLAT", "CTDIvol": 2.9, "SpiralPitchFactor": 0.8,
                    "WindowCenter": "40", "WindowWidth": "400", "SliceThickness": format_ds(CT_SLICE_MM)})
    pt_time_minutes = 4.0
    suv = suv_parameters(ctx, study.date, add_seconds(study.time, 60.0 * pt_time_minutes))
    dose_at_start = suv["injected_dose_bq"] * suv["decay_factor_to_series_start"]
    bqml_per_suv = dose_at_start / (ctx.identity.weight_kg * 1000.0)
    inj = suv["injection_datetime"]
    pt_series = make_series(
        ctx, study, "PT", "PT", number=3, description="PET WB AC", minutes_after=pt_time_minutes,
        frame_of_reference_uid=frame_uid, body_part="WHOLEBODY", protocol="PET-CT WB FDG",
        model_name="SynthPET/CT 64",
        attributes={
            "SeriesType": ["WHOLE BODY", "IMAGE"], "Units": "BQML", "CountsSource": "EMISSION",
            "DecayCorrection": "START", "CorrectedImage": ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"],
            "ReconstructionMethod": "OSEM 3i21s", "RandomsCorrectionMethod": "DLYD",
            "AttenuationCorrectionMethod": "measured, CT-based", "ScatterCorrectionMethod": "model-based",
            "DecayFactor": "1", "FrameReferenceTime": "0", "ActualFrameDuration": 120000,
            "SliceSensitivityFactor": "1", "DoseCalibrationFactor": "1", "AxialAcceptance": "27",
            "NumberOfTimeSlices": 1, "ImageType": ["ORIGINAL", "PRIMARY"],
            "SliceThickness": format_ds(PET_SLICE_MM), "CollimatorType": "NONE",
            "PatientGantryRelationshipCodeSequence": [{"CodeValue": "102540008", "CodingSchemeDesignator": "SCT",
                                                       "CodeMeaning": "headfirst"}],
            "PatientOrientationCodeSequence": [{
                "CodeValue": "102538003", "CodingSchemeDesignator": "SCT", "CodeMeaning": "recumbent",
                "PatientOrientationModifierCodeSequence": [{"CodeValue": "40199007", "CodingSchemeDesignator": "SCT",
                                                            "CodeMeaning": "supine"}]}],
            "RadiopharmaceuticalInformationSequence": [{
                "Radiopharmaceutical": "Fluorodeoxyglucose",
                "RadiopharmaceuticalStartTime": inj[8:],
                "RadiopharmaceuticalStartDateTime": inj,
                "RadionuclideTotalDose": format_ds(suv["injected_dose_bq"]),
                "RadionuclideHalfLife": format_ds(HALF_LIFE_S),
                "RadionuclidePositronFraction": "0.9673",
                "RadiopharmaceuticalRoute": "Intravenous route",
                "RadionuclideCodeSequence": [{"CodeValue": "77004003", "CodingSchemeDesignator": "SCT",
                                              "CodeMeaning": "^18^Fluorine"}],
                "RadiopharmaceuticalCodeSequence": [{"CodeValue": "35321007", "CodingSchemeDesignator": "SCT",
                                                     "CodeMeaning": "Fluorodeoxyglucose F^18^"}],
            }],
            "WindowCenter": format_ds(3.0 * bqml_per_suv), "WindowWidth": format_ds(6.0 * bqml_per_suv),
        })

    def ct_values(k: int, tissue: np.ndarray) -> np.ndarray:
        noise = ctx.rng("noise", "CT", k).standard_normal(tissue.shape, dtype=np.float32) * CT_NOISE_HU
        return hu_lut[tissue] + noise

    def pt_values(k: int, tissue: np.ndarray) -> np.ndarray:
        mean = suv_lut[tissue] * bqml_per_suv
        noise = ctx.rng("noise", "PT", k).standard_normal(tissue.shape, dtype=np.float32)
        return np.maximum(mean * (1.0 + PET_RELATIVE_NOISE * noise) + 0.02 * bqml_per_suv * noise, 0.0)

    volumes = [
        VolumePlan(key="CT", folder="CT_WB", modality="CT", geometry=ct_geometry,
                   encoding=PixelEncoding(16, 16, 1, rescale=True, rescale_intercept=-1024.0, rescale_type="HU"),
                   sampler=PhantomSampler(phantom, ct_geometry), values=ct_values, study=study, series=ct_series,
                   role="primary", label_lut=label_lut, oblique=opts.oblique,
                   description="Low-dose CT of the PET-CT: int16 (PixelRepresentation 1, BitsStored 16), "
                               "RescaleIntercept -1024"),
        VolumePlan(key="PT", folder="PT_WB", modality="PT", geometry=pt_geometry,
                   encoding=PixelEncoding(16, 16, 0, rescale=True, per_slice_slope=True),
                   sampler=PhantomSampler(phantom, pt_geometry), values=pt_values, study=study, series=pt_series,
                   role="secondary", label_lut=label_lut,
                   description="FDG PET in Bq/ml: uint16 with a float RescaleSlope per slice, intercept 0"),
    ]
    return KindPlan(volumes=volumes, studies=[study], finish=_finish, finish_work=1,
                    data={"lesions": lesions, "suv": suv, "bqml_per_suv": bqml_per_suv})


def _finish(ctx: Context, plan: KindPlan) -> KindResult:
    ct, pt = plan.volume("CT"), plan.volume("PT")
    assert ct.labels is not None and pt.labels is not None
    write_labelmap_nifti(ctx.path("ground_truth/ct_lesions.nii.gz"), ct.labels, ct.geometry)
    write_labelmap_nifti(ctx.path("ground_truth/pet_lesions.nii.gz"), pt.labels, pt.geometry)
    entries = []
    for n, lesion in enumerate(plan.data["lesions"], start=1):
        centre = np.asarray(lesion["centre_lps"])
        r = lesion["radius_mm"]
        entries.append({
            "id": f"L{n}", "label_value": n, "type": lesion["type"], "organ": lesion["organ"],
            "centre_lps_mm": rounded(centre), "radius_mm": round(r, 3),
            "volume_mm3": round(4.0 / 3.0 * math.pi * r**3, 2),
            "centre_ijk_ct": rounded(ct.geometry.lps_to_ijk(centre)),
            "centre_ijk_pet": rounded(pt.geometry.lps_to_ijk(centre)),
            "n_voxels_ct": int(np.count_nonzero(ct.labels == n)),
            "n_voxels_pet": int(np.count_nonzero(pt.labels == n)),
            "suv_mean_intended": round(lesion["suv"], 3),
            "bqml_mean_intended": round(lesion["suv"] * plan.data["bqml_per_suv"], 2),
            "hu_mean_intended": lesion["hu"],
        })
    write_json(ctx.path("ground_truth/lesions.json"), {
        "frame_of_reference_uid": ct.series.frame_of_reference_uid,
        "suv": plan.data["suv"],
        "background_suv": {k: v for k, v in SUV.items() if v > 0},
        "lesions": entries,
    })
    ctx.step()
    labels = [{"value": e["label_value"], "code": f"LESION_{e['label_value']}", "name": e["type"]} for e in entries]
    return KindResult(
        ground_truth=[
            {"name": "ct_lesions", "path": "ground_truth/ct_lesions.nii.gz", "format": "nifti", "series_key": "CT",
             "labels": labels, "description": "Lesion labelmap on the CT grid."},
            {"name": "pet_lesions", "path": "ground_truth/pet_lesions.nii.gz", "format": "nifti", "series_key": "PT",
             "labels": labels, "description": "Lesion labelmap on the PET grid (same lesions, same values)."},
            {"name": "lesions", "path": "ground_truth/lesions.json", "format": "json", "series_key": "PT",
             "description": "Lesion list with centres, sizes, intended SUV/HU, and the SUV parameters."},
        ],
        extra={"suv": plan.data["suv"]})
