"""``mmanno qc``: compare two annotations of a case, run batch QC, list the metrics, compute kappas.

* ``mmanno qc compare REF TEST [--series DIR] [--template T] [--task TASK] --json OUT.json
  [--report OUT.html] [--csv OUT.csv]``
* ``mmanno qc batch MANIFEST.csv --out DIR [--workers N]``
* ``mmanno qc metrics`` - the metric registry (what the report, the CLI and the Slicer table list)
* ``mmanno qc agreement SCORES.csv --raters A,B[,C...] [--weights linear|quadratic]`` - kappa of
  ratings (e.g. erosion 0-5, JSN 0-4, TI-RADS) from a table with one row per subject.

Exit status of ``compare`` and ``batch``: 0 when the verdict is "fit for intended use", 1 when it
is limited or rework (the command ran and found problems), 2 on bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from RTSSBridgeLib.cliutil import (
    EXIT_FAILED_CHECK,
    EXIT_OK,
    Parser,
    Progress,
    add_json_option,
    emit_json,
    load_label_set,
)
from RTSSBridgeLib.errors import InputError

from .config import COMPARISONS, DOMAINS, QCConfig, load_config


def _config(args: argparse.Namespace) -> QCConfig:
    config = load_config(args.task) if getattr(args, "task", None) else QCConfig()
    changes: Dict[str, Any] = {}
    for option, name in (("threshold", "dice_threshold"), ("nsd_tolerance_mm", "nsd_tolerance_mm"),
                         ("domain", "domain"), ("comparison", "comparison")):
        value = getattr(args, option, None)
        if value is not None:
            changes[name] = value
    return config.replace(**changes) if changes else config


def _read_document(path: str) -> Dict[str, Any]:
    import json

    from RTSSBridgeLib.resources import schema_path

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError("no such file", file=path, field="--document") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", file=path, field="--document") from exc
    if not isinstance(data, dict):
        raise InputError("must hold a JSON object (an annotation document)", file=path, field="--document")
    try:
        schema_path("annotation-document")
    except InputError:
        return data  # the annotation-document schema arrives with MultiModalAnnotation's documents
    from .config import validate_json

    validate_json(data, "annotation-document", path)
    return data


def run_compare(reference: str, test: str, *, series: Optional[str] = None, template: Optional[str] = None,
                config: Optional[QCConfig] = None, case_id: Optional[str] = None, body_mask: Optional[str] = None,
                documents: Optional[List[str]] = None) -> Any:
    """Read both inputs and compare them (what ``qc compare`` and every batch case do)."""
    from .compare import compare_volumes
    from .readers import attach_series_image, read_labeled_volume

    cfg = config or QCConfig()
    label_set = load_label_set(template) if template else None
    ref = read_labeled_volume(reference, series)
    tst = read_labeled_volume(test, series)
    body = None
    if body_mask:
        from RTSSBridgeLib.nifti import read_nifti

        from .resample import resample_array, same_grid

        image = read_nifti(body_mask)
        body = image.voxels != 0
        if not same_grid(image.geometry, ref.geometry):
            body = resample_array(body, image.geometry, ref.geometry)
    elif cfg.domain == "mask":
        raise InputError("domain 'mask' needs --body-mask FILE", field="--domain")
    if series and ref.image is None:
        attach_series_image(ref, series)
    docs = [_read_document(p) for p in documents or []]
    name = case_id or _case_name(test)
    return compare_volumes(ref, tst, cfg, label_set=label_set, case_id=name, body_mask=body, documents=docs)


def _case_name(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    for ext in (".nii.gz", ".nii", ".dcm", ".json"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


def _cmd_compare(args: argparse.Namespace) -> int:
    from .report import write_case_outputs

    config = _config(args)
    comparison = run_compare(args.reference, args.test, series=args.series, template=args.template, config=config,
                             case_id=args.case_id, body_mask=args.body_mask, documents=args.document)
    write_case_outputs(comparison, None, args.report, args.csv, args.lang)
    emit_json(args.json, comparison.result)
    verdict = comparison.result["verdict"]
    if args.json != "-":
        for lab in comparison.result["labels"]:
            flag = "  SPECIAL REVIEW" if lab["special_review"] else ""
            dice = "—" if lab["dice"] is None else f"{lab['dice']:.4f}"
            hd95 = "—" if lab["hausdorff95_mm"] is None else f"{lab['hausdorff95_mm']:.2f} mm"
            print(f"{lab['label']:24} Dice {dice}  HD95 {hd95}{flag}")
        print(f"verdict: {verdict['title']}")
        if args.report:
            print(f"report: {args.report}")
    return EXIT_OK if verdict["status"] == "fit" else EXIT_FAILED_CHECK


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import read_manifest, run_batch

    config = _config(args)
    cases = read_manifest(args.manifest)
    summary = run_batch(cases, Path(args.out), config=config, workers=args.workers, template=args.template,
                        progress=Progress("qc batch", enabled=not args.quiet), lang=args.lang)
    emit_json(args.json, summary)
    if args.json != "-":
        counts = summary["verdict"]["counts"]
        print(f"{len(summary['cases'])} cases: {counts['fit']} fit, {counts['limited']} limited, "
              f"{counts['rework']} rework, {counts['error']} failed")
        print(f"verdict: {summary['verdict']['title']}")
        print(f"report: {Path(args.out) / 'report.html'}")
    return EXIT_OK if summary["verdict"]["status"] == "fit" else EXIT_FAILED_CHECK


def _cmd_metrics(args: argparse.Namespace) -> int:
    from .metrics import DETECTION_METRICS, PAIR_METRICS

    entries = [m.describe() for m in PAIR_METRICS + DETECTION_METRICS]
    emit_json(args.json, {"metrics": entries})
    if args.json != "-":
        for e in entries:
            unit = f" [{e['unit']}]" if e["unit"] else ""
            title = e["title_zh"] if args.lang.startswith("zh") else e["title"]
            print(f"{e['name']:28} {title}{unit} ({e['direction']} is better)")
    return EXIT_OK


def _cmd_agreement(args: argparse.Namespace) -> int:
    from .agreement import cohen_kappa, fleiss_kappa, pearson, scott_pi

    path = args.table
    if not os.path.isfile(path):
        raise InputError("no such file", file=path)
    with open(path, newline="", encoding="utf-8-sig") as fp:
        reader = csv.DictReader(fp)
        columns = reader.fieldnames or []
        raters = [r.strip() for r in args.raters.split(",") if r.strip()]
        if len(raters) < 2:
            raise InputError("name at least two rater columns", field="--raters")
        missing = [r for r in raters if r not in columns]
        if missing:
            raise InputError(f"column(s) {', '.join(missing)} not in the header {columns}", file=path, field="--raters")
        rows = list(reader)
    ratings: List[List[Any]] = []
    for n, row in enumerate(rows, start=2):
        values = [row[r].strip() for r in raters]
        if any(v == "" for v in values):
            continue  # a subject some rater did not score is left out (counted below)
        try:
            ratings.append([int(v) if v.lstrip("-").isdigit() else v for v in values])
        except ValueError as exc:  # pragma: no cover - int() of a digit string cannot fail
            raise InputError(str(exc), file=path, field=f"line {n}") from exc
    categories = None
    if args.scale:
        lo, _, hi = args.scale.partition("-")
        try:
            categories = list(range(int(lo), int(hi) + 1))
        except ValueError as exc:
            raise InputError(f"must be LOW-HIGH integers, got {args.scale!r}", field="--scale") from exc
    result: Dict[str, Any] = {"raters": raters, "subjects": len(ratings), "left_out": len(rows) - len(ratings)}
    if len(raters) == 2:
        a = [r[0] for r in ratings]
        b = [r[1] for r in ratings]
        result["cohen_kappa"] = cohen_kappa(a, b, None, categories).to_dict()
        if args.weights:
            result["weighted_kappa"] = cohen_kappa(a, b, args.weights, categories).to_dict()
        result["scott_pi"] = scott_pi(a, b, categories).to_dict()
        if all(isinstance(v, int) for v in a + b):
            result["pearson"] = pearson([float(v) for v in a], [float(v) for v in b]).to_dict()
    result["fleiss_kappa"] = fleiss_kappa(ratings, categories).to_dict()
    emit_json(args.json, result)
    if args.json != "-":
        for key in ("cohen_kappa", "weighted_kappa", "scott_pi", "fleiss_kappa", "pearson"):
            if key in result:
                value = result[key]["value"]
                print(f"{key:16} {'undefined: ' + result[key]['reason'] if value is None else f'{value:.4f}'}")
    return EXIT_OK


def register(subparsers: Any) -> None:
    qc = subparsers.add_parser("qc", help="quality control: compare annotations, batch QC, metrics, agreement",
                               description="Quality-control measures of annotations (R-9, R-10, Appendix D).")
    sub = qc.add_subparsers(dest="qc_command", metavar="QC_COMMAND", parser_class=Parser)
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--template", help="label template file (labels matched by its codes)")
        p.add_argument("--task", help="QC configuration file, or a task file whose 'qc' object holds the thresholds")
        p.add_argument("--threshold", type=float, help="Dice below which a label goes to special review "
                       "(default 0.75, or the task's)")
        p.add_argument("--nsd-tolerance-mm", type=float, dest="nsd_tolerance_mm",
                       help="tolerance of the normalised surface distance (default 2 mm)")
        p.add_argument("--domain", choices=DOMAINS, help="where true negatives are counted (default image)")
        p.add_argument("--comparison", choices=COMPARISONS,
                       help="what is compared (default annotators); ai-vs-human: REF is the human-corrected result, "
                            "TEST the AI proposal")
        p.add_argument("--lang", default="en", choices=("en", "zh"), help="language of metric titles in the report")
        add_json_option(p)

    p = sub.add_parser("compare", help="compare a reference and a test annotation of one case",
                       description="Compare REF and TEST (NIfTI labelmaps, folders of NIfTI masks; RTSS files and "
                                   "annotation packages once their readers are registered). Labels are matched by "
                                   "template code, then label value, then ROI name. Exit 0 when the verdict is fit "
                                   "for intended use, 1 otherwise.")
    p.add_argument("reference", metavar="REF")
    p.add_argument("test", metavar="TEST")
    p.add_argument("--series", help="image series folder (RTSS inputs; background of the thumbnails)")
    p.add_argument("--report", metavar="OUT.html", help="write the self-contained HTML report")
    p.add_argument("--csv", metavar="OUT.csv", help="write one CSV row per label")
    p.add_argument("--case-id", help="case identifier shown in the report (default: the test file name)")
    p.add_argument("--body-mask", help="NIfTI body mask: the domain of true negatives with --domain mask")
    p.add_argument("--document", action="append", help="annotation document (JSON) to check against the rules; "
                   "repeatable")
    common(p)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("batch", help="run compare over every case of a manifest in parallel",
                       description="MANIFEST.csv has columns case_id, reference, test (paths relative to the "
                                   "manifest) and optionally series, template. Each case gets its JSON, CSV and "
                                   "HTML in OUT/cases/<case_id>/; the batch report is OUT/report.html (+ .json, "
                                   ".csv). A broken case is recorded and the others go on.")
    p.add_argument("manifest", metavar="MANIFEST.csv")
    p.add_argument("--out", required=True, help="new (or empty) output folder")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel processes (default: cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    common(p)
    p.set_defaults(func=_cmd_batch)

    p = sub.add_parser("metrics", help="list the metric registry",
                       description="Every metric with its name, title, unit, direction, definition and reference.")
    p.add_argument("--lang", default="en", choices=("en", "zh"))
    add_json_option(p)
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser("agreement", help="kappa, weighted kappa, Scott's pi, Fleiss' kappa of ratings",
                       description="Agreement of raters from a CSV with one row per subject and one column per "
                                   "rater (R-9.1.2, Appendix D). Two raters: Cohen's kappa (+ weighted), Scott's pi, "
                                   "Pearson r; any number: Fleiss' kappa. Rows with an empty rating are left out.")
    p.add_argument("table", metavar="SCORES.csv")
    p.add_argument("--raters", required=True, help="comma-separated rater column names")
    p.add_argument("--weights", choices=("linear", "quadratic"), help="weighted kappa for ordinal scores")
    p.add_argument("--scale", help="the ordinal scale LOW-HIGH, e.g. 0-5 for erosion, 0-4 for JSN")
    add_json_option(p)
    p.set_defaults(func=_cmd_agreement)
