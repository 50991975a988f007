"""``xray-ra``: CR hand and foot exams of a rheumatoid-arthritis patient (seed 004, R-004).

Two studies of one patient, linked to one case by their accession numbers as in seed 004
(``HAND BILAT`` with ``RAH00001``, ``FOOT BILAT`` with ``RAF00001`` for seed 0):

* ``CR_HAND``: both hands PA, 1200 x 1000 pixels, ImagerPixelSpacing 0.25 mm, 16-bit
  MONOCHROME1 (bone has low stored values), BitsStored 12;
* ``CR_FOOT``: both feet DP, 1000 x 1200 pixels, ImagerPixelSpacing 0.25 mm, 16-bit
  MONOCHROME2, BitsStored 12.

Bones are capsules with cortex and medulla; joint spaces are gaps whose width shrinks with the
joint-space-narrowing score (4 = ankylosis) and erosions are notches whose size grows with the
erosion score. An exam with ``Abnormal_orientation`` 1 is stored rotated by 180 degrees while
its header still claims the standard orientation.

Ground truth: ``scores.csv`` (seed 004 columns: NO., Package_im_no., REQ_H, Exam_date_H,
Abnormal_orientation_H, REQ_F, Exam_date_F, Abnormal_orientation_F, erosion_<joint>...,
JSN_<joint>...) and ``joints.json`` (every Sharp/van der Heijde joint with its pixel position
in the stored image, erosion 0-5 and JSN 0-4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from ..geometry import ImageGeometry
from .case import Context, KindPlan, KindResult, SampleOptions, make_series, make_study, series_json
from .dicom_writer import SOP_CLASS_UIDS, PixelEncoding, file_name_for, instance_uid, write_single_image
from .ground_truth import write_csv, write_json
from .identity import Identity, make_identity

PIXEL_MM = 0.25
NORMAL_GAP_MM = 1.8
THUMB_DEG = 30.0
BITS = 12
LEVEL_AIR, LEVEL_SOFT, LEVEL_MEDULLA, LEVEL_CORTEX, LEVEL_COLLIMATED = 300.0, 650.0, 800.0, 1500.0, 3900.0

#: Sharp/van der Heijde joints per hand scored for erosion (16) and for JSN (15).
HAND_EROSION = ("MCP1", "MCP2", "MCP3", "MCP4", "MCP5", "IP", "PIP2", "PIP3", "PIP4", "PIP5", "CMC1",
                "TRAPEZIUM", "SCAPHOID", "LUNATE", "RADIUS", "ULNA")
HAND_JSN = ("MCP1", "MCP2", "MCP3", "MCP4", "MCP5", "PIP2", "PIP3", "PIP4", "PIP5", "CMC3", "CMC4", "CMC5",
            "STT", "CSL", "RC")
#: Joints per foot scored for erosion and JSN (6 each).
FOOT_JOINTS = ("MTP1", "MTP2", "MTP3", "MTP4", "MTP5", "IP1")

Point = Tuple[float, float]


@dataclass
class Capsule:
    """A bone: points within ``radius`` of the segment ``a``-``b`` (image millimetres)."""

    name: str
    a: Point
    b: Point
    radius: float


def identity(options: SampleOptions) -> Identity:
    """The fake patient of this sample (the hand accession number is the identity's)."""
    return make_identity(options.seed, options.kind, accession_number=f"RAH{case_number(options.seed):05d}",
                         history="seropositive rheumatoid arthritis for 6 years on methotrexate, yearly mTSS scoring")


def case_number(seed: int) -> int:
    """Seed 004 style case number (``RA00001`` ...)."""
    return seed % 99999 + 1


def joint_codes() -> Tuple[List[str], List[str]]:
    """Column joint codes: erosion joints and JSN joints, hands (R, L) then feet (R, L)."""
    erosion = [f"{s}H_{j}" for s in "RL" for j in HAND_EROSION] + [f"{s}F_{j}" for s in "RL" for j in FOOT_JOINTS]
    jsn = [f"{s}H_{j}" for s in "RL" for j in HAND_JSN] + [f"{s}F_{j}" for s in "RL" for j in FOOT_JOINTS]
    return erosion, jsn


def draw_scores(ctx: Context) -> Tuple[Dict[str, int], Dict[str, int]]:
    """Erosion (0-5) and JSN (0-4) score per joint code."""
    rng = ctx.rng("scores")
    severity = float(rng.uniform(0.5, 1.5))
    p_erosion = np.array([0.72, 0.12, 0.08, 0.05, 0.02, 0.01])
    p_jsn = np.array([0.65, 0.15, 0.10, 0.07, 0.03])
    pe = p_erosion * np.r_[1.0 / severity, [severity] * 5]
    pj = p_jsn * np.r_[1.0 / severity, [severity] * 4]
    erosion_codes, jsn_codes = joint_codes()
    erosion = {c: int(rng.choice(6, p=pe / pe.sum())) for c in erosion_codes}
    jsn = {c: int(rng.choice(5, p=pj / pj.sum())) for c in jsn_codes}
    return erosion, jsn


class LimbDrawing:
    """Bones, soft tissue, erosions and joint positions of one hand or foot in image millimetres."""

    def __init__(self, centre_u: float, base_v: float, mirror: float) -> None:
        self.centre_u, self.base_v, self.mirror = centre_u, base_v, mirror
        self.bones: List[Capsule] = []
        self.soft: List[Capsule] = []
        self.notches: List[Tuple[Point, float]] = []
        self.joints: Dict[str, Point] = {}

    def to_image(self, s: float, t: float) -> Point:
        """Local (s lateral towards the thumb/great toe, t distal) -> image (u right, v down) mm."""
        return (self.centre_u + self.mirror * s, self.base_v - t)

    def bone(self, name: str, a: Point, b: Point, radius: float, soft_margin: float = 3.5) -> None:
        """Add a bone (segment ``a``-``b`` in local mm) and, unless ``soft_margin`` is 0, soft tissue around it."""
        pa, pb = self.to_image(*a), self.to_image(*b)
        self.bones.append(Capsule(name, pa, pb, radius))
        self.soft.append(Capsule(name, pa, pb, radius + soft_margin))

    def notch_at(self, s: float, t: float, radius: float) -> None:
        """Add an erosion: bone inside the circle (local mm) is removed."""
        self.notches.append((self.to_image(s, t), radius))

    def ray(self, prefix: str, base: Point, angle_deg: float, lengths: List[float], radii: List[float],
            joint_names: List[Optional[str]], gaps: List[float], erosion: Dict[str, int]) -> Point:
        """Bones along a ray from ``base``; returns the direction. Joint ``n`` follows bone ``n``."""
        d = (math.sin(math.radians(angle_deg)), math.cos(math.radians(angle_deg)))
        nrm = (d[1], -d[0])
        pos = 0.0
        for i, (length, r) in enumerate(zip(lengths, radii)):
            lo, hi = pos + min(r, length / 2.0), pos + length - min(r, length / 2.0)
            self.bone(f"{prefix}{i}", (base[0] + lo * d[0], base[1] + lo * d[1]),
                      (base[0] + hi * d[0], base[1] + hi * d[1]), r)
            pos += length
            if i < len(joint_names):
                gap = gaps[i]
                name = joint_names[i]
                centre = (base[0] + (pos + gap / 2.0) * d[0], base[1] + (pos + gap / 2.0) * d[1])
                if name:
                    self.joints[name] = self.to_image(*centre)
                    score = erosion.get(name, 0)
                    if score:
                        back = gap / 2.0 + r * 0.35
                        self.notch_at(centre[0] - back * d[0] + 0.75 * r * nrm[0],
                                      centre[1] - back * d[1] + 0.75 * r * nrm[1], 0.5 + 0.45 * score)
                pos += gap
        return d


def _gap(jsn: Dict[str, int], name: str, normal: float = NORMAL_GAP_MM) -> float:
    return normal * (1.0 - jsn.get(name, 0) / 4.0)


def draw_hand(side: str, centre_u: float, wrist_v: float, erosion: Dict[str, int], jsn: Dict[str, int]) -> LimbDrawing:
    """One hand, PA, fingers up, thumb towards the image centre."""
    mirror = 1.0 if side == "R" else -1.0
    limb = LimbDrawing(centre_u, wrist_v, mirror)
    e = {k.split("_", 1)[1]: v for k, v in erosion.items() if k.startswith(f"{side}H_")}
    j = {k.split("_", 1)[1]: v for k, v in jsn.items() if k.startswith(f"{side}H_")}
    limb.soft.append(Capsule("forearm", limb.to_image(-2.0, -70.0), limb.to_image(-2.0, 0.0), 30.0))
    limb.soft.append(Capsule("palm", limb.to_image(-4.0, 20.0), limb.to_image(2.0, 75.0), 30.0))
    limb.bone("radius", (10.0, -60.0), (10.0, -11.0), 11.0, 0.0)
    limb.bone("ulna", (-14.0, -60.0), (-14.0, -10.0), 6.0, 0.0)
    limb.joints["RADIUS"] = limb.to_image(10.0, -3.0)
    limb.joints["ULNA"] = limb.to_image(-14.0, -5.0)
    lift = 2.0 - _gap(j, "RC", 2.0)  # radiocarpal narrowing moves the carpus proximally
    scaphoid, lunate, triquetrum = (12.0, 8.0 - lift), (0.0, 7.5 - lift), (-12.0, 8.0 - lift)
    limb.joints["RC"] = limb.to_image(6.0, 1.0 - lift / 2.0)
    toward = (0.5, 0.866)
    stt = 6.0 + 5.5 + _gap(j, "STT", 2.0)
    trapezium = (scaphoid[0] + stt * toward[0], scaphoid[1] + stt * toward[1])
    capitate = (0.0, lunate[1] + 5.5 + 6.0 + _gap(j, "CSL", 2.2))
    hamate = (-11.5, triquetrum[1] + 5.0 + 5.5 + 1.5)
    trapezoid = (9.5, capitate[1] + 0.3)
    limb.joints["STT"] = limb.to_image(scaphoid[0] + (6.0 + (stt - 11.5) / 2.0) * toward[0],
                                       scaphoid[1] + (6.0 + (stt - 11.5) / 2.0) * toward[1])
    limb.joints["CSL"] = limb.to_image(2.0, lunate[1] + 5.5 + (capitate[1] - 6.0 - lunate[1] - 5.5) / 2.0)
    for name, c, r in (("scaphoid", scaphoid, 6.0), ("lunate", lunate, 5.5), ("triquetrum", triquetrum, 5.0),
                       ("trapezium", trapezium, 5.5), ("trapezoid", trapezoid, 4.8), ("capitate", capitate, 6.0),
                       ("hamate", hamate, 5.5)):
        limb.bone(name, (c[0], c[1] - 1.0), (c[0], c[1] + 1.0), r, 0.0)
    limb.joints["TRAPEZIUM"] = limb.to_image(*trapezium)
    limb.joints["SCAPHOID"] = limb.to_image(*scaphoid)
    limb.joints["LUNATE"] = limb.to_image(*lunate)
    for name, c, r in (("TRAPEZIUM", trapezium, 5.5), ("SCAPHOID", scaphoid, 6.0), ("LUNATE", lunate, 5.5),
                       ("RADIUS", (10.0, -3.0), 8.0), ("ULNA", (-14.0, -5.0), 5.0)):
        if e.get(name):
            limb.notch_at(c[0] + 0.8 * r, c[1], 0.5 + 0.45 * e[name])
    # thumb: MC1 from the trapezium; CMC1 is an erosion joint only
    d1 = (math.sin(math.radians(THUMB_DEG)), math.cos(math.radians(THUMB_DEG)))
    base1 = (trapezium[0] + (5.5 + NORMAL_GAP_MM) * d1[0], trapezium[1] + (5.5 + NORMAL_GAP_MM) * d1[1])
    limb.joints["CMC1"] = limb.to_image(trapezium[0] + (5.5 + NORMAL_GAP_MM / 2) * d1[0],
                                        trapezium[1] + (5.5 + NORMAL_GAP_MM / 2) * d1[1])
    if e.get("CMC1"):
        limb.notch_at(base1[0] + 2.0 * d1[0] + 3.5 * d1[1], base1[1] + 2.0 * d1[1] - 3.5 * d1[0],
                      0.5 + 0.45 * e["CMC1"])
    limb.ray("thumb", base1, THUMB_DEG, [45.0, 30.0, 23.0], [5.0, 4.5, 4.0], ["MCP1", "IP"],
             [_gap(j, "MCP1"), NORMAL_GAP_MM], e)
    fingers = (  # finger, carpal anchor, anchor radius, CMC joint, angle, lengths, radii
        (2, (trapezoid[0], trapezoid[1]), 4.8, None, 6.0, [65.0, 40.0, 24.0, 17.0]),
        (3, capitate, 6.0, "CMC3", 0.0, [63.0, 45.0, 28.0, 19.0]),
        (4, (hamate[0] + 3.0, hamate[1]), 5.5, "CMC4", -6.0, [56.0, 42.0, 26.0, 18.0]),
        (5, (hamate[0] - 4.0, hamate[1] - 1.0), 5.5, "CMC5", -12.0, [52.0, 34.0, 20.0, 16.0]),
    )
    for n, anchor, r_anchor, cmc, angle, lengths in fingers:
        d = (math.sin(math.radians(angle)), math.cos(math.radians(angle)))
        gap = _gap(j, cmc, 2.0) if cmc else 2.0
        base = (anchor[0] + (r_anchor + gap) * d[0], anchor[1] + (r_anchor + gap) * d[1])
        if cmc:
            limb.joints[cmc] = limb.to_image(anchor[0] + (r_anchor + gap / 2.0) * d[0],
                                             anchor[1] + (r_anchor + gap / 2.0) * d[1])
        limb.ray(f"finger{n}_", base, angle, lengths, [4.2, 4.0, 3.5, 3.0], [f"MCP{n}", f"PIP{n}", None],
                 [_gap(j, f"MCP{n}"), _gap(j, f"PIP{n}"), NORMAL_GAP_MM], e)
    return limb


def draw_foot(side: str, centre_u: float, base_v: float, erosion: Dict[str, int], jsn: Dict[str, int]) -> LimbDrawing:
    """One foot, dorsoplantar, toes up, great toe towards the image centre."""
    mirror = 1.0 if side == "R" else -1.0
    limb = LimbDrawing(centre_u, base_v, mirror)
    e = {k.split("_", 1)[1]: v for k, v in erosion.items() if k.startswith(f"{side}F_")}
    j = {k.split("_", 1)[1]: v for k, v in jsn.items() if k.startswith(f"{side}F_")}
    limb.soft.append(Capsule("hindfoot", limb.to_image(0.0, -80.0), limb.to_image(2.0, 20.0), 36.0))
    limb.soft.append(Capsule("forefoot", limb.to_image(-4.0, 25.0), limb.to_image(2.0, 95.0), 38.0))
    limb.bone("calcaneus", (-8.0, -75.0), (-8.0, -20.0), 18.0, 0.0)
    limb.bone("talus", (8.0, -35.0), (8.0, -12.0), 13.0, 0.0)
    limb.bone("navicular", (6.0, 8.0), (18.0, 8.0), 6.5, 0.0)
    limb.bone("cuboid", (-15.0, 6.0), (-15.0, 14.0), 8.5, 0.0)
    for name, c, r in (("cuneiform1", (20.0, 24.0), 6.0), ("cuneiform2", (8.5, 25.0), 4.8),
                       ("cuneiform3", (-2.5, 24.5), 5.2)):
        limb.bone(name, (c[0], c[1] - 1.5), (c[0], c[1] + 1.5), r, 0.0)
    rays: Tuple[Tuple[int, Point, float, List[float], List[float], List[Optional[str]]], ...] = (
        # toe, base, angle, lengths, radii, joints
        (1, (20.0, 33.5), 4.0, [62.0, 30.0, 24.0], [6.5, 6.0, 5.5], ["MTP1", "IP1"]),
        (2, (8.5, 33.0), 0.0, [72.0, 28.0, 12.0, 10.0], [4.5, 3.8, 3.4, 3.2], ["MTP2", None, None]),
        (3, (-2.5, 32.5), -5.0, [68.0, 24.0, 10.0, 9.0], [4.3, 3.6, 3.2, 3.0], ["MTP3", None, None]),
        (4, (-13.0, 26.0), -10.0, [64.0, 21.0, 9.0, 8.0], [4.2, 3.4, 3.0, 2.9], ["MTP4", None, None]),
        (5, (-22.0, 22.0), -16.0, [60.0, 18.0, 8.0, 8.0], [4.5, 3.3, 2.9, 2.8], ["MTP5", None, None]),
    )
    for n, base, angle, lengths, radii, joints in rays:
        gaps = [_gap(j, name) if name else 1.5 for name in joints]
        limb.ray(f"toe{n}_", base, angle, lengths, radii, joints, gaps, e)
    return limb


def _paint_capsules(level: np.ndarray, capsules: List[Capsule], value: float, shape: Tuple[int, int],
                    cortex: Optional[float] = None) -> None:
    rows, cols = shape
    for cap in capsules:
        r = cap.radius
        umin, umax = min(cap.a[0], cap.b[0]) - r, max(cap.a[0], cap.b[0]) + r
        vmin, vmax = min(cap.a[1], cap.b[1]) - r, max(cap.a[1], cap.b[1]) + r
        c0, c1 = max(int(umin / PIXEL_MM) - 1, 0), min(int(umax / PIXEL_MM) + 2, cols)
        r0, r1 = max(int(vmin / PIXEL_MM) - 1, 0), min(int(vmax / PIXEL_MM) + 2, rows)
        if c0 >= c1 or r0 >= r1:
            continue
        u = np.arange(c0, c1, dtype=np.float64)[None, :] * PIXEL_MM
        v = np.arange(r0, r1, dtype=np.float64)[:, None] * PIXEL_MM
        ax, ay = cap.a
        dx, dy = cap.b[0] - ax, cap.b[1] - ay
        length2 = dx * dx + dy * dy
        t = np.clip(((u - ax) * dx + (v - ay) * dy) / length2, 0.0, 1.0) if length2 > 0 else np.zeros((1, 1))
        dist = np.hypot(u - (ax + t * dx), v - (ay + t * dy))
        window = level[r0:r1, c0:c1]
        if cortex is None:
            np.maximum(window, np.where(dist <= r, value, 0.0), out=window)
        else:
            inside = np.where(dist <= r, np.where(dist >= r - 1.1, cortex, value), 0.0)
            np.maximum(window, inside, out=window)


def render_limbs(limbs: List[LimbDrawing], shape: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """MONOCHROME2-sense image (more attenuation = higher value), float, before storing."""
    soft = np.zeros(shape)
    bone = np.zeros(shape)
    for limb in limbs:
        _paint_capsules(soft, limb.soft, LEVEL_SOFT, shape)
        _paint_capsules(bone, limb.bones, LEVEL_MEDULLA, shape, cortex=LEVEL_CORTEX)
    rows, cols = shape
    for limb in limbs:
        for (u, v), radius in limb.notches:
            c0, c1 = max(int((u - radius) / PIXEL_MM) - 1, 0), min(int((u + radius) / PIXEL_MM) + 2, cols)
            r0, r1 = max(int((v - radius) / PIXEL_MM) - 1, 0), min(int((v + radius) / PIXEL_MM) + 2, rows)
            uu = np.arange(c0, c1)[None, :] * PIXEL_MM
            vv = np.arange(r0, r1)[:, None] * PIXEL_MM
            bone[r0:r1, c0:c1][np.hypot(uu - u, vv - v) <= radius] = 0.0
    image = LEVEL_AIR + soft + bone
    heel = np.linspace(1.04, 0.96, cols)[None, :]
    image = ndimage.gaussian_filter(image * heel, sigma=0.7)
    image += rng.standard_normal(shape) * 18.0
    border = 12
    image[:border, :] = image[-border:, :] = LEVEL_COLLIMATED
    image[:, :border] = image[:, -border:] = LEVEL_COLLIMATED
    return np.clip(image, 0.0, (1 << BITS) - 1)


@dataclass
class Exam:
    """One CR exam of the case."""

    key: str
    shape: Tuple[int, int]
    body: str
    view: str
    cassette: str
    orientation: List[str]
    kvp: str
    photometric: str
    description: str
    limbs: List[LimbDrawing]

    @property
    def folder(self) -> str:
        """Series folder under ``dicom/``."""
        return self.key


def build(ctx: Context) -> KindPlan:
    """Plan the xray-ra case (both images are written in the finish step)."""
    n = case_number(ctx.options.seed)
    hand_study = make_study(ctx, "HAND", "HAND BILAT", accession_number=f"RAH{n:05d}")
    foot_study = make_study(ctx, "FOOT", "FOOT BILAT", accession_number=f"RAF{n:05d}", minutes_after=7.0)
    rng = ctx.rng("orientation")
    flags = {"H": int(rng.random() < 0.3), "F": int(rng.random() < 0.3)}
    erosion, jsn = draw_scores(ctx)
    return KindPlan(volumes=[], studies=[hand_study, foot_study], finish=_finish, finish_work=3,
                    data={"n": n, "studies": {"H": hand_study, "F": foot_study}, "flags": flags,
                          "erosion": erosion, "jsn": jsn})


def _finish(ctx: Context, plan: KindPlan) -> KindResult:
    data = plan.data
    erosion, jsn, flags = data["erosion"], data["jsn"], data["flags"]
    exams = {
        "H": Exam("CR_HAND", (1000, 1200), "HAND", "PA", "LANDSCAPE", ["L", "H"], "50", "MONOCHROME1", "HAND BILAT PA",
                  [draw_hand("R", 60.0, 214.0, erosion, jsn), draw_hand("L", 240.0, 214.0, erosion, jsn)]),
        "F": Exam("CR_FOOT", (1200, 1000), "FOOT", "AP", "PORTRAIT", ["L", "P"], "55", "MONOCHROME2", "FOOT BILAT DP",
                  [draw_foot("R", 65.0, 200.0, erosion, jsn), draw_foot("L", 185.0, 200.0, erosion, jsn)]),
    }
    series_entries = []
    joints: List[Dict[str, Any]] = []
    erosion_codes, jsn_codes = joint_codes()
    for code, exam in exams.items():
        study = data["studies"][code]
        rows, cols = exam.shape
        image = render_limbs(exam.limbs, (rows, cols), ctx.rng("noise", code))
        if flags[code]:
            image = image[::-1, ::-1]
        encoding = PixelEncoding(16, BITS, 0, photometric=exam.photometric)
        stored = np.rint(image).astype(np.uint16)
        if exam.photometric == "MONOCHROME1":
            stored = ((1 << BITS) - 1 - stored).astype(np.uint16)
        centre = 2048 if exam.photometric == "MONOCHROME2" else 4095 - 2048
        series = make_series(
            ctx, study, exam.key, "CR", number=1001, description=exam.description, minutes_after=1.0,
            frame_of_reference_uid=None, body_part=exam.body, protocol=exam.description,
            model_name="SynthCR Profect", patient_position=None,
            attributes={
                "ImageType": ["ORIGINAL", "PRIMARY"], "ViewPosition": exam.view, "ImageLaterality": "B",
                "PatientOrientation": exam.orientation, "KVP": exam.kvp, "ExposureTime": 25,
                "XRayTubeCurrent": 200, "Exposure": 5, "DistanceSourceToDetector": "1000",
                "ImagerPixelSpacing": ["0.25", "0.25"], "PlateID": f"PL{data['n'] % 9000 + 1000}",
                "CassetteOrientation": exam.cassette, "CassetteSize": "24CMX30CM", "Sensitivity": "200",
                "AcquisitionDeviceProcessingDescription": exam.body, "WindowCenter": str(centre),
                "WindowWidth": "3000", "RequestedProcedureDescription": study.description,
                "RequestingService": "AIR",
            })
        sop_uid = instance_uid(series.series_instance_uid, 0)
        write_single_image(ctx.path(f"dicom/{exam.folder}/{file_name_for(sop_uid)}"), stored, SOP_CLASS_UIDS["CR"],
                           sop_uid, encoding=encoding, identity=ctx.identity, study=study, series=series)
        ctx.step()
        geometry = ImageGeometry((cols, rows, 1), (PIXEL_MM, PIXEL_MM, 1.0))
        series_entries.append(series_json(
            key=exam.key, role="primary" if code == "H" else "secondary", folder=exam.folder, modality="CR",
            study=study, series=series, geometry=geometry, geometry_frame="image-pixels", n_files=1,
            encoding=encoding, options_applied={"oblique": False, "drop_slice": None, "duplicate_slice": None},
            description=f"{exam.description}: {cols} x {rows}, ImagerPixelSpacing 0.25 mm, 16-bit "
                        f"{exam.photometric} BitsStored {BITS}; Abnormal_orientation {flags[code]}",
            instance_numbering="single image, InstanceNumber 1"))
        limb_sides = ("R", "L")
        for limb, side in zip(exam.limbs, limb_sides):
            for name, (u, v) in sorted(limb.joints.items()):
                full = f"{side}{code}_{name}"
                x, y = u / PIXEL_MM, v / PIXEL_MM
                if flags[code]:
                    x, y = cols - 1 - x, rows - 1 - y
                scored = [kind for kind, codes in (("erosion", erosion_codes), ("JSN", jsn_codes)) if full in codes]
                joints.append({
                    "code": full, "exam": "hand" if code == "H" else "foot", "side": side, "joint": name,
                    "series_key": exam.key, "sop_instance_uid": sop_uid,
                    "x": round(x, 1), "y": round(y, 1),
                    "scored_for": scored,
                    "erosion": erosion.get(full), "jsn": jsn.get(full),
                })
    studies = data["studies"]
    row: Dict[str, Any] = {
        "NO.": ctx.identity.patient_id, "Package_im_no.": f"RA{data['n']:05d}",
        "REQ_H": studies["H"].accession_number, "Exam_date_H": studies["H"].date,
        "Abnormal_orientation_H": flags["H"],
        "REQ_F": studies["F"].accession_number, "Exam_date_F": studies["F"].date,
        "Abnormal_orientation_F": flags["F"],
    }
    header = list(row)
    for c in erosion_codes:
        header.append(f"erosion_{c}")
        row[f"erosion_{c}"] = erosion[c]
    for c in jsn_codes:
        header.append(f"JSN_{c}")
        row[f"JSN_{c}"] = jsn[c]
    write_csv(ctx.path("ground_truth/scores.csv"), header, [row])
    write_json(ctx.path("ground_truth/joints.json"), {
        "method": "Sharp/van der Heijde: erosion 0-5 per joint (16 per hand, 6 per foot), JSN 0-4 (15 per hand, "
                  "6 per foot)",
        "position_convention": "x = column, y = row of the joint in the stored image (pixel centres, origin at the "
                               "top-left pixel), after any abnormal-orientation rotation",
        "abnormal_orientation": {"hand": flags["H"], "foot": flags["F"]},
        "joints": joints,
    })
    ctx.step()
    return KindResult(series=series_entries, ground_truth=[
        {"name": "scores", "path": "ground_truth/scores.csv", "format": "csv", "series_key": None,
         "description": "Seed 004 score sheet row: identifiers, exam dates, orientation flags, erosion_<joint> and "
                        "JSN_<joint> columns."},
        {"name": "joints", "path": "ground_truth/joints.json", "format": "json", "series_key": "CR_HAND",
         "description": "Every scored joint with its pixel position in the hand or foot image and its scores."},
    ])
