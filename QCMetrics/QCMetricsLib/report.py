"""The QC report (R-10.2, R-10.2.3, R-6.11): one self-contained HTML file per case and per batch,
plus JSON and CSV of every number.

The HTML has no external resource: charts are inline SVG, slice thumbnails are PNG images inside
``data:`` URLs (encoded here with zlib), styles are inline. It shows the verdict with its reasons,
the per-label table (flagged rows highlighted, undefined values with their reason), bar charts of
Dice and HD95 per label, distance histograms, thumbnails of the slice with the largest
disagreement with the reference (green) and test (magenta) outlines, detection, AI deviation,
rule findings and the definitions of every metric from the registry. Patient names and IDs never
appear: inputs are named by file name only.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import struct
import zlib
from typing import Any, Dict, Iterable, Optional, Sequence

import numpy as np

from .compare import CaseComparison, Figure
from .metrics import DETECTION_METRICS, PAIR_METRICS, Metric

esc = html.escape
REF_COLOUR = (0, 200, 0)
TEST_COLOUR = (230, 0, 230)
BOTH_COLOUR = (255, 220, 0)
#: Columns of the label table in the case report (all registry metrics are in JSON and CSV).
TABLE_METRICS = ("dice", "iou", "conformity", "hausdorff_mm", "hausdorff95_mm", "mean_surface_distance_mm",
                 "masd_mm", "nsd", "volume_ref_ml", "volume_test_ml", "volume_difference_ml", "tp", "fp", "fn",
                 "sensitivity", "precision", "specificity", "accuracy", "kappa")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Noto Sans CJK SC", sans-serif; margin: 1.5em 2em;
       color: #1d2330; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em;
     border-bottom: 1px solid #ccd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.86em; }
td, th { border: 1px solid #cfd4dc; padding: 3px 6px; text-align: right; vertical-align: top; }
th { background: #eef1f5; text-align: center; } td.l, th.l { text-align: left; }
tr.flag td { background: #ffe7e2; } tr.err td { background: #ffd5d5; }
.verdict { padding: 0.7em 1em; border-radius: 6px; margin: 0.8em 0; border: 2px solid; }
.fit { background: #e6f6e6; border-color: #2e8b2e; } .limited { background: #fff5d6; border-color: #c89200; }
.rework, .error { background: #ffe3e0; border-color: #c0392b; }
.verdict .t { font-size: 1.3em; font-weight: 700; }
.muted { color: #667; font-size: 0.85em; } .na { color: #a33; cursor: help; }
.figs { display: flex; flex-wrap: wrap; gap: 14px; } .fig { border: 1px solid #dde; padding: 6px; }
.fig img { image-rendering: pixelated; display: block; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 10px; vertical-align: middle; }
code { background: #f2f3f6; padding: 0 3px; } .wide { overflow-x: auto; max-width: 100%; }
"""


# --------------------------------------------------------------------------- PNG and SVG
def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file of an ``(H, W, 3)`` uint8 image (8-bit RGB, no filtering)."""
    image = np.ascontiguousarray(rgb, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got {image.shape}")
    height, width = image.shape[:2]
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def _outline(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(bool)
    padded = np.pad(m, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return m & ~inner


def figure_png(fig: Figure, target: int = 220) -> tuple[bytes, int, int]:
    """The thumbnail of a figure (grey image or faint fills, outlines on top), its display size."""
    h, w = fig.ref2d.shape
    if fig.image2d is not None and fig.image2d.size:
        img = fig.image2d
        lo, hi = np.percentile(img, [1, 99]) if img.size > 1 else (float(img.min()), float(img.max()))
        grey = np.clip((img - lo) / (hi - lo if hi > lo else 1.0) * 255.0, 0, 255).astype(np.uint8)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
    else:
        rgb = np.full((h, w, 3), 24, dtype=np.uint8)
        rgb[fig.ref2d] = (20, 70, 20)
        rgb[fig.test2d & ~fig.ref2d] = (70, 20, 70)
        rgb[fig.test2d & fig.ref2d] = (60, 60, 30)
    ro, to = _outline(fig.ref2d), _outline(fig.test2d)
    rgb[ro] = REF_COLOUR
    rgb[to] = TEST_COLOUR
    rgb[ro & to] = BOTH_COLOUR
    scale = max(1, int(target // max(h, w)))
    rgb = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    row_mm, col_mm = fig.pixel_mm
    width_px = w * scale
    height_px = round(h * scale * row_mm / col_mm)
    return png_bytes(rgb), width_px, height_px


def svg_bars(items: Sequence[tuple[str, Optional[float], bool]], unit: str, threshold: Optional[float] = None,
             top: Optional[float] = None, width: int = 520) -> str:
    """Horizontal bar chart: (label, value or None, flagged)."""
    bar_h, gap, left = 18, 6, 150
    values = [v for _, v, _ in items if v is not None and math.isfinite(v)]
    top_value = top if top is not None else (max(values) if values else 1.0) or 1.0
    height = len(items) * (bar_h + gap) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    scale = (width - left - 60) / top_value
    for n, (label, value, flagged) in enumerate(items):
        y = 10 + n * (bar_h + gap)
        parts.append(f'<text x="{left - 6}" y="{y + 13}" font-size="11" text-anchor="end">{esc(label[:24])}</text>')
        if value is None or not math.isfinite(value):
            parts.append(f'<text x="{left + 4}" y="{y + 13}" font-size="11" fill="#a33">undefined</text>')
            continue
        length = max(0.0, min(value, top_value)) * scale
        colour = "#d9534f" if flagged else "#4a7fc1"
        parts.append(f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar_h}" fill="{colour}"/>')
        parts.append(f'<text x="{left + length + 4:.1f}" y="{y + 13}" font-size="11">{value:.3g} {esc(unit)}</text>')
    if threshold is not None:
        x = left + threshold * scale
        parts.append(f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{height - 20}" stroke="#c0392b" '
                     'stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" font-size="10" fill="#c0392b" text-anchor="middle">'
                     f'threshold {threshold:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_histogram(edges: Sequence[float], series: Sequence[tuple[str, Sequence[int], str]], title: str,
                  width: int = 300, height: int = 150) -> str:
    """Grouped histogram of one or more count series over shared bin edges."""
    if not edges or not series:
        return '<p class="muted">no distances</p>'
    n_bins = len(edges) - 1
    top = max([max(s[1]) if len(s[1]) else 0 for s in series] + [1])
    left, bottom = 34, 26
    plot_w, plot_h = width - left - 8, height - bottom - 22
    bw = plot_w / n_bins / len(series)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="{left}" y="12" font-size="11">{esc(title)}</text>']
    for s_index, (_name, counts, colour) in enumerate(series):
        for b, count in enumerate(counts):
            h = plot_h * count / top
            x = left + (b * len(series) + s_index) * bw
            parts.append(f'<rect x="{x:.1f}" y="{18 + plot_h - h:.1f}" width="{max(bw - 0.5, 0.5):.1f}" '
                         f'height="{h:.1f}" fill="{colour}"/>')
    parts.append(f'<line x1="{left}" y1="{18 + plot_h}" x2="{left + plot_w}" y2="{18 + plot_h}" stroke="#555"/>')
    parts.append(f'<text x="{left}" y="{height - 8}" font-size="10">0</text>')
    parts.append(f'<text x="{left + plot_w}" y="{height - 8}" font-size="10" text-anchor="end">{edges[-1]:.3g} mm'
                 '</text>')
    parts.append(f'<text x="{left - 4}" y="{24}" font-size="10" text-anchor="end">{top}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- formatting
def fmt(value: Any, metric: Optional[Metric] = None) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        if metric is not None and metric.unit == "mL":
            return f"{value:.3f}"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return esc(str(value))


def _cell(entry: Dict[str, Any], m: Metric) -> str:
    value = entry.get(m.name)
    reason = entry.get("reasons", {}).get(m.name, "")
    if value is None:
        return f'<td class="na" title="{esc(reason)}">—</td>'
    title = f' title="{esc(reason)}"' if reason else ""
    return f"<td{title}>{fmt(value, m)}</td>"


def _metric_header(m: Metric, lang: str, domain: str) -> str:
    unit = f" ({esc(m.unit)})" if m.unit and m.unit != "voxels" else ""
    extra = f"<br><span class='muted'>domain: {esc(domain)}</span>" if m.uses_domain else ""
    return f'<th title="{esc(m.definition)}">{esc(m.localized_title(lang))}{unit}{extra}</th>'


def _verdict_html(verdict: Dict[str, Any], lang: str) -> str:
    title = verdict["title_zh"] if lang.startswith("zh") else verdict["title"]
    items = "".join(f"<li>{esc(r)}</li>" for r in verdict.get("reasons", []))
    strengths = "".join(f"<li>{esc(r)}</li>" for r in verdict.get("strengths", []))
    flagged = verdict.get("flagged_labels")
    flagged_html = (f"<p><b>Flagged for special review:</b> {esc(', '.join(flagged))}</p>" if flagged else "")
    return (f'<div class="verdict {esc(verdict["status"])}"><div class="t">Verdict: {esc(title)}</div>'
            f"<ul>{items}</ul>{flagged_html}"
            + (f"<p><b>Strengths:</b></p><ul>{strengths}</ul>" if strengths else "") + "</div>")


def _definitions_html(lang: str) -> str:
    rows = []
    for m in PAIR_METRICS + DETECTION_METRICS:
        policy = m.empty_policy
        rows.append(f'<tr><td class="l"><code>{esc(m.name)}</code></td>'
                    f'<td class="l">{esc(m.localized_title(lang))}</td>'
                    f'<td>{esc(m.unit)}</td><td class="l">{esc(m.definition)}</td><td class="l">{esc(m.reference)}</td>'
                    f'<td>{esc(m.direction.value)}</td><td class="l">both empty: {esc(policy.both_empty)}; '
                    f'reference empty: {esc(policy.ref_empty)}; test empty: {esc(policy.test_empty)}</td>'
                    f'<td class="l">{esc(m.batch_policy)}</td></tr>')
    return ('<table><tr><th>name</th><th>title</th><th>unit</th><th>definition</th><th>reference</th>'
            '<th>better</th><th>empty inputs</th><th>batch</th></tr>' + "".join(rows) + "</table>"
            '<p class="muted">Surfaces are the 6-connected boundary voxels (zero padding at the image edge); '
            "distances are between voxel centres in millimetres in physical space (anisotropic and oblique grids "
            "exact). Other tools differ: DeepMind surface-distance weights surface elements by area; SimpleITK's "
            "HausdorffDistanceImageFilter averages over all foreground voxels.</p>")


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")


# --------------------------------------------------------------------------- case report
def case_html(comparison: CaseComparison, lang: str = "en") -> str:
    r = comparison.result
    labels = r["labels"]
    domain = r["options"]["domain"]
    metrics = [m for m in PAIR_METRICS if m.name in TABLE_METRICS]
    head = "".join(_metric_header(m, lang, domain) for m in metrics)
    rows = []
    for e in labels:
        cls = ' class="flag"' if e["special_review"] else ""
        cells = "".join(_cell(e, m) for m in metrics)
        review = "; ".join(e["review_reasons"]) or "—"
        rows.append(f'<tr{cls}><td class="l"><b>{esc(e["label"])}</b><br><span class="muted">{esc(e["name"])}</span>'
                    f'</td><td class="l">{esc(e["matched_by"] or "unmatched")}</td>{cells}'
                    f'<td class="l">{esc(review)}</td></tr>')
    table = (f'<div class="wide"><table><tr><th class="l">label</th><th>matched by</th>{head}'
             '<th class="l">special review</th></tr>' + "".join(rows) + "</table></div>")
    footnotes = sorted({f"{e['label']}: {name}: {reason}" for e in labels for name, reason in e["reasons"].items()})
    notes_html = ("<p class='muted'>" + "<br>".join(esc(n) for n in footnotes) + "</p>") if footnotes else ""
    threshold = r["options"]["dice_threshold"]
    dice_chart = svg_bars([(e["label"], e["dice"], e["special_review"]) for e in labels], "", threshold, 1.0)
    hd_chart = svg_bars([(e["label"], e["hausdorff95_mm"], e["special_review"]) for e in labels], "mm",
                        r["options"]["verdict"]["max_hd95_mm"])
    figs = []
    for fig in comparison.figures:
        data, w, h = figure_png(fig)
        figs.append(f'<div class="fig"><img alt="{esc(fig.label)} slice {fig.slice_k}" width="{w}" height="{h}" '
                    f'src="data:image/png;base64,{base64.b64encode(data).decode()}">'
                    f'<div class="muted">{esc(fig.label)} — slice k = {fig.slice_k} (largest disagreement)</div></div>')
    hists = []
    for label, hist in comparison.histograms.items():
        hists.append(svg_histogram(hist["edges_mm"], [("reference → test", hist["ref_to_test"], "#2e8b2e"),
                                                      ("test → reference", hist["test_to_ref"], "#b030b0")],
                                   f"{label}: surface distances"))
    det = r["detection"]
    detection_html = _detection_html(det)
    deviation_html = _deviation_html(r.get("deviation"))
    findings = "".join(
        f'<tr class="{"err" if f["severity"] == "error" else ""}"><td class="l">{esc(f["severity"])}</td>'
        f'<td class="l"><code>{esc(f["rule"])}</code></td><td class="l">{esc(f["label"])}</td>'
        f'<td class="l">{esc(f["message"])}</td><td class="l muted">{esc(f["principle"])}</td></tr>' for f in r["rules"]
    ) or '<tr><td colspan="5" class="l">no findings</td></tr>'
    ref, test = r["reference"], r["test"]
    grid = ref["grid"]
    body = f"""
<h1>QC report — case {esc(r['case_id'])}</h1>
<p class="muted">{esc(r['software']['name'])} {esc(r['software']['version'])}, created {esc(r['created_utc'])} (UTC).
Comparison between {esc(r['comparison'])}.</p>
{_verdict_html(r['verdict'], lang)}
<h2>Inputs</h2>
<table>
<tr><th class="l"></th><th class="l">file</th><th class="l">reader</th><th class="l">labels</th>
<th class="l">notes</th></tr>
<tr><td class="l">reference</td><td class="l">{esc(ref['source'])}</td><td class="l">{esc(ref['reader'])}</td>
<td>{len(ref['labels'])}</td><td class="l">{esc('; '.join(ref['notes']) or '—')}</td></tr>
<tr><td class="l">test</td><td class="l">{esc(test['source'])}</td><td class="l">{esc(test['reader'])}</td>
<td>{len(test['labels'])}</td><td class="l">{esc('; '.join(test['notes']) or '—')}</td></tr>
</table>
<p>Reference grid {'×'.join(map(str, grid['shape']))} voxels at {', '.join(f'{s:.4g}' for s in grid['spacing_mm'])} mm.
Resampling: <b>{esc(r['resampling'])}</b>. True negatives counted in the domain <b>{esc(domain)}</b>.
NSD tolerance τ = {r['options']['nsd_tolerance_mm']:g} mm; HD{r['options']['hd_percentile']:g} as the robust
Hausdorff distance. Dice threshold for special review: {threshold:g}.</p>
<h2>Labels</h2>
{table}
{notes_html}
<h2>Per-label charts</h2>
<div class="figs"><div><p>Dice per label</p>{dice_chart}</div><div><p>HD95 per label (mm)</p>{hd_chart}</div></div>
<h2>Where they disagree most</h2>
<p class="legend">Outlines: <span style="background:rgb{REF_COLOUR}"></span>reference
<span style="background:rgb{TEST_COLOUR}"></span>test <span style="background:rgb{BOTH_COLOUR}"></span>both</p>
<div class="figs">{''.join(figs) or '<p class="muted">no label voxels</p>'}</div>
<h2>Distance histograms</h2>
<p class="legend"><span style="background:#2e8b2e"></span>reference boundary → test boundary
<span style="background:#b030b0"></span>test boundary → reference boundary</p>
<div class="figs">{''.join(hists)}</div>
<h2>Detection (objects)</h2>
{detection_html}
{deviation_html}
<h2>Rule checks</h2>
<table><tr><th class="l">severity</th><th class="l">rule</th><th class="l">label</th><th class="l">finding</th>
<th class="l">principle</th></tr>{findings}</table>
<h2>Definitions</h2>
{_definitions_html(lang)}
"""
    return _page(f"QC report {r['case_id']}", body)


def _detection_html(det: Dict[str, Any]) -> str:
    if not det.get("labels"):
        return f"<p class='muted'>{esc(det.get('note', 'not computed'))}</p>"
    summary = "".join(f"<tr><td class='l'>{esc(m.localized_title())}</td><td>{fmt(det.get(m.name))}</td></tr>"
                      for m in DETECTION_METRICS)
    counts = (f"<p>Labels: {esc(', '.join(det['labels']))}. Reference objects {det['n_reference_objects']}, test "
              f"objects {det['n_test_objects']}, matched {det['matched']}, missed {det['missed']}, extra "
              f"{det['false_positive_objects']} (criterion {esc(det['options']['criterion'])}, "
              f"{det['options']['connectivity']}-connectivity).</p>")
    rows = []
    for o in det["reference_objects"][:200]:
        cls = ' class="flag"' if o["match"] is None else ""
        rows.append(f"<tr{cls}><td>{o['id']}</td><td>{fmt(o['volume_ml'] * 1000.0)}</td>"
                    f"<td class='l'>{', '.join(f'{v:.1f}' for v in o.get('centre_lps', []))}</td>"
                    f"<td>{o['match'] if o['match'] is not None else 'missed'}</td><td>{fmt(o.get('dice'))}</td>"
                    f"<td>{fmt(o.get('centre_distance_mm'))}</td><td>{fmt(o.get('hausdorff95_mm'))}</td></tr>")
    extra = [o for o in det["test_objects"] if o["match"] is None]
    more = "" if len(det["reference_objects"]) <= 200 else f"<p class='muted'>first 200 of " \
                                                            f"{len(det['reference_objects'])} objects</p>"
    return (f"{counts}<table>{summary}</table><table><tr><th>ref object</th><th>volume (mm³)</th>"
            "<th>centre (LPS mm)</th><th>test object</th><th>Dice</th><th>centre distance (mm)</th>"
            f"<th>HD95 (mm)</th></tr>{''.join(rows)}</table>{more}"
            + (f"<p>Extra test objects (no reference counterpart): {len(extra)} — "
               + esc(", ".join(f"#{o['id']} ({o['voxels']} voxels)" for o in extra[:30])) + "</p>" if extra else ""))


def _deviation_html(dev: Optional[Dict[str, Any]]) -> str:
    if not dev:
        return ""
    rows = "".join(
        f"<tr><td class='l'>{esc(d['label'])}</td><td>{fmt(d['boundary_shift_mm'])}</td>"
        f"<td>{fmt(d['boundary_shift_hd95_mm'])}</td><td>{fmt(d['missed_region_rate'])}</td>"
        f"<td>{fmt(d['over_annotation_rate'])}</td><td>{d['regions_matched']}</td><td>{d['regions_missed_by_ai']}</td>"
        f"<td>{d['regions_removed_by_human']}</td></tr>" for d in dev["labels"])
    return (f"<h2>AI proposal against the human-corrected result (R-9.1.2)</h2><p class='muted'>"
            f"{esc(dev['definition'])}</p><p>Boundary shift {fmt(dev['boundary_shift_mm'])} mm, missed-region rate "
            f"{fmt(dev['missed_region_rate'])}, over-annotation rate {fmt(dev['over_annotation_rate'])}, regions "
            f"matched {dev['regions_matched']}, unmatched {dev['regions_unmatched']}.</p>"
            "<table><tr><th class='l'>label</th><th>boundary shift ASSD (mm)</th><th>HD95 (mm)</th>"
            "<th>missed-region rate</th><th>over-annotation rate</th><th>regions matched</th>"
            f"<th>missed by AI</th><th>removed by human</th></tr>{rows}</table>")


def csv_text(rows: Iterable[Dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buffer.getvalue()


CASE_CSV_COLUMNS = ["case_id", "label", "code", "name", "reference_value", "test_value", "matched_by",
                    *[m.name for m in PAIR_METRICS], "nsd_tolerance_mm", "domain", "domain_voxels", "special_review"]


def case_csv(result: Dict[str, Any]) -> str:
    """Every label's numbers, one row per label (the JSON's ``labels``)."""
    return csv_text(({"case_id": result["case_id"], **e} for e in result["labels"]), CASE_CSV_COLUMNS)


def write_case_outputs(comparison: CaseComparison, json_path: Optional[str] = None, html_path: Optional[str] = None,
                       csv_path: Optional[str] = None, lang: str = "en") -> None:
    """Write the JSON (validated), HTML and CSV of a case, each atomically."""
    from RTSSBridgeLib.fileio import write_json_atomic, write_text_atomic

    from .config import validate_json

    validate_json(comparison.result, "qc-case", json_path or "<qc case result>")
    if json_path:
        write_json_atomic(json_path, comparison.result)
    if html_path:
        write_text_atomic(html_path, case_html(comparison, lang))
    if csv_path:
        write_text_atomic(csv_path, case_csv(comparison.result))


# --------------------------------------------------------------------------- batch report
def batch_html(summary: Dict[str, Any], lang: str = "en") -> str:
    cases = summary["cases"]
    rows = []
    for c in cases:
        dice = [lab["dice"] for lab in c.get("labels", []) if lab.get("dice") is not None]
        flagged = [lab["label"] for lab in c.get("labels", []) if lab.get("special_review")]
        det = c.get("detection") or {}
        link = (f'<a href="{esc(c["report"])}">{esc(c["case_id"])}</a>' if c.get("report") else esc(c["case_id"]))
        cls = ' class="err"' if c["status"] == "error" else ' class="flag"' if c["status"] == "rework" else ""
        detail = c.get("error") or "; ".join(c.get("reasons", [])[:3])
        rows.append(f'<tr{cls}><td class="l">{link}</td><td class="l">{esc(c["status"])}</td>'
                    f"<td>{fmt(min(dice) if dice else None)}</td><td class='l'>{esc(', '.join(flagged) or '—')}</td>"
                    f"<td>{fmt(det.get('detection_recall'))}</td><td>{fmt(det.get('detection_precision'))}</td>"
                    f"<td class='l'>{esc(detail or '—')}</td></tr>")
    label_rows = "".join(
        f"<tr><td class='l'>{esc(a['label'])}</td><td>{a['cases']}</td><td>{fmt(a['dice_mean'])}</td>"
        f"<td>{fmt(a['dice_median'])}</td><td>{fmt(a['dice_min'])}</td><td>{a['special_review']}</td>"
        f"<td>{fmt(a['hausdorff95_mm_mean'])}</td><td>{a['hausdorff95_mm_worst_case_substituted']}</td>"
        f"<td>{fmt(a['mean_surface_distance_mm_mean'])}</td><td>{fmt(a['volume_pearson_r'])}</td></tr>"
        for a in summary["labels"])
    all_dice = [lab["dice"] for c in cases for lab in c.get("labels", []) if lab.get("dice") is not None]
    edges = [i / 20 for i in range(21)]
    counts = [0] * 20
    for d in all_dice:
        counts[min(int(d * 20), 19)] += 1
    dice_hist = svg_histogram(edges, [("Dice", counts, "#4a7fc1")], "Dice of every case and label", 420, 170)
    dice_hist = dice_hist.replace(f"{edges[-1]:.3g} mm", "1")
    vcounts = summary["verdict"]["counts"]
    status_chart = svg_bars([(k, float(v), k in ("rework", "error")) for k, v in vcounts.items()], "cases")
    body = f"""
<h1>Batch QC report</h1>
<p class="muted">{esc(summary['software']['name'])} {esc(summary['software']['version'])}, created
{esc(summary['created_utc'])} (UTC). {len(cases)} cases in {summary['seconds']:.1f} s with {summary['workers']}
worker(s) ({summary['worker_processes']} processes used). Undefined distances (one mask empty) aggregated with the
worst-case policy <b>{esc(str(summary['worst_case_policy']))}</b>.</p>
{_verdict_html(summary['verdict'], lang)}
<div class="figs"><div><p>Cases per verdict</p>{status_chart}</div><div>{dice_hist}</div></div>
<h2>Per label</h2>
<table><tr><th class="l">label</th><th>cases</th><th>mean Dice</th><th>median Dice</th><th>min Dice</th>
<th>special review</th><th>mean HD95 (mm)</th><th>HD95 worst-case substitutions</th><th>mean ASSD (mm)</th>
<th>Pearson r of volumes</th></tr>{label_rows}</table>
<h2>Cases</h2>
<table><tr><th class="l">case</th><th class="l">verdict</th><th>min Dice</th><th class="l">flagged labels</th>
<th>detection recall</th><th>detection precision</th><th class="l">reasons / error</th></tr>{''.join(rows)}</table>
<h2>Definitions</h2>
{_definitions_html(lang)}
"""
    return _page("Batch QC report", body)
