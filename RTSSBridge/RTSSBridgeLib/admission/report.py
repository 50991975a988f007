"""The admission report as a self-contained HTML page (no external resources) for QC staff."""

from __future__ import annotations

import html
from typing import Any, Dict, List

_COLOURS = {"admitted": "#080", "admitted with warnings": "#a60", "rejected": "#b00"}


def _finding_rows(findings: List[Dict[str, Any]]) -> str:
    esc = html.escape
    rows = []
    for f in findings:
        files = ", ".join(esc(x) for x in f["files"][:5])
        more = f" (+{f['n_files'] - 5} more)" if f["n_files"] > 5 else ""
        css = "block" if f["blocking"] else f["severity"]
        rows.append(
            f"<tr class={css}><td>{esc(f['severity'])}{' (blocking)' if f['blocking'] else ''}</td>"
            f"<td><code>{esc(f['code'])}</code></td><td>{esc(f['series_label'] or '')}</td>"
            f"<td>{esc(f['message'])}</td><td>{esc(f['clause'])}: {esc(f['rule_title'])}</td>"
            f"<td class=files>{files}{more}</td></tr>")
    if not rows:
        return "<p>No findings.</p>"
    return ("<table><tr><th>severity</th><th>code</th><th>series</th><th>finding</th><th>rule broken</th>"
            "<th>files</th></tr>" + "".join(rows) + "</table>")


def _series_row(s: Dict[str, Any]) -> str:
    esc = html.escape
    shape = "×".join(map(str, s["shape"]))
    spacing = " × ".join(f"{v:.4g}" for v in s["spacing_mm"])
    thickness = "" if s["slice_thickness_mm"] is None else f"{s['slice_thickness_mm']:g}"
    return (f"<tr><td>{esc(s['label'])}</td><td>{shape}</td><td>{spacing}</td><td>{thickness}</td>"
            f"<td>{s['n_files']}</td><td>{esc(', '.join(s['transfer_syntaxes']))}</td>"
            f"<td style='color:{_COLOURS[s['verdict']]}'>{esc(s['verdict'])}</td></tr>")


def render_admission_html(report: Dict[str, Any]) -> str:
    """HTML page of an ``admission-report`` document."""
    esc = html.escape
    verdict = report["verdict"]
    profile = report["profile"]
    cases = []
    for case in report["cases"]:
        series_rows = "".join(_series_row(s) for s in case["series"])
        cases.append(
            f"<h3>Case {esc(case['case'])}: <span style='color:{_COLOURS[case['verdict']]}'>{esc(case['verdict'])}"
            f"</span></h3><p>{case['n_series']} image series ({esc(', '.join(case['modalities']) or 'none')}), "
            f"{case['n_files']} files; {len(case['other_objects'])} other DICOM object(s); "
            f"{len(case['data_files'])} record/data file(s).</p>"
            "<table><tr><th>series</th><th>shape i×j×k</th><th>spacing (mm)</th><th>thickness (mm)</th>"
            f"<th>files</th><th>transfer syntax</th><th>verdict</th></tr>{series_rows}</table>"
            + _finding_rows(case["findings"]))
    quarantine = report["quarantine"]
    q_rows = "".join(f"<tr><td>{esc(q['file'])}</td><td><code>{esc(q['code'])}</code></td><td>{esc(q['detail'])}</td>"
                     f"<td><code>{q['sha256'][:16]}…</code></td></tr>" for q in quarantine["files"])
    q_html = ("<p>Nothing quarantined.</p>" if not quarantine["files"] else
              f"<p>{len(quarantine['files'])} file(s) never loaded"
              + (f", copied to <code>{esc(quarantine['folder'])}</code>" if quarantine["folder"] else "")
              + ".</p><table><tr><th>file</th><th>code</th><th>why</th><th>SHA-256</th></tr>" + q_rows + "</table>")
    rules = "".join(f"<li><b>{esc(r['clause'])}</b> {esc(r['title'])}{' — blocking' if r['blocking'] else ''}</li>"
                    for r in profile["rules"])
    thickness = report["declared_thickness_mm"]
    declared = f" Declared thick slice thickness: {thickness:g} mm." if thickness else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Admission report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }} td, th {{ border: 1px solid #ccc; padding: 3px 7px;
vertical-align: top; }} th {{ background: #f0f0f0; }} tr.block td {{ background: #fdd; }}
tr.warning td {{ background: #fff6dd; }} td.files {{ font-size: 0.85em; color: #555; }}
.verdict {{ font-size: 1.4em; font-weight: bold; color: {_COLOURS[verdict]}; }}
</style></head><body>
<h1>Admission report</h1>
<p>Checked <code>{esc(report['checked_path'])}</code> with profile <b>{esc(profile['name'])}</b>
{esc(profile['version'])} ({esc(profile['title'])}) on {esc(report['created_utc'])} UTC by
{esc(report['software']['name'])} {esc(report['software']['version'])}.{declared}</p>
<p class="verdict">{esc(verdict)}</p>
<p>{report['n_cases']} case(s), {report['n_cases_admitted']} admitted; {report['n_files']} file(s) received,
{report['n_dicom_files']} read as DICOM; {report['n_blocking']} blocking finding(s).</p>
<h2>Quarantine</h2>{q_html}
<h2>Batch</h2>{_finding_rows(report['batch_findings'])}
<h2>Cases</h2>{''.join(cases) or '<p>No case found.</p>'}
<h2>Rules of the profile</h2><ul>{rules}</ul>
<p style="color:#777">Paths are relative to the checked folder. Patient names and identifiers are never shown.</p>
</body></html>
"""
