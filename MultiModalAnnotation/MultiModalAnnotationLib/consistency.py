"""Consistency aids (R-8.4.2.4): compare a linked fragment's claims with its region.

For each link, :func:`check_link` extracts the fragment's claims (:mod:`.claims`), measures the
target region (:func:`region_facts`) and compares:

* **size** - the claimed size (the largest of ``1.5×1.2 cm``) against the region's largest
  diameter: for a mask the largest distance between points of its surface in millimetres (the
  centres of its boundary voxel faces, through :class:`RTSSBridgeLib.geometry.ImageGeometry`, so
  anisotropic and oblique grids are exact) and the largest in-plane diameter on one slice (what a
  radiologist measures); for a box the interval [longest side, diagonal]; for a polygon the largest
  vertex distance. It is consistent within ``max(size_tolerance_mm, size_tolerance_fraction ×
  claimed)`` of either; ``<5 mm`` and ranges are honoured;
* **laterality** - against the side of the region's centroid in patient LPS (x grows to the
  patient's left): left of the midline beyond ``midline_margin_mm`` is ``left``. The midline is
  halfway between the centroids of a paired organ annotated in the document (left and right lung),
  else the centre of the image's field of view. Images without patient geometry (ultrasound,
  projection X-ray) take the side from the label (``HAND_RIGHT``, Right modifier codes) or a location
  attribute (thyroid ``lobe``, seed 002 ROI names ``R_...``); a region near the midline, or a
  "bilateral" statement about a one-sided region, stays unchecked;
* **location** - template codes of the fragment against where the region lies: its label's organ
  ancestors, location attributes (HCC ``segment`` S5 -> ``LIVER_S5``; ROI name ``R_lat_temp`` ->
  ``BRAIN_TEMPORAL_LOBE``) and the organ or sub-structure masks of the document that contain it
  (at least ``containment_fraction`` of a one-voxel shell around the region, so a nodule in a hole
  of the lung mask counts as inside). A claim is consistent when it names one of the most specific
  places found, one of their ancestors, or a finer place inside one (the finer place is then not
  verified, and the note says so);
* **enhancement** - the classes of the text against the region's ``enhancement`` attribute: an
  enhancing description of a non-enhancing region (and the reverse), or ring against solid, is a
  contradiction.

A mismatch makes the link ``inconsistent`` with its reasons: a proposal for a person to confirm
(``source`` ``automatic``); a person's decision is never overwritten. Several places, sides or sizes
named in one fragment (other lesions) are consistent when the region matches one of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.geometry import ImageGeometry

from .claims import Claim, extract_claims, vocabulary
from .documents import Annotation, AnnotationDocument
from .links import Consistency, TextLink, replace_link, report_links_of
from .templates import LabelTemplate

#: DICOM modifier codes that give a label a side (SCT Left, Right).
_SIDE_CODES = {"7771000": "left", "24028007": "right"}
#: Modalities whose images are placed in patient coordinates (LPS); others (US, CR, DX ...) are not.
CROSS_SECTIONAL = ("CT", "MR", "PT", "NM", "ST", "RTIMAGE")


@dataclass(frozen=True)
class ConsistencyOptions:
    """Tolerances of the comparisons (the defaults are the ones the tests hold)."""

    size_tolerance_mm: float = 2.0
    size_tolerance_fraction: float = 0.2
    midline_margin_mm: float = 5.0
    containment_fraction: float = 0.5

    def tolerance(self, claimed_mm: float) -> float:
        return max(self.size_tolerance_mm, self.size_tolerance_fraction * claimed_mm)


@dataclass
class RegionFacts:
    """What the consistency aids know about a region."""

    annotation_id: str
    kind: str
    centroid_lps: Optional[np.ndarray] = None
    diameters_mm: Tuple[float, ...] = ()
    largest_diameter_mm: Optional[float] = None
    axial_diameter_mm: Optional[float] = None
    side: Optional[str] = None
    side_source: Optional[str] = None
    side_offset_mm: Optional[float] = None
    spans_both_sides: bool = False
    locations: List[str] = field(default_factory=list)
    location_sources: Dict[str, str] = field(default_factory=dict)
    attributes: Dict[str, Any] = field(default_factory=dict)
    enhancement: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"centroid_lps": None if self.centroid_lps is None else [round(float(v), 3) for v in self.centroid_lps],
                "largest_diameter_mm": None if self.largest_diameter_mm is None else round(self.largest_diameter_mm, 3),
                "axial_diameter_mm": None if self.axial_diameter_mm is None else round(self.axial_diameter_mm, 3),
                "side": self.side, "side_source": self.side_source, "locations": list(self.locations),
                "enhancement": self.enhancement}


# --------------------------------------------------------------------------- measuring
def _max_distance(points: np.ndarray) -> float:
    """Largest distance between any two of ``points`` (n, d), through their convex hull."""
    if len(points) < 2:
        return 0.0
    candidates = points
    if len(points) > 64:
        from scipy.spatial import ConvexHull, QhullError

        try:
            candidates = points[ConvexHull(points).vertices]
        except (QhullError, ValueError):  # flat or collinear: the hull of the extreme points suffices
            candidates = points
    best = 0.0
    for start in range(0, len(candidates), 2048):  # chunks keep memory flat for large hulls
        block = candidates[start:start + 2048]
        d = np.max(np.linalg.norm(block[:, None, :] - candidates[None, :, :], axis=-1))
        best = max(best, float(d))
    return best


def boundary_face_points(mask_kji: np.ndarray, axes: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """Centres of the faces between a mask voxel and a voxel outside it, as continuous (i, j, k)
    indices; ``axes`` (0 = k, 1 = j, 2 = i) chooses which faces count."""
    padded = np.pad(np.asarray(mask_kji, dtype=bool), 1)
    points = []
    for axis in axes:
        for step in (-1, 1):
            neighbour = np.roll(padded, -step, axis=axis)
            face = padded & ~neighbour
            kji = np.argwhere(face).astype(np.float64) - 1.0
            kji[:, axis] += 0.5 * step
            points.append(kji[:, ::-1])  # -> (i, j, k)
    return np.concatenate(points) if points else np.zeros((0, 3))


def mask_diameters_mm(mask_kji: np.ndarray, geometry: ImageGeometry) -> Tuple[float, float]:
    """(largest diameter, largest in-slice diameter) of a mask in millimetres: the largest distance
    between centres of its boundary faces in LPS (a run of n voxels measures n voxels)."""
    mask = np.asarray(mask_kji, dtype=bool)
    if not mask.any():
        return 0.0, 0.0
    k0, k1 = np.nonzero(mask.any(axis=(1, 2)))[0][[0, -1]]
    j0, j1 = np.nonzero(mask.any(axis=(0, 2)))[0][[0, -1]]
    i0, i1 = np.nonzero(mask.any(axis=(0, 1)))[0][[0, -1]]
    crop = mask[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1]
    offset = np.array([i0, j0, k0], dtype=np.float64)
    planar = geometry.shape[2] == 1
    faces = boundary_face_points(crop, (1, 2) if planar else (0, 1, 2)) + offset
    largest = _max_distance(geometry.ijk_to_lps(faces))
    in_plane = 0.0
    for k in range(crop.shape[0]):
        if crop[k].any():
            points = boundary_face_points(crop[k:k + 1], (1, 2)) + offset + np.array([0.0, 0.0, k])
            in_plane = max(in_plane, _max_distance(geometry.ijk_to_lps(points)))
    return largest, in_plane


def has_patient_geometry(document: AnnotationDocument) -> bool:
    """True when the image is placed in patient coordinates (cross-sectional modality or a Frame
    of Reference): only then does the centroid tell the patient's side."""
    return document.image.modality in CROSS_SECTIONAL or bool(document.image.frame_of_reference_uid)


def _label_side(template: LabelTemplate, code: str) -> Optional[str]:
    seen = 0
    current = template.get(code)
    while current is not None and seen < 32:
        for role in ("type_modifier", "region_modifier"):
            c = current.codes.get(role)
            if c is not None and c.value in _SIDE_CODES:
                return _SIDE_CODES[c.value]
        current = template.get(current.parent) if current.parent else None
        seen += 1
    return None


def ancestors(template: LabelTemplate, code: str) -> List[str]:
    """Codes above ``code`` in the template tree (parent first)."""
    found: List[str] = []
    label = template.get(code)
    while label is not None and label.parent and label.parent not in found:
        found.append(label.parent)
        label = template.get(label.parent)
    return found


def _is_place(template: LabelTemplate, code: str) -> bool:
    label = template.get(code)
    return label is not None and (label.category == "organ" or label.level in ("system", "organ", "substructure"))


def _region_mask(annotation: Annotation, geometry: ImageGeometry, masks: Mapping[str, np.ndarray]
                 ) -> Optional[np.ndarray]:
    if annotation.type == "mask":
        mask = masks.get(annotation.id)
        if mask is None:
            return None
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != geometry.array_shape:
            raise InputError(f"mask of {annotation.id} has shape {list(mask.shape)}, the image grid "
                             f"{list(geometry.array_shape)}", field="masks")
        return mask
    return None


def _point_of(annotation: Annotation) -> Optional[np.ndarray]:
    data = annotation.data
    if annotation.type == "point":
        return np.asarray(data["point"], dtype=float)
    if annotation.type == "bbox":
        box = np.asarray(data["bbox"], dtype=float)
        if len(box) == 4:
            return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, float(data["slice_index"])])
        return (box[:3] + box[3:]) / 2.0
    if annotation.type == "polygon":
        xy = np.asarray(data["polygon"], dtype=float)
        return np.array([xy[:, 0].mean(), xy[:, 1].mean(), float(data["slice_index"])])
    return None


def _midline_x(document: AnnotationDocument, template: LabelTemplate, masks: Mapping[str, np.ndarray]) -> float:
    g = document.image.geometry
    by_type: Dict[str, Dict[str, List[float]]] = {}
    for a in document.annotations:
        label = template.get(a.label_code)
        mask = masks.get(a.id) if a.type == "mask" else None
        if label is None or mask is None or label.level not in ("organ", "system"):
            continue
        side = _label_side(template, a.label_code)
        kind = label.codes.get("type")
        if side is None or kind is None or not np.any(mask):
            continue
        kji = np.argwhere(mask)
        centre = g.ijk_to_lps(kji.mean(axis=0)[::-1])
        by_type.setdefault(kind.value, {}).setdefault(side, []).append(float(centre[0]))
    for sides in by_type.values():
        if "left" in sides and "right" in sides:
            return (float(np.mean(sides["left"])) + float(np.mean(sides["right"]))) / 2.0
    return float(np.mean(g.corners_lps()[:, 0]))


def region_facts(document: AnnotationDocument, annotation_id: str, template: LabelTemplate,
                 masks: Mapping[str, np.ndarray], options: Optional[ConsistencyOptions] = None) -> RegionFacts:
    """Measure the annotation ``annotation_id`` (see the module docstring)."""
    opts = options or ConsistencyOptions()
    annotation = document.annotation(annotation_id)
    g = document.image.geometry
    facts = RegionFacts(annotation.id, annotation.type, attributes=dict(annotation.attributes))
    mask = _region_mask(annotation, g, masks)
    voxel_point: Optional[np.ndarray] = None
    if mask is not None and mask.any():
        kji = np.argwhere(mask)
        facts.centroid_lps = g.ijk_to_lps(kji.mean(axis=0)[::-1])
        largest, in_plane = mask_diameters_mm(mask, g)
        facts.largest_diameter_mm, facts.axial_diameter_mm = largest, in_plane
        facts.diameters_mm = (in_plane, largest)
    else:
        point = _point_of(annotation)
        if point is not None:
            voxel_point = point
            facts.centroid_lps = g.ijk_to_lps(point)
        if annotation.type == "bbox":
            box = np.asarray(annotation.data["bbox"], dtype=float)
            half = len(box) // 2
            lo, hi = box[:half], box[half:]
            sides = (hi - lo + 1.0) * np.asarray(g.spacing_mm[:half])  # inclusive voxel-centre bounds
            facts.diameters_mm = (float(sides.max()), float(np.linalg.norm(sides)))
            facts.largest_diameter_mm = facts.diameters_mm[1]
        elif annotation.type == "polygon":
            xy = np.asarray(annotation.data["polygon"], dtype=float)
            ijk = np.column_stack([xy, np.full(len(xy), float(annotation.data["slice_index"]))])
            d = _max_distance(g.ijk_to_lps(ijk))
            facts.diameters_mm = (d,)
            facts.largest_diameter_mm = d
    # side
    if has_patient_geometry(document) and facts.centroid_lps is not None:
        mid = _midline_x(document, template, masks)
        offset = float(facts.centroid_lps[0]) - mid
        facts.side_offset_mm = offset
        facts.side_source = "geometry"
        facts.side = "left" if offset > opts.midline_margin_mm else "right" if offset < -opts.midline_margin_mm \
            else "midline"
        if mask is not None and mask.any():
            x = g.ijk_to_lps(np.argwhere(mask)[:, ::-1].astype(float))[:, 0] - mid
            facts.spans_both_sides = bool(np.mean(x > opts.midline_margin_mm) >= 0.2
                                          and np.mean(x < -opts.midline_margin_mm) >= 0.2)
    else:
        side = _label_side(template, annotation.label_code)
        source = "label"
        vocab = vocabulary()
        lobe = facts.attributes.get("lobe")
        if side is None and lobe in ("left", "right"):
            side, source = str(lobe), "attribute"
        if side is None and facts.attributes.get(vocab.data["roi_name"]["attribute"]):
            side, _ = vocab.roi_name_location(str(facts.attributes[vocab.data["roi_name"]["attribute"]]))
            source = "attribute"
        facts.side, facts.side_source = side, (source if side else None)
    # locations
    places: Dict[str, str] = {}
    for code in [annotation.label_code, *ancestors(template, annotation.label_code)]:
        if _is_place(template, code):
            places.setdefault(code, "label")
    vocab = vocabulary()
    for spec in vocab.data["attribute_locations"]:
        value = facts.attributes.get(spec["attribute"])
        found = spec["values"].get(str(value)) if value is not None else None
        if found and template.get(str(found)) is not None:
            for c in [str(found), *ancestors(template, str(found))]:
                places.setdefault(c, f"attribute {spec['attribute']}")
    roi_attr = vocab.data["roi_name"]["attribute"]
    if facts.attributes.get(roi_attr):
        _, codes = vocab.roi_name_location(str(facts.attributes[roi_attr]))
        for code in codes:
            if template.get(code) is not None:
                for c in [code, *ancestors(template, code)]:
                    places.setdefault(c, f"attribute {roi_attr}")
    for other in document.annotations:
        if other.id == annotation.id or other.type != "mask" or not _is_place(template, other.label_code):
            continue
        container = masks.get(other.id)
        if container is None:
            continue
        container = np.asarray(container, dtype=bool)
        if _contains(container, mask, voxel_point, g, opts):
            for c in [other.label_code, *ancestors(template, other.label_code)]:
                places.setdefault(c, f"inside {other.id}")
    facts.locations = list(places)
    facts.location_sources = places
    raw = facts.attributes.get("enhancement")
    if raw is not None:
        facts.enhancement = vocab.enhancement_values.get(str(raw), str(raw))
    return facts


def _contains(container: np.ndarray, mask: Optional[np.ndarray], point: Optional[np.ndarray], g: ImageGeometry,
              opts: ConsistencyOptions) -> bool:
    from scipy import ndimage

    if mask is not None and mask.any():
        idx = np.argwhere(mask)
        lo = np.maximum(idx.min(axis=0) - 2, 0)
        hi = np.minimum(idx.max(axis=0) + 3, mask.shape)
        window = tuple(slice(a, b) for a, b in zip(lo, hi))
        region = mask[window]
        shell = ndimage.binary_dilation(region) & ~region
        inside = container[window]
        if np.count_nonzero(region & inside) >= opts.containment_fraction * np.count_nonzero(region):
            return True
        return bool(shell.any() and np.count_nonzero(shell & inside) >= opts.containment_fraction *
                    np.count_nonzero(shell))
    if point is not None:
        i, j, k = (round(float(v)) for v in point)
        if not (0 <= k < container.shape[0] and 0 <= j < container.shape[1] and 0 <= i < container.shape[2]):
            return False
        near = container[max(k - 1, 0):k + 2, max(j - 1, 0):j + 2, max(i - 1, 0):i + 2]
        return bool(container[k, j, i]) or bool(np.mean(near) >= opts.containment_fraction)
    return False


# --------------------------------------------------------------------------- comparing
@dataclass(frozen=True)
class Check:
    aspect: str
    result: str
    reason: str
    claim: str = ""
    span: Optional[Tuple[int, int]] = None
    value: Any = None

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"aspect": self.aspect, "result": self.result, "reason": self.reason}
        if self.claim:
            data["claim"] = self.claim
        if self.span is not None:
            data["span"] = list(self.span)
        if self.value is not None:
            data["value"] = self.value
        return data


def _fmt(mm: float) -> str:
    return f"{mm:.1f} mm"


def _size_check(claims: List[Claim], facts: RegionFacts, opts: ConsistencyOptions) -> Optional[Check]:
    sizes = [c for c in claims if c.aspect == "size" and c.role == "claim"]
    if not sizes:
        return None
    first = sizes[0]
    if not facts.diameters_mm:
        return Check("size", "unchecked", f"the region ({facts.kind}) has no size to compare", first.text,
                     (first.start, first.end), first.value)
    lo, hi = min(facts.diameters_mm), max(facts.diameters_mm)
    measured = (f"region largest diameter {_fmt(facts.largest_diameter_mm or hi)}"
                + (f", in-slice {_fmt(facts.axial_diameter_mm)}" if facts.axial_diameter_mm is not None else "")
                + (f" (box sides to diagonal {_fmt(lo)}-{_fmt(hi)})" if facts.kind == "bbox" else ""))
    reasons = []
    for claim in sizes:
        v = claim.value
        tol = opts.tolerance(v["largest_mm"])
        if v["qualifier"] == "lt":
            ok = lo <= v["largest_mm"] + tol
            said = f"text < {_fmt(v['largest_mm'])}"
        elif v["qualifier"] == "gt":
            ok = hi >= v["largest_mm"] - tol
            said = f"text > {_fmt(v['largest_mm'])}"
        elif v["qualifier"] == "range":
            a, b = min(v["values_mm"]), max(v["values_mm"])
            ok = hi >= a - opts.tolerance(a) and lo <= b + tol
            said = f"text {_fmt(a)}-{_fmt(b)}"
        else:
            ok = lo - tol <= v["largest_mm"] <= hi + tol
            said = f"text {_fmt(v['largest_mm'])}"
        if ok:
            return Check("size", "consistent", f"{said}; {measured}; tolerance {_fmt(tol)}", claim.text,
                         (claim.start, claim.end), v)
        reasons.append(f"{said} (\u201c{claim.text}\u201d)")
    tol = opts.tolerance(first.value["largest_mm"])
    return Check("size", "inconsistent", f"{'; '.join(reasons)} but {measured}; tolerance {_fmt(tol)}",
                 first.text, (first.start, first.end), first.value)


def _side_words(side: str) -> str:
    return {"left": "left", "right": "right", "bilateral": "bilateral"}.get(side, side)


def _laterality_check(claims: List[Claim], facts: RegionFacts) -> Optional[Check]:
    sided = [(c, c.value) for c in claims if c.aspect == "laterality"]
    sided += [(c, c.value["side"]) for c in claims if c.aspect == "location" and c.value.get("side")]
    if not sided:
        return None
    first = sided[0][0]
    span = (first.start, first.end)
    said = sorted({s for _, s in sided})
    unilateral = [s for s in said if s in ("left", "right")]
    if facts.side is None:
        return Check("laterality", "unchecked", "the region's side is unknown (no patient geometry, no side in its "
                     "label or attributes)", first.text, span, said)
    where = (f"the region's centroid is {abs(facts.side_offset_mm or 0):.1f} mm to the patient's "
             f"{facts.side} of the midline" if facts.side_source == "geometry" and facts.side != "midline"
             else f"the region is on the {facts.side} ({facts.side_source})")
    if not unilateral:
        if facts.spans_both_sides:
            return Check("laterality", "consistent", "text bilateral; the region lies on both sides", first.text, span,
                         said)
        return Check("laterality", "unchecked", f"text bilateral; {where}: link each side's region", first.text,
                     span, said)
    if facts.side == "midline":
        return Check("laterality", "unchecked", f"text {', '.join(unilateral)}; the region's centroid is within "
                     f"{abs(facts.side_offset_mm or 0):.1f} mm of the midline", first.text, span, said)
    if facts.side in unilateral:
        match = next(c for c, s in sided if s == facts.side)
        return Check("laterality", "consistent", f"text {facts.side} (\u201c{match.text}\u201d); {where}",
                     match.text, (match.start, match.end), said)
    words = ", ".join(f"\u201c{c.text}\u201d" for c, s in sided if s in unilateral)
    return Check("laterality", "inconsistent", f"text says {' and '.join(unilateral)} ({words}) but {where}",
                 first.text, span, said)


def _related(a: str, b: str, template: LabelTemplate) -> bool:
    return a == b or a in ancestors(template, b) or b in ancestors(template, a)


def _location_check(claims: List[Claim], facts: RegionFacts, template: LabelTemplate) -> Optional[Check]:
    located = [c for c in claims if c.aspect == "location"]
    if not located:
        return None
    specific = [c for c in facts.locations
                if not any(c in ancestors(template, other) for other in facts.locations if other != c)]
    results: List[Check] = []
    for claim in located:
        span = (claim.start, claim.end)
        attribute = claim.value.get("attribute")
        if attribute:
            have = facts.attributes.get(attribute["key"])
            if have is None:
                results.append(Check("location", "unchecked", f"the region has no {attribute['key']} attribute",
                                     claim.text, span, claim.value))
            elif str(have) == str(attribute["value"]):
                results.append(Check("location", "consistent", f"text {attribute['key']} {attribute['value']}; the "
                                     f"region's {attribute['key']} is {have}", claim.text, span, claim.value))
            else:
                results.append(Check("location", "inconsistent", f"text says {attribute['key']} {attribute['value']} "
                                     f"(\u201c{claim.text}\u201d) but the region's {attribute['key']} is {have}",
                                     claim.text, span, claim.value))
            continue
        codes = [c for c in claim.value["codes"] if template.get(c) is not None]
        if not codes:
            results.append(Check("location", "unchecked", f"\u201c{claim.text}\u201d names no label of template "
                                 f"{template.id}", claim.text, span, claim.value))
            continue
        if not specific:
            results.append(Check("location", "unchecked", "nothing tells where the region lies (no organ masks, "
                                 "location attributes or organ label)", claim.text, span, claim.value))
            continue
        hits = [(c, place) for c in codes for place in specific if _related(c, place, template)]
        if hits:
            code, place = hits[0]
            finer = code != place and place in ancestors(template, code)
            note = (f"text {code}; the region lies in {place} ({facts.location_sources.get(place)})"
                    + ("; the finer place is not annotated, not verified" if finer else ""))
            results.append(Check("location", "consistent", note, claim.text, span, claim.value))
        else:
            where = ", ".join(f"{p} ({facts.location_sources.get(p)})" for p in specific)
            results.append(Check("location", "inconsistent",
                                 f"text says {' or '.join(codes)} (\u201c{claim.text}\u201d) "
                                 f"but the region lies in {where}", claim.text, span, claim.value))
    for wanted in ("consistent", "inconsistent"):
        for r in results:
            if r.result == wanted:
                return r
    return results[0]


_ENHANCING = {"present", "marked", "mild", "solid", "ring", "arterial", "washout", "capsule"}


def _enhancement_check(claims: List[Claim], facts: RegionFacts) -> Optional[Check]:
    words = [c for c in claims if c.aspect == "enhancement"]
    if not words:
        return None
    first = words[0]
    if facts.enhancement is None:
        return Check("enhancement", "unchecked", "the region has no enhancement attribute", first.text,
                     (first.start, first.end), first.value)
    region = facts.enhancement
    for claim in words:
        said = claim.value
        contradiction = ((said == "none" and region in _ENHANCING - {"mild"}) or
                         (said in _ENHANCING - {"mild"} and region == "none") or
                         (said == "ring" and region == "solid") or (said == "solid" and region == "ring"))
        if contradiction:
            return Check("enhancement", "inconsistent", f"text says {said} enhancement (\u201c{claim.text}\u201d) but "
                         f"the region's enhancement is {region}", claim.text, (claim.start, claim.end), said)
    return Check("enhancement", "consistent", f"text {', '.join(c.value for c in words)}; region {region}",
                 first.text, (first.start, first.end), first.value)


def compare(claims: List[Claim], facts: RegionFacts, template: LabelTemplate,
            options: Optional[ConsistencyOptions] = None) -> Tuple[str, str, List[Check]]:
    """(state, note, checks) of ``claims`` against ``facts``."""
    opts = options or ConsistencyOptions()
    checks = [c for c in (_size_check(claims, facts, opts), _laterality_check(claims, facts),
                          _location_check(claims, facts, template), _enhancement_check(claims, facts)) if c]
    bad = [c for c in checks if c.result == "inconsistent"]
    good = [c for c in checks if c.result == "consistent"]
    if bad:
        return "inconsistent", "; ".join(f"{c.aspect}: {c.reason}" for c in bad), checks
    if good:
        return "consistent", "consistent: " + ", ".join(c.aspect for c in good), checks
    return "unchecked", ("; ".join(f"{c.aspect}: {c.reason}" for c in checks) if checks
                         else "no size, side, location or enhancement to check in the text"), checks


def check_link(document: AnnotationDocument, link: TextLink, template: LabelTemplate,
               masks: Mapping[str, np.ndarray], options: Optional[ConsistencyOptions] = None) -> Consistency:
    """The automatic consistency proposal for ``link`` (not stored; see :func:`check_links`)."""
    if link.anchor_state == "stale":
        return Consistency("unchecked", "the linked text is stale (not found in the report); link it again",
                           "automatic")
    report = report_links_of(document).report(link.text.report_id)
    tree = {label.code: ancestors(template, label.code) for label in template.labels}
    claims = extract_claims(report.text, link.text.start, link.text.end, tree)
    facts = region_facts(document, link.target, template, masks, options)
    state, note, checks = compare(claims, facts, template, options)
    return Consistency(state, note, "automatic", tuple(c.to_dict() for c in checks), facts.to_dict())


@dataclass(frozen=True)
class LinkCheckResult:
    """The outcome for one link: the stored state and the automatic proposal."""

    link_id: str
    target: str
    semantic_type: str
    quote: str
    anchor_state: str
    state: str
    source: str
    note: str
    proposal: Consistency

    def to_dict(self) -> Dict[str, Any]:
        return {"link": self.link_id, "target": self.target, "semantic_type": self.semantic_type,
                "quote": self.quote, "anchor": self.anchor_state, "state": self.state, "source": self.source,
                "note": self.note, "proposal": self.proposal.to_dict()}


def check_links(document: AnnotationDocument, template: LabelTemplate, masks: Mapping[str, np.ndarray],
                options: Optional[ConsistencyOptions] = None) -> Tuple[AnnotationDocument, List[LinkCheckResult]]:
    """Check every link; automatic states are replaced by the new proposals, a person's decision
    is kept (its proposal is reported beside it)."""
    results: List[LinkCheckResult] = []
    for link in report_links_of(document).links:
        proposal = check_link(document, link, template, masks, options)
        if link.consistency.source == "person":
            kept = dataclasses.replace(link.consistency, region=proposal.region)
            document = replace_link(document, dataclasses.replace(link, consistency=kept))
            state, source, note = kept.state, "person", kept.note
        else:
            document = replace_link(document, dataclasses.replace(link, consistency=proposal))
            state, source, note = proposal.state, "automatic", proposal.note
        results.append(LinkCheckResult(link.id, link.target, link.semantic_type, link.text.quote, link.anchor_state,
                                       state, source, note, proposal))
    return document, results
