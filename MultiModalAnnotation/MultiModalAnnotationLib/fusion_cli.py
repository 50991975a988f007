"""``mmanno`` subcommands of registration-checked fusion (R-8.4.1, R-7.4, R-6.5).

* ``mmanno register FIXED MOVING --out T.h5 [--mode rigid|affine|bspline] [--init geometry|moments]
  [--landmarks FIXED.json MOVING.json] [--threshold MM] --json OUT.json`` - register MOVING (DICOM
  series folder or NIfTI) onto FIXED; write the ITK transform file and the result (``matrix_lps``
  fixed -> moving as ITK, ``matrix_ras``, metric before/after, TRE, residual, versions, parameters;
  ``registration-result`` schema). Exit 1 when an error exceeds the threshold.
* ``mmanno fusion align CT PET [--threshold MM]`` - PET-CT body-outline alignment check (8.4.1.3);
  exit 1 when flagged.
* ``mmanno fusion record DOC --reference-key KEY --moving-key KEY --result REG.json --out NEW.json`` -
  add (or replace) a moving series in the document's fusion record from ``mmanno register``
  output; the transform file must sit beside the new document (it is referenced relatively).
* ``mmanno fusion check PACKAGE`` - the fusion record of an export package: transform files
  present, SHA-256 and matrix as recorded, errors within the task threshold, no structure flagged
  (``fusion-check`` schema); exit 1 when it fails.

SimpleITK, scipy and the readers are imported inside the handlers (start-up stays light).
"""

from __future__ import annotations

import argparse
from typing import Any, Dict

from RTSSBridgeLib.cliutil import EXIT_FAILED_CHECK, EXIT_OK, Progress, add_json_option, emit_json

REGISTRATION_SCHEMA = "registration-result"
CHECK_SCHEMA = "fusion-check"


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not 3.0 <= value <= 5.0:
        raise argparse.ArgumentTypeError(f"{value:g} mm is outside 3-5 mm (8.4.1.5)")
    return value


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "register", help="register a moving image onto a fixed one (SimpleITK, Mattes MI) and measure the error",
        description="Register MOVING onto FIXED (DICOM series folders or NIfTI files). The transform maps fixed "
                    "LPS points to moving LPS points, as ITK; it is written to --out (.h5 or .tfm) and loads in "
                    "SimpleITK and Slicer. The JSON holds matrix_lps/matrix_ras, metric before/after, the landmark "
                    "TRE (with --landmarks), the image residual, versions and parameters.")
    p.add_argument("fixed", metavar="FIXED", help="reference image: DICOM series folder or .nii/.nii.gz")
    p.add_argument("moving", metavar="MOVING", help="moving image: DICOM series folder or .nii/.nii.gz")
    p.add_argument("--out", required=True, metavar="TRANSFORM", help="transform file to write (.h5 or .tfm)")
    p.add_argument("--mode", choices=("rigid", "affine", "bspline"), default="rigid", help="model (default rigid)")
    p.add_argument("--init", choices=("geometry", "moments"), default="geometry",
                   help="initialise from the image centres (geometry, default) or intensity centres (moments)")
    p.add_argument("--landmarks", nargs=2, metavar=("FIXED_JSON", "MOVING_JSON"),
                   help="landmark files paired by name for the TRE: the landmarks schema (LPS mm) or Slicer "
                        "markups point lists (.mrk.json, LPS or RAS)")
    p.add_argument("--threshold", type=_threshold, default=3.0, metavar="MM",
                   help="largest acceptable TRE / residual translation in mm (3-5, default 3; 8.4.1.5)")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations at every pyramid level (default 300, 200, 60 from coarse to fine)")
    p.add_argument("--seed", type=int, default=None, help="metric sampling seed (default: the fixed project seed)")
    p.add_argument("--no-residual", action="store_true", help="skip the image-based residual re-registration")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_option(p)
    p.set_defaults(func=_cmd_register, command="register")

    f = subparsers.add_parser("fusion", help="PET-CT alignment check and fusion-record check of a package",
                              description="Image-image fusion checks (R-8.4.1).")
    sub = f.add_subparsers(dest="fusion_command", metavar="ACTION")
    sub.required = True
    a = sub.add_parser("align", help="PET-CT body-outline alignment check (8.4.1.3)",
                       description="Compare the CT and PET body outlines in the shared field of view: centroid "
                                   "distance (translation) and principal-axis angle (rotation). Exit 1 when flagged.")
    a.add_argument("ct", metavar="CT", help="CT: DICOM series folder or NIfTI (HU)")
    a.add_argument("pet", metavar="PET", help="PET: DICOM series folder or NIfTI (activity)")
    a.add_argument("--threshold", type=_threshold, default=3.0, metavar="MM", help="translation threshold (3-5 mm)")
    a.add_argument("--rotation-threshold", type=float, default=2.0, metavar="DEG", help="rotation threshold (deg)")
    add_json_option(a)
    a.set_defaults(func=_cmd_align, command="fusion align")
    r = sub.add_parser("record", help="add a registration to the fusion record of an annotation document",
                       description="Add (or replace) a moving series in the document's fusion record (R-8.4.1.2): "
                                   "reference frame from the document's image, transform file (relative path + "
                                   "SHA-256), matrices, algorithm, versions, parameters, errors and the guard "
                                   "decision from the mmanno register JSON. The transform file must be inside the "
                                   "folder of --out. Writes a new document (never overwrites the input).")
    r.add_argument("document", metavar="DOC", help="annotation document (Appendix C JSON)")
    r.add_argument("--reference-key", required=True, metavar="KEY", help="task name of the reference image")
    r.add_argument("--moving-key", required=True, metavar="KEY", help="task name of the moving series")
    r.add_argument("--moving-modality", default="", metavar="MOD", help="DICOM modality of the moving series")
    r.add_argument("--result", required=True, metavar="REG_JSON", help="JSON written by mmanno register --json")
    r.add_argument("--threshold", type=_threshold, default=None, metavar="MM",
                   help="fusion deviation threshold (3-5 mm; default: the record's, else 3)")
    r.add_argument("--out", required=True, metavar="NEW_DOC", help="the document to write (a new file)")
    add_json_option(r)
    r.set_defaults(func=_cmd_record, command="fusion record")
    c = sub.add_parser("check", help="check the fusion record of an annotation package",
                       description="Transform files present with the recorded SHA-256 and matrix, loadable in "
                                   "SimpleITK; errors within the task threshold; no structure flagged by the "
                                   "consistency check. Exit 1 when anything fails.")
    c.add_argument("package", metavar="PACKAGE", help="export package folder or .zip")
    add_json_option(c)
    c.set_defaults(func=_cmd_check, command="fusion check")


def _cmd_register(args: argparse.Namespace) -> int:
    from RTSSBridgeLib.errors import InputError
    from RTSSBridgeLib.fileio import sha256_file

    from .fusion.accuracy import image_residual, read_landmarks, target_registration_error
    from .fusion.images import read_image
    from .fusion.registration import TRANSFORM_SUFFIXES, RegistrationParameters, register, write_transform
    from .schemas import schema_id, schema_problems

    if args.iterations is not None and args.iterations < 1:
        raise InputError(f"must be >= 1, got {args.iterations}", field="--iterations")
    if not str(args.out).lower().endswith(TRANSFORM_SUFFIXES):
        raise InputError(f"unknown transform file type; rule: one of {', '.join(TRANSFORM_SUFFIXES)}",
                         file=str(args.out), field="--out")
    progress = Progress("register", enabled=not args.quiet)
    landmarks = (read_landmarks(args.landmarks[0]), read_landmarks(args.landmarks[1])) if args.landmarks else None
    progress(0, 4)
    fixed = read_image(args.fixed)
    moving = read_image(args.moving)
    progress(1, 4)
    options: Dict[str, Any] = {"mode": args.mode, "initialisation": args.init}
    if args.iterations is not None:
        options["iterations"] = args.iterations
    if args.seed is not None:
        options["seed"] = args.seed
    result = register(fixed, moving, RegistrationParameters(**options))
    progress(2, 4)
    write_transform(result.transform, args.out)
    data = {"schema": schema_id(REGISTRATION_SCHEMA), **result.to_dict(),
            "transform_file": str(args.out), "transform_sha256": sha256_file(args.out),
            "threshold_mm": args.threshold}
    failures = []
    if landmarks is not None:
        tre = target_registration_error(result.transform, *landmarks)
        data["tre_mm"] = tre.to_dict()
        if tre.mean_mm > args.threshold:
            failures.append(f"TRE mean {tre.mean_mm:.2f} mm > {args.threshold:g} mm")
    if not args.no_residual:
        residual = image_residual(fixed, moving, result.transform)
        data["residual_translation_mm"] = round(residual.translation_mm, 6)
        data["residual_rotation_deg"] = round(residual.rotation_deg, 6)
        if residual.translation_mm > args.threshold:
            failures.append(f"residual translation {residual.translation_mm:.2f} mm > {args.threshold:g} mm")
    progress(4, 4)
    data["passed"] = not failures
    data["failures"] = failures
    problems = schema_problems(REGISTRATION_SCHEMA, data)
    if problems:  # our own output: a bug, never silently written
        raise RuntimeError(f"registration result breaks its schema: {problems[0]}")
    emit_json(args.json, data)
    if args.json != "-":
        line = f"{args.mode} registration written to {args.out}: metric {result.metric_before:.4f} -> " \
               f"{result.metric_after:.4f}"
        if "tre_mm" in data:
            line += f", TRE mean {data['tre_mm']['mean_mm']:.3f} mm (max {data['tre_mm']['max_mm']:.3f})"
        if "residual_translation_mm" in data:
            line += f", residual {data['residual_translation_mm']:.3f} mm / {data['residual_rotation_deg']:.3f} deg"
        print(line)
        for f in failures:
            print(f"FAILED: {f}")
    return EXIT_OK if not failures else EXIT_FAILED_CHECK


def _cmd_align(args: argparse.Namespace) -> int:
    from .fusion.accuracy import body_alignment
    from .fusion.images import read_image

    ct = read_image(args.ct)
    pet = read_image(args.pet)
    check = body_alignment(ct, pet, translation_threshold_mm=args.threshold,
                           rotation_threshold_deg=args.rotation_threshold)
    emit_json(args.json, check.to_dict())
    if args.json != "-":
        print(("passed: " if check.passed else "FLAGGED: ") + check.reason())
    return EXIT_OK if check.passed else EXIT_FAILED_CHECK


def _cmd_record(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from RTSSBridgeLib.errors import InputError

    from .documents import read_document, write_document
    from .fusion.record import entry_from_result_json, image_reference_entry, with_moving
    from .schemas import read_json, schema_problems

    out = Path(args.out)
    if out.exists():
        raise InputError("exists; write the new document to a new file", file=str(out), field="--out")
    document = read_document(args.document)
    data = read_json(args.result)
    problems = schema_problems(REGISTRATION_SCHEMA, data)
    if problems:
        raise InputError(problems[0], file=args.result)
    transform = Path(data["transform_file"])
    if not transform.is_absolute():
        transform = Path(os.path.dirname(os.path.abspath(args.result))) / transform
    if not transform.is_file():
        transform = Path(data["transform_file"])  # relative to the working folder, as mmanno register wrote it
    if not transform.is_file():
        raise InputError("transform file of the registration result not found", file=str(transform),
                         field="transform_file")
    previous = document.fusion
    if previous is not None and previous["reference"]["series_key"] != args.reference_key:
        raise InputError(f"the document's fusion reference is {previous['reference']['series_key']}, not "
                         f"{args.reference_key}", file=args.document, field="fusion.reference.series_key")
    threshold = args.threshold if args.threshold is not None else float(
        previous["threshold_mm"] if previous is not None else 3.0)
    modality = args.moving_modality or str(data.get("moving", {}).get("modality") or "OT")
    entry = entry_from_result_json(args.moving_key, modality, data, transform, out.resolve().parent, threshold,
                                   args.reference_key)
    fusion = with_moving(previous, image_reference_entry(args.reference_key, document.image), entry, threshold)
    write_document(str(out), document.replace(fusion=fusion))
    read_document(str(out))  # validated as any reader would
    emit_json(args.json, {"document": str(out), "moving": args.moving_key, "guard": entry["guard"]})
    if args.json != "-":
        print(f"wrote {out}: {args.moving_key} recorded; guard: {entry['guard']['reason']}")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from .fusion.record import check_package
    from .schemas import schema_id

    report = check_package(args.package)
    data = {"schema": schema_id(CHECK_SCHEMA), "package": str(args.package), **report.to_dict()}
    emit_json(args.json, data)
    if args.json != "-":
        for line in report.problems + report.flagged:
            print(f"{args.package}: {line}")
        for d in report.decisions:
            print(f"{args.package}: guard {d.series_key}: {'allowed' if d.allowed else 'REFUSED'} - {d.reason}")
        print(f"{args.package}: fusion {'passed' if report.passed else 'FAILED'}")
    return EXIT_OK if report.passed else EXIT_FAILED_CHECK
