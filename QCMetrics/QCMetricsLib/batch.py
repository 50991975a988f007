"""Batch QC (R-6.9, R-10.2): every case of a manifest compared in parallel processes.

The manifest is a CSV with a header and the columns ``case_id``, ``reference``, ``test`` and
optionally ``series`` and ``template`` (paths relative to the manifest's folder). Each case runs in
a worker process (``concurrent.futures`` with the ``spawn`` start method, so workers start clean
on every platform) and writes ``cases/<case_id>/qc.json``, ``qc.csv`` and ``report.html``. A case
that fails is recorded with its one-line reason and the others go on; a worker that dies (a crash
in native code) is replaced and the cases it held are retried one by one.

Aggregation uses each metric's batch policy: a distance that is undefined because one mask is
empty is replaced by the worst case (the image diagonal, or the configured value) and counted;
``exclude`` leaves it out and counts it. Per label the batch reports the number of cases, mean,
median and minimum Dice, mean HD95 and ASSD, and the Pearson correlation of reference and test
volumes across cases (R-9.1). The batch verdict follows :func:`QCMetricsLib.verdict.batch_verdict`.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import re
import statistics
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.labels import LabelSet

from . import __version__
from .config import QCConfig
from .verdict import batch_verdict

SCHEMA_ID = "https://multimodalannotation.github.io/schemas/qc-batch/v1"
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
REQUIRED_COLUMNS = ("case_id", "reference", "test")
OPTIONAL_COLUMNS = ("series", "template")
#: Distance metrics whose undefined values get the worst-case policy in aggregation.
DISTANCE_METRICS = ("hausdorff_mm", "hausdorff95_mm", "mean_surface_distance_mm", "masd_mm")


@dataclass(frozen=True)
class BatchCase:
    case_id: str
    reference: str
    test: str
    series: Optional[str] = None
    template: Optional[str] = None


def read_manifest(path: str) -> List[BatchCase]:
    """The cases of a manifest CSV; InputError naming the line and column on any problem."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such file", file=str(path))
    base = p.resolve().parent
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason})", file=str(path)) from exc
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"header lacks column(s) {', '.join(missing)} (found {columns})", file=str(path),
                         field="header")
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise InputError(f"unknown column(s) {', '.join(unknown)}", file=str(path), field="header")
    cases: List[BatchCase] = []
    seen: Dict[str, int] = {}
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        case_id = row.get("case_id", "")
        if not _CASE_ID.match(case_id):
            raise InputError(f"{case_id!r} must be 1-128 letters, digits, '.', '_' or '-' (it names a folder)",
                             file=f"{path}:{line}", field="case_id")
        if case_id in seen:
            raise InputError(f"{case_id} repeats line {seen[case_id]}", file=f"{path}:{line}", field="case_id")
        seen[case_id] = line

        def resolve(column: str, row: Dict[str, str] = row, line: int = line) -> Optional[str]:
            value = row.get(column, "")
            if not value:
                if column in REQUIRED_COLUMNS:
                    raise InputError("is empty", file=f"{path}:{line}", field=column)
                return None
            return str((base / value).resolve()) if not os.path.isabs(value) else value

        cases.append(BatchCase(case_id, resolve("reference") or "", resolve("test") or "", resolve("series"),
                               resolve("template")))
    if not cases:
        raise InputError("lists no case", file=str(path))
    return cases


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, InputError) else f"{type(exc).__name__}: {text}"


def run_case(case: BatchCase, out_dir: str, config: QCConfig, label_set: Optional[LabelSet],
             lang: str = "en") -> Dict[str, Any]:
    """Compare one case and write its outputs; never raises (a failure is returned as status error)."""
    started = time.time()
    summary: Dict[str, Any] = {"case_id": case.case_id, "pid": os.getpid(), "started": started}
    try:
        from .compare import compare_volumes
        from .readers import attach_series_image, read_labeled_volume
        from .report import write_case_outputs

        ref = read_labeled_volume(case.reference, case.series)
        test = read_labeled_volume(case.test, case.series)
        if case.series and ref.image is None:
            attach_series_image(ref, case.series)
        comparison = compare_volumes(ref, test, config, label_set=label_set, case_id=case.case_id)
        folder = Path(out_dir) / "cases" / case.case_id
        folder.mkdir(parents=True, exist_ok=True)
        write_case_outputs(comparison, str(folder / "qc.json"), str(folder / "report.html"), str(folder / "qc.csv"),
                           lang)
        result = comparison.result
        summary.update({
            "status": result["verdict"]["status"],
            "verdict": result["verdict"]["title"],
            "reasons": result["verdict"]["reasons"],
            "report": f"cases/{case.case_id}/report.html",
            "worst_case_distance_mm": result["worst_case_distance_mm"],
            "labels": [{k: lab.get(k) for k in ("label", "dice", "iou", "hausdorff_mm", "hausdorff95_mm",
                                                "mean_surface_distance_mm", "masd_mm", "nsd", "volume_ref_ml",
                                                "volume_test_ml", "special_review")} for lab in result["labels"]],
            "detection": {k: result["detection"].get(k) for k in ("n_reference_objects", "n_test_objects", "matched",
                                                                   "detection_recall", "detection_precision",
                                                                   "detection_f1")},
            "volume_signs": [int(math.copysign(1, lab["volume_test_ml"] - lab["volume_ref_ml"]))
                             if lab["volume_test_ml"] != lab["volume_ref_ml"] else 0
                             for lab in result["labels"] if lab["reference_value"] is not None
                             and lab["test_value"] is not None],
            "error": None,
        })
    except Exception as exc:
        # Reports name inputs by file name only (a folder path may carry a patient's name or ID).
        message = _one_line(exc)
        for path in (case.reference, case.test, case.series):
            if path:
                message = message.replace(str(path), os.path.basename(os.path.normpath(path)))
        summary.update({"status": "error", "error": message, "labels": [], "detection": {},
                        "volume_signs": [], "reasons": [message]})
        if os.environ.get("MMANNO_DEBUG"):
            traceback.print_exc()
    summary["finished"] = time.time()
    return summary


def _load_templates(cases: List[BatchCase], template: Optional[str]) -> Dict[Optional[str], Optional[LabelSet]]:
    """Label sets are read in the parent (the --template loader hook lives there) and sent to workers."""
    from RTSSBridgeLib.cliutil import load_label_set

    paths = {c.template or template for c in cases}
    return {p: (load_label_set(p) if p else None) for p in paths}


def run_batch(cases: List[BatchCase], out: Path, config: Optional[QCConfig] = None, workers: int = 2,
              template: Optional[str] = None, progress: Optional[Callable[[int, int], None]] = None,
              lang: str = "en") -> Dict[str, Any]:
    """Run every case into the new folder ``out`` and write the batch report; returns its JSON."""
    from RTSSBridgeLib.fileio import atomic_directory

    if workers < 1:
        raise InputError(f"must be at least 1, got {workers}", field="--workers")
    cfg = config or QCConfig()
    label_sets = _load_templates(cases, template)
    started = time.time()
    with atomic_directory(out) as tmp:
        results = _run_all(cases, str(tmp), cfg, label_sets, template, workers, progress, lang)
        ordered = [results[c.case_id] for c in cases]
        summary = summarise(ordered, cfg, workers, time.time() - started)
        write_batch_outputs(summary, tmp, lang)
    return summary


def _run_all(cases: List[BatchCase], out_dir: str, cfg: QCConfig, label_sets: Dict[Optional[str], Optional[LabelSet]],
             template: Optional[str], workers: int, progress: Optional[Callable[[int, int], None]],
             lang: str) -> Dict[str, Dict[str, Any]]:
    results: Dict[str, Dict[str, Any]] = {}
    total = len(cases)
    if progress:
        progress(0, total)

    def record(result: Dict[str, Any]) -> None:
        results[result["case_id"]] = result
        if progress:
            progress(len(results), total)

    context = multiprocessing.get_context("spawn")
    retry: List[BatchCase] = []
    with ProcessPoolExecutor(max_workers=min(workers, total), mp_context=context) as pool:
        futures: Dict[Future, BatchCase] = {
            pool.submit(run_case, c, out_dir, cfg, label_sets[c.template or template], lang): c for c in cases}
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for fut in done:
                case = futures[fut]
                try:
                    record(fut.result())
                except BrokenProcessPool:
                    retry.append(case)
                except Exception as exc:  # pickling problems and the like: recorded, the batch goes on
                    record({"case_id": case.case_id, "status": "error", "error": _one_line(exc), "labels": [],
                            "detection": {}, "volume_signs": [], "reasons": [_one_line(exc)]})
    for case in retry:  # a worker died: retry alone, so that only the case that kills it is lost
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as single:
            try:
                record(single.submit(run_case, case, out_dir, cfg, label_sets[case.template or template],
                                     lang).result())
            except BrokenProcessPool:
                record({"case_id": case.case_id, "status": "error", "labels": [], "detection": {},
                        "error": "the worker process died while comparing this case", "volume_signs": [],
                        "reasons": ["the worker process died while comparing this case"]})
    return results


def _worst(value: Optional[float], case: Dict[str, Any], policy: str) -> tuple[Optional[float], bool]:
    if value is not None:
        return value, False
    if policy == "exclude":
        return None, True
    if policy == "diagonal":
        return float(case.get("worst_case_distance_mm") or float("nan")), True
    return float(policy), True


def summarise(cases: List[Dict[str, Any]], cfg: QCConfig, workers: int, seconds: float) -> Dict[str, Any]:
    """Per-label aggregates with the worst-case policy, the batch verdict and the case list."""
    from .agreement import pearson

    by_label: Dict[str, List[tuple[Dict[str, Any], Dict[str, Any]]]] = {}
    for case in cases:
        for lab in case.get("labels", []):
            by_label.setdefault(lab["label"], []).append((case, lab))
    aggregates = []
    for label, items in by_label.items():
        dice = [lab["dice"] for _, lab in items if lab["dice"] is not None]
        entry: Dict[str, Any] = {"label": label, "cases": len(items),
                                 "dice_mean": statistics.fmean(dice) if dice else None,
                                 "dice_median": statistics.median(dice) if dice else None,
                                 "dice_min": min(dice) if dice else None,
                                 "special_review": sum(1 for _, lab in items if lab["special_review"])}
        for name in DISTANCE_METRICS:
            values, substituted = [], 0
            for case, lab in items:
                value, replaced = _worst(lab.get(name), case, cfg.worst_case_distance)
                substituted += int(replaced)
                if value is not None and math.isfinite(value):
                    values.append(value)
            entry[f"{name}_mean"] = statistics.fmean(values) if values else None
            entry[f"{name}_worst_case_substituted"] = substituted
        volumes = [(lab["volume_ref_ml"], lab["volume_test_ml"]) for _, lab in items]
        r = pearson([v[0] for v in volumes], [v[1] for v in volumes])
        entry["volume_pearson_r"] = r.to_dict()["value"]
        entry["volume_pearson_reason"] = r.reason
        aggregates.append(entry)
    verdict = batch_verdict(cases, cfg)
    pids = sorted({c["pid"] for c in cases if "pid" in c})
    return {
        "schema": SCHEMA_ID,
        "software": {"name": "MultiModalAnnotation QCMetrics", "version": __version__},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": cfg.to_dict(),
        "worst_case_policy": cfg.worst_case_distance,
        "workers": workers,
        "worker_processes": len(pids),
        "seconds": seconds,
        "verdict": verdict,
        "labels": aggregates,
        "cases": cases,
    }


BATCH_CSV_COLUMNS = ["case_id", "status", "label", "dice", "iou", "hausdorff_mm", "hausdorff95_mm",
                     "mean_surface_distance_mm", "masd_mm", "nsd", "volume_ref_ml", "volume_test_ml",
                     "special_review", "error"]


def write_batch_outputs(summary: Dict[str, Any], folder: Path, lang: str = "en") -> None:
    from RTSSBridgeLib.fileio import write_json_atomic, write_text_atomic

    from .config import validate_json
    from .report import batch_html, csv_text

    validate_json(summary, "qc-batch", str(folder / "report.json"))
    write_json_atomic(folder / "report.json", summary)
    rows = []
    for case in summary["cases"]:
        if not case.get("labels"):
            rows.append({"case_id": case["case_id"], "status": case["status"], "error": case.get("error")})
        for lab in case.get("labels", []):
            rows.append({"case_id": case["case_id"], "status": case["status"], **lab})
    write_text_atomic(folder / "report.csv", csv_text(rows, BATCH_CSV_COLUMNS))
    write_text_atomic(folder / "report.html", batch_html(summary, lang))
