"""``us-thyroid``: one transverse ultrasound image of the right thyroid lobe with a nodule (Appendix A).

640 x 480, 8-bit MONOCHROME2, Ultrasound Image Storage, one SequenceOfUltrasoundRegions item
(region 560 x 400 pixels, PhysicalDeltaX/Y 0.0075 cm, i.e. 0.075 mm pixels, depth 30 mm).
Anatomy: skin, fat, strap and sternocleidomastoid muscles, thyroid lobe, carotid artery and
jugular vein (anechoic, posterior enhancement), trachea (bright wall, reverberation shadow),
longus colli, and a nodule whose ACR TI-RADS features (composition, echogenicity, shape,
margin, echogenic foci) are chosen per seed and drawn accordingly. Speckle is a filtered complex
Gaussian field (Rayleigh amplitude).

Ground truth: ``us_nodule_mask.nii.gz`` (shape (columns, rows, 1), value 1 = nodule, spacing from
the US region) and ``nodule.json`` (bounding box, size, TI-RADS points and level, report text).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
from scipy import ndimage

from ..geometry import ImageGeometry
from .case import Context, KindPlan, KindResult, SampleOptions, make_series, make_study, rounded, series_json
from .dicom_writer import SOP_CLASS_UIDS, PixelEncoding, file_name_for, instance_uid, write_single_image
from .ground_truth import write_json, write_labelmap_nifti
from .identity import Identity, make_identity

COLUMNS, ROWS = 640, 480
REGION = (40, 40, 599, 439)  # MinX0, MinY0, MaxX1, MaxY1 (inclusive pixel bounds)
REFERENCE_PIXEL = (320, 40)  # lateral 0 mm at the centre column, depth 0 mm at the skin line
DELTA_CM = 0.0075
PIXEL_MM = 0.075

#: ACR TI-RADS points per feature value.
TIRADS_POINTS: Dict[str, Dict[str, int]] = {
    "composition": {"cystic or almost completely cystic": 0, "spongiform": 0, "mixed cystic and solid": 1,
                    "solid or almost completely solid": 2},
    "echogenicity": {"anechoic": 0, "hyperechoic or isoechoic": 1, "hypoechoic": 2, "very hypoechoic": 3},
    "shape": {"wider-than-tall": 0, "taller-than-wide": 3},
    "margin": {"smooth": 0, "ill-defined": 0, "lobulated or irregular": 2, "extra-thyroidal extension": 3},
    "echogenic_foci": {"none or large comet-tail artifacts": 0, "macrocalcifications": 1,
                       "peripheral (rim) calcifications": 2, "punctate echogenic foci": 3},
}
ECHO = {"hyperechoic or isoechoic": 0.6, "hypoechoic": 0.27, "very hypoechoic": 0.12}


def identity(options: SampleOptions) -> Identity:
    """The fake patient of this sample."""
    return make_identity(options.seed, options.kind, history="palpable neck lump, TSH normal")


def tirads_level(points: int) -> str:
    """ACR TI-RADS level from total points."""
    if points == 0:
        return "TR1"
    if points <= 2:
        return "TR2"
    if points == 3:
        return "TR3"
    if points <= 6:
        return "TR4"
    return "TR5"


def physical_coordinates() -> Tuple[np.ndarray, np.ndarray]:
    """Lateral (mm, + to the image right) and depth (mm) of every pixel centre, arrays [row, column]."""
    cols = (np.arange(COLUMNS, dtype=np.float64) - REFERENCE_PIXEL[0]) * PIXEL_MM
    rows = (np.arange(ROWS, dtype=np.float64) - REFERENCE_PIXEL[1]) * PIXEL_MM
    return np.broadcast_to(cols[None, :], (ROWS, COLUMNS)), np.broadcast_to(rows[:, None], (ROWS, COLUMNS))


def _ellipse(x: np.ndarray, d: np.ndarray, cx: float, cd: float, a: float, b: float) -> np.ndarray:
    return ((x - cx) / a) ** 2 + ((d - cd) / b) ** 2 <= 1.0


def plan_nodule(ctx: Context) -> Dict[str, Any]:
    """Nodule position, size and TI-RADS features (deterministic per seed)."""
    rng = ctx.rng("nodule")
    a = float(rng.uniform(3.0, 6.5))
    taller = rng.random() < 0.3
    b = min(a * float(rng.uniform(1.1, 1.35) if taller else rng.uniform(0.6, 0.9)), 6.3)
    features = {
        "composition": "solid or almost completely solid" if rng.random() < 0.75 else "mixed cystic and solid",
        "echogenicity": ("hypoechoic", "very hypoechoic", "hyperechoic or isoechoic")[
            int(rng.choice(3, p=[0.55, 0.25, 0.2]))],
        "shape": "taller-than-wide" if b > a else "wider-than-tall",
        "margin": "lobulated or irregular" if rng.random() < 0.35 else "smooth",
        "echogenic_foci": ("none or large comet-tail artifacts", "punctate echogenic foci", "macrocalcifications")[
            int(rng.choice(3, p=[0.55, 0.3, 0.15]))],
    }
    points = {k: TIRADS_POINTS[k][v] for k, v in features.items()}
    foci = []
    if features["echogenic_foci"] == "punctate echogenic foci":
        for _ in range(int(rng.integers(3, 7))):
            ang, rad = float(rng.uniform(0, 2 * np.pi)), float(np.sqrt(rng.uniform(0, 0.5)))
            foci.append((rad * a * np.cos(ang), rad * b * np.sin(ang), 0.22))
    elif features["echogenic_foci"] == "macrocalcifications":
        foci.append((float(rng.uniform(-0.3, 0.3)) * a, float(rng.uniform(-0.3, 0.2)) * b, 0.9))
    return {
        "centre_mm": (float(2.0 + rng.uniform(-3.0, 3.0)), float(16.0 + rng.uniform(-1.0, 1.0))),
        "semi_mm": (a, b), "features": features, "points": points, "foci": foci,
        "lobulation": (float(rng.uniform(0.10, 0.16)), int(rng.integers(4, 7)), float(rng.uniform(0, 2 * np.pi))),
        "cyst": (float(rng.uniform(-0.2, 0.2)) * a, float(rng.uniform(-0.2, 0.2)) * b, 0.45),
    }


def render(ctx: Context, nodule: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    """Stored 8-bit image [row, column] and the nodule mask [row, column]."""
    x, d = physical_coordinates()
    echo = np.full((ROWS, COLUMNS), 0.45)
    echo[d < 3.5] = 0.35
    echo[d < 1.2] = 0.85
    echo[_ellipse(x, d, 4.0, 6.0, 16.0, 2.6)] = 0.3
    echo[_ellipse(x, d, -13.0, 6.5, 10.0, 3.5)] = 0.32
    echo[_ellipse(x, d, 2.0, 16.0, 13.0, 7.5)] = 0.62
    echo[_ellipse(x, d, -15.0, 11.0, 4.5, 2.2)] = 0.03
    carotid = _ellipse(x, d, -13.5, 18.0, 3.4, 3.4)
    echo[(np.abs(x + 13.5) < 3.4) & (d > 21.4)] *= 1.3  # posterior acoustic enhancement
    echo[carotid] = 0.03
    trachea_r = np.hypot(x - 19.0, d - 20.0)
    shadow = (np.abs(x - 19.0) < 8.0) & (d > 20.0 - np.sqrt(np.clip(64.0 - (x - 19.0) ** 2, 0, None)))
    echo[shadow] = 0.08 + 0.5 * (np.mod(d[shadow] - 12.0, 2.4) < 0.25)  # reverberation lines
    echo[(trachea_r <= 8.0) & (trachea_r >= 6.8) & (d < 20.0)] = 0.95
    echo[_ellipse(x, d, 0.0, 26.5, 9.0, 2.5)] = 0.3
    (cx, cd), (a, b) = nodule["centre_mm"], nodule["semi_mm"]
    f = nodule["features"]
    theta = np.arctan2((d - cd) / b, (x - cx) / a)
    rho = np.hypot((x - cx) / a, (d - cd) / b)
    if f["margin"] == "smooth":
        mask = rho <= 1.0
    else:
        amp, lobes, phase = nodule["lobulation"]
        mask = rho <= 1.0 + amp * np.sin(lobes * theta + phase)
    echo[mask] = ECHO[f["echogenicity"]]
    if f["echogenicity"] == "hyperechoic or isoechoic":  # a thin hypoechoic halo outlines it
        echo[mask & (rho >= 0.9)] = 0.12
    if f["composition"] == "mixed cystic and solid":
        ox, od, scale = nodule["cyst"]
        echo[mask & _ellipse(x, d, cx + ox, cd + od, scale * a, scale * b)] = 0.03
    for fx, fd, radius in nodule["foci"]:
        spot = np.hypot(x - cx - fx, d - cd - fd) <= radius
        echo[spot] = 1.0
        if radius > 0.5:  # a macrocalcification shadows what lies behind it
            echo[(np.abs(x - cx - fx) < radius * 0.8) & (d > cd + fd + radius)] *= 0.25
    rng = ctx.rng("speckle")
    field = rng.standard_normal((2, ROWS, COLUMNS)).astype(np.float32)
    field[0] = ndimage.gaussian_filter(field[0], sigma=(0.8, 1.8))
    field[1] = ndimage.gaussian_filter(field[1], sigma=(0.8, 1.8))
    speckle = np.hypot(field[0], field[1])
    speckle /= float(speckle.mean())
    gain = 1.0 - 0.15 * np.clip(d, 0.0, None) / 30.0
    image = np.clip(165.0 * echo * speckle * gain, 0.0, 255.0)
    x0, y0, x1, y1 = REGION
    stored = np.zeros((ROWS, COLUMNS), dtype=np.uint8)
    stored[y0:y1 + 1, x0:x1 + 1] = np.rint(image[y0:y1 + 1, x0:x1 + 1]).astype(np.uint8)
    for mm in range(0, 31, 5):  # depth scale ticks beside the region
        row = REFERENCE_PIXEL[1] + round(mm / PIXEL_MM)
        stored[max(row - 1, 0):row + 2, x1 + 5:x1 + (14 if mm % 10 == 0 else 10)] = 220
    region_mask = np.zeros_like(mask)
    region_mask[y0:y1 + 1, x0:x1 + 1] = True
    return stored, mask & region_mask


def build(ctx: Context) -> KindPlan:
    """Plan the us-thyroid case (the single image is written in the finish step)."""
    study = make_study(ctx, "US", "US THYROID")
    return KindPlan(volumes=[], studies=[study], finish=_finish, finish_work=2,
                    data={"study": study, "nodule": plan_nodule(ctx)})


def _finish(ctx: Context, plan: KindPlan) -> KindResult:
    study = plan.data["study"]
    nodule = plan.data["nodule"]
    x0, y0, x1, y1 = REGION
    region = {
        "RegionSpatialFormat": 1, "RegionDataType": 1, "RegionFlags": 0,
        "RegionLocationMinX0": x0, "RegionLocationMinY0": y0, "RegionLocationMaxX1": x1, "RegionLocationMaxY1": y1,
        "ReferencePixelX0": REFERENCE_PIXEL[0], "ReferencePixelY0": REFERENCE_PIXEL[1],
        "PhysicalUnitsXDirection": 3, "PhysicalUnitsYDirection": 3,
        "ReferencePixelPhysicalValueX": 0.0, "ReferencePixelPhysicalValueY": 0.0,
        "PhysicalDeltaX": DELTA_CM, "PhysicalDeltaY": DELTA_CM, "TransducerFrequency": 12000,
    }
    series = make_series(
        ctx, study, "US", "US", number=1, description="THYROID RT LOBE TRANS", minutes_after=2.0,
        frame_of_reference_uid=None, body_part="THYROID", protocol="Thyroid", model_name="SynthUS L12-5",
        patient_position=None,
        attributes={
            "ImageType": ["ORIGINAL", "PRIMARY", "SMALL PARTS", "0001"], "PatientOrientation": ["L", "P"],
            "SequenceOfUltrasoundRegions": [region], "TransducerType": "LINEAR", "TransducerData": ["L12-5"],
            "ProcessingFunction": "THYROID", "MechanicalIndex": "0.9", "BoneThermalIndex": "0.1",
            "SoftTissueThermalIndex": "0.3", "DepthOfScanField": 30,
            "AnatomicRegionSequence": [{"CodeValue": "69748006", "CodingSchemeDesignator": "SCT",
                                        "CodeMeaning": "Thyroid structure"}],
        })
    stored, mask = render(ctx, nodule)
    encoding = PixelEncoding(8, 8, 0)
    sop_uid = instance_uid(series.series_instance_uid, 0)
    folder = "US_THYROID"
    write_single_image(ctx.path(f"dicom/{folder}/{file_name_for(sop_uid)}"), stored, SOP_CLASS_UIDS["US"], sop_uid,
                       encoding=encoding, identity=ctx.identity, study=study, series=series)
    ctx.step()
    geometry = ImageGeometry((COLUMNS, ROWS, 1), (PIXEL_MM, PIXEL_MM, 1.0))
    write_labelmap_nifti(ctx.path("ground_truth/us_nodule_mask.nii.gz"), mask[None].astype(np.uint8), geometry)
    rows, cols = np.nonzero(mask)
    f, pts = nodule["features"], nodule["points"]
    total = int(sum(pts.values()))
    level = tirads_level(total)
    width = (int(cols.max()) - int(cols.min()) + 1) * PIXEL_MM
    height = (int(rows.max()) - int(rows.min()) + 1) * PIXEL_MM
    feature_zh = {"solid or almost completely solid": "实性", "mixed cystic and solid": "囊实性",
                  "hypoechoic": "低回声", "very hypoechoic": "极低回声", "hyperechoic or isoechoic": "等回声",
                  "smooth": "边缘光整", "lobulated or irregular": "边缘分叶或不规则",
                  "wider-than-tall": "纵横比小于1", "taller-than-wide": "纵横比大于1",
                  "none or large comet-tail artifacts": "未见强回声灶", "punctate echogenic foci": "内见点状强回声",
                  "macrocalcifications": "内见粗大钙化"}
    feature_en = {"solid or almost completely solid": "solid", "mixed cystic and solid": "mixed cystic and solid",
                  "hyperechoic or isoechoic": "isoechoic", "none or large comet-tail artifacts": "no echogenic foci",
                  "macrocalcifications": "a macrocalcification"}
    en = {k: feature_en.get(v, v) for k, v in f.items()}
    text_en = (f"Right thyroid lobe: a {en['composition']} {en['echogenicity']} nodule measuring "
               f"{width:.1f} x {height:.1f} mm, {en['shape']}, {en['margin']} margin, {en['echogenic_foci']}. "
               f"ACR TI-RADS {level} ({total} points).")
    text_zh = (f"甲状腺右叶见一{feature_zh[f['composition']]}{feature_zh[f['echogenicity']]}结节，大小约"
               f"{width:.1f}×{height:.1f}mm，{feature_zh[f['shape']]}，{feature_zh[f['margin']]}，"
               f"{feature_zh[f['echogenic_foci']]}。ACR TI-RADS {level}（{total}分）。")
    features: Dict[str, Any] = {k: {"value": v, "points": pts[k]} for k, v in f.items()}
    write_json(ctx.path("ground_truth/nodule.json"), {
        "series_key": "US", "sop_instance_uid": sop_uid, "file": f"dicom/{folder}/{file_name_for(sop_uid)}",
        "pixel_spacing_mm": [PIXEL_MM, PIXEL_MM],
        "spacing_source": "SequenceOfUltrasoundRegions[0] PhysicalDeltaX/Y (cm) x 10",
        "nodule": {
            "label_value": 1,
            "bbox_px": {"x_min": int(cols.min()), "y_min": int(rows.min()), "x_max": int(cols.max()),
                        "y_max": int(rows.max())},
            "bbox_convention": "inclusive pixel indices; x = column from the left, y = row from the top",
            "centroid_px": rounded([cols.mean(), rows.mean()], 3),
            "width_mm": round(width, 3), "height_mm": round(height, 3),
            "area_mm2": round(float(mask.sum()) * PIXEL_MM * PIXEL_MM, 3),
            "n_pixels": int(mask.sum()),
            "lobe": "right",
        },
        "tirads": {"system": "ACR TI-RADS 2017", "features": features, "total_points": total, "level": level},
        "report": {"text_en": text_en, "text_zh": text_zh},
    })
    ctx.step()
    entry = series_json(
        key="US", role="primary", folder=folder, modality="US", study=study, series=series, geometry=geometry,
        geometry_frame="image-pixels", n_files=1, encoding=encoding,
        options_applied={"oblique": False, "drop_slice": None, "duplicate_slice": None},
        description="Transverse B-mode image of the right thyroid lobe, 8-bit MONOCHROME2, 0.075 mm pixels "
                    "(from the ultrasound region)", instance_numbering="single image, InstanceNumber 1")
    gt: List[Dict[str, Any]] = [
        {"name": "nodule_mask", "path": "ground_truth/us_nodule_mask.nii.gz", "format": "nifti", "series_key": "US",
         "labels": [{"value": 1, "code": "THYROID_NODULE", "name": "thyroid nodule"}],
         "description": "2-D nodule mask, NIfTI shape (columns, rows, 1), spacing from the ultrasound region."},
        {"name": "nodule", "path": "ground_truth/nodule.json", "format": "json", "series_key": "US",
         "description": "Bounding box, size, TI-RADS features/points/level and report text of the nodule."},
    ]
    return KindResult(series=[entry], ground_truth=gt)
