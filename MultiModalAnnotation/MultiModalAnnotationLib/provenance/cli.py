"""``mmanno audit ...`` and ``mmanno case ...`` (R-5.6, R-6.7 - R-6.10, R-6.12).

* ``mmanno audit append TRAIL --actor A --role R --action X [--object ID ...] [--reason TEXT]``
* ``mmanno audit verify TRAIL`` - exit 0 intact, 1 naming the first broken event;
* ``mmanno audit show TRAIL`` - the events, one line each;
* ``mmanno case create DIR --case ID --task FILE --actor A``;
* ``mmanno case status DIR`` - state, round, versions, reviews, flags, what is allowed next;
* ``mmanno case advance DIR --to STATE --actor A --role R [--reason T]`` - also exception/rollback;
* ``mmanno case save DIR --package PKG --actor A [--role annotator|arbiter] [--model N --model-version V]
  [--proposal vN]`` - a new version from an annotation package;
* ``mmanno case compare DIR --actor A`` - readers compared, consensus proposals stored;
* ``mmanno case review DIR --actor A --opinion TARGET=accept|request_change|reject ... [--comment T]``;
* ``mmanno case arbitrate DIR --actor A --decision adopt|rework [--version vN] --reasons T``;
* ``mmanno case flag DIR --actor A --role R --target ID|case --category C [--comment T]``;
* ``mmanno case qc DIR --actor A --pass|--fail [--reason T]``;
* ``mmanno case freeze DIR --actor A --release 1.0 --scope S [--notes T] [--date YYYY-MM-DD]``;
* ``mmanno case change-request DIR --actor A --release 1.0 --reason T``;
* ``mmanno case sample BATCH --actor Q --seed N [--ratio R]`` - the seeded QC sample of a batch;
* ``mmanno case sample-check BATCH --actor Q`` - deliver, wait, widen or halt (exit 1 on halt);
* ``mmanno case history DIR [--diff vA vB]``; ``mmanno case verify DIR`` (exit 1 when anything fails).

Bad input and refused steps end with one line and exit status 2. Heavy libraries are imported in
the handlers only (start-up speed).
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List

from RTSSBridgeLib.cliutil import EXIT_FAILED_CHECK, EXIT_OK, add_json_option, emit_json

ROLES = ("annotator", "reviewer", "arbiter", "qc", "administrator")


def _quiet(args: argparse.Namespace) -> bool:
    return args.json == "-"


def _case(args: argparse.Namespace) -> Any:
    from .case import Case

    return Case(args.case_dir)


def _print_event(event: Dict[str, Any]) -> None:
    t = event.get("transition")
    move = f" {t['from']} -> {t['to']}" if t else ""
    reason = f" ({event['reason']})" if event.get("reason") else ""
    print(f"#{event['seq']:>4} {event['time']} {event['actor']}/{event['role']} {event['action']}{move}"
          f" [{', '.join(event['objects'])}]{reason}")


# --------------------------------------------------------------------------- audit
def _cmd_audit_append(args: argparse.Namespace) -> int:
    from .audit import AuditTrail

    trail = AuditTrail(args.trail, case=args.case)
    event = trail.append(actor=args.actor, role=args.role, action=args.action, objects=args.object or [],
                         reason=args.reason, before=args.before, after=args.after)
    emit_json(args.json, event)
    if not _quiet(args):
        print(f"{args.trail}: appended event {event['seq']} ({event['hash'][:12]})")
    return EXIT_OK


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from .audit import verify_trail

    result = verify_trail(args.trail)
    emit_json(args.json, result.to_dict())
    if not _quiet(args):
        print(result.line())
    return EXIT_OK if result.ok else EXIT_FAILED_CHECK


def _cmd_audit_show(args: argparse.Namespace) -> int:
    from .audit import read_trail

    events = read_trail(args.trail)
    emit_json(args.json, events)
    if not _quiet(args):
        for event in events:
            _print_event(event)
    return EXIT_OK


# --------------------------------------------------------------------------- case
def _cmd_case_create(args: argparse.Namespace) -> int:
    from ..tasks import read_task
    from ..templates import load_template
    from .case import Case

    task = read_task(args.task)
    template = load_template(args.template or task.template_file or task.template_id)
    case = Case.create(args.case_dir, args.case, task, template, args.actor, reason=args.reason)
    return _status(args, case)


def _status(args: argparse.Namespace, case: Any) -> int:
    s = case.state()
    data = s.to_dict()
    emit_json(args.json, data)
    if not _quiet(args):
        print(f"case {s.case_id}: {s.state.value} (task {data['task']}, annotation round {s.annotation_round}, "
              f"review round {s.review_round}, {s.n_events} events)")
        if s.current:
            print(f"  current version: {s.current}")
        for v in s.versions.values():
            print(f"  {v.name}: {v.line} ({v.origin}, by {v.actor}, round {v.round}) {v.tree[:12]}")
        for r in s.round_reviews():
            print(f"  review by {r['reviewer']}: {r['overall']}")
        for target, flag in sorted(s.flags.items()):
            print(f"  flagged uncertain: {target} ({flag['category']})")
        print("  allowed next: " + "; ".join(data["allowed"]))
    return EXIT_OK


def _cmd_case_status(args: argparse.Namespace) -> int:
    return _status(args, _case(args))


def _done(args: argparse.Namespace, event: Dict[str, Any]) -> int:
    emit_json(args.json, event)
    if not _quiet(args):
        _print_event(event)
    return EXIT_OK


def _cmd_case_advance(args: argparse.Namespace) -> int:
    return _done(args, _case(args).advance(args.actor, args.role, args.to, args.reason))


def _cmd_case_save(args: argparse.Namespace) -> int:
    from RTSSBridgeLib.errors import InputError

    from ..package import read_package

    package = read_package(args.package)
    masks = {ident: m.voxels for ident, m in package.masks.items()}
    model = None
    if args.model:
        if not args.model_version:
            raise InputError("an AI proposal names the model version", field="--model-version")
        params: Dict[str, str] = {}
        for item in args.param or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise InputError(f"{item!r} is not KEY=VALUE", field="--param")
            params[key] = value
        model = {"name": args.model, "version": args.model_version, "parameters": params}
    event = _case(args).save_version(args.actor, args.role, package.document, masks, line=args.line, model=model,
                                     proposal=args.proposal, reason=args.reason)
    return _done(args, event)


def _cmd_case_compare(args: argparse.Namespace) -> int:
    event = _case(args).compare(args.actor, args.role)
    if not _quiet(args):
        for line in event["details"]["reasons"] or ["readers agree within the task's thresholds"]:
            print(f"  {line}")
    return _done(args, event)


def _cmd_case_review(args: argparse.Namespace) -> int:
    from RTSSBridgeLib.errors import InputError

    opinions: Dict[str, str] = {}
    for item in args.opinion:
        target, sep, opinion = item.partition("=")
        if not sep or not target:
            raise InputError(f"{item!r} is not TARGET=OPINION", field="--opinion")
        opinions[target] = opinion
    return _done(args, _case(args).review(args.actor, opinions, args.comment))


def _cmd_case_arbitrate(args: argparse.Namespace) -> int:
    return _done(args, _case(args).arbitrate(args.actor, args.decision, args.reasons, args.version))


def _cmd_case_flag(args: argparse.Namespace) -> int:
    return _done(args, _case(args).flag(args.actor, args.role, args.target, args.category, args.comment))


def _cmd_case_qc(args: argparse.Namespace) -> int:
    return _done(args, _case(args).qc_result(args.actor, args.passed, reason=args.reason))


def _cmd_case_freeze(args: argparse.Namespace) -> int:
    return _done(args, _case(args).freeze(args.actor, args.release, args.scope, args.notes or "", args.date))


def _cmd_case_change_request(args: argparse.Namespace) -> int:
    return _done(args, _case(args).change_request(args.actor, args.release, args.reason))


def _cmd_case_sample(args: argparse.Namespace) -> int:
    from .sampling import draw_sample

    event = draw_sample(args.case_dir, args.actor, args.seed, args.ratio)
    emit_json(args.json, event)
    if not _quiet(args):
        d = event["details"]
        print(f"sample of {len(d['selected'])}/{d['cases']} case(s) at ratio {d['ratio']:g}, seed {d['seed']}: "
              + ", ".join(d["selected"]))
    return EXIT_OK


def _cmd_case_sample_check(args: argparse.Namespace) -> int:
    from .sampling import check_sample

    event = check_sample(args.case_dir, args.actor)
    d = event["details"]
    emit_json(args.json, d)
    if not _quiet(args):
        print(f"{d['decision']}: {d['why']}")
    return EXIT_FAILED_CHECK if d["decision"] == "halt" else EXIT_OK


def _cmd_case_history(args: argparse.Namespace) -> int:
    case = _case(args)
    if args.diff:
        from .versions import diff_lines

        diff = case.diff(*args.diff)
        emit_json(args.json, diff)
        if not _quiet(args):
            for line in diff_lines(diff):
                print(line)
        return EXIT_OK
    events = case.trail.events()
    emit_json(args.json, case.history())
    if not _quiet(args):
        for event in events:
            _print_event(event)
    return EXIT_OK


def _cmd_case_verify(args: argparse.Namespace) -> int:
    report = _case(args).verify()
    emit_json(args.json, report.to_dict())
    if not _quiet(args):
        lines: List[str] = list(report.problems)
        for release, problems in report.releases.items():
            lines += problems or [f"release {release}: intact"]
        for line in lines:
            print(f"  {line}")
        print(f"{args.case_dir}: {'intact' if report.ok else 'PROBLEMS'} (trail {report.trail['events']} events)")
    return EXIT_OK if report.ok else EXIT_FAILED_CHECK


# --------------------------------------------------------------------------- registration
def _actor(p: argparse.ArgumentParser, role: bool = True) -> None:
    p.add_argument("--actor", required=True, help="pseudonymous id of the person (never a real name)")
    if role:
        p.add_argument("--role", required=True, choices=ROLES, help="the role acted in")


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="append to and verify hash-chained audit trails (R-5.6)",
                                  description="Append-only, hash-chained audit trails (audit.jsonl).")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION")
    audit_sub.required = True
    p = audit_sub.add_parser("append", help="append one event", description="Append one event to TRAIL (the file "
                             "is created when absent); concurrent appends are serialised by a file lock.")
    p.add_argument("trail", help="audit.jsonl")
    _actor(p)
    p.add_argument("--action", required=True, help="what was done (created, edited, reviewed, note...)")
    p.add_argument("--object", action="append", metavar="ID", help="id of an object concerned (repeatable)")
    p.add_argument("--reason", help="why (checked: no identifying patient value)")
    p.add_argument("--case", help="pseudonymous case id")
    p.add_argument("--before", metavar="SHA256", help="content hash before")
    p.add_argument("--after", metavar="SHA256", help="content hash after")
    add_json_option(p)
    p.set_defaults(func=_cmd_audit_append)
    p = audit_sub.add_parser("verify", help="verify a trail (exit 1 naming the first broken event)",
                             description="Check every event's hash chain, canonical form and schema, and the head.")
    p.add_argument("trail", help="audit.jsonl")
    add_json_option(p)
    p.set_defaults(func=_cmd_audit_verify)
    p = audit_sub.add_parser("show", help="list the events of a verified trail")
    p.add_argument("trail", help="audit.jsonl")
    add_json_option(p)
    p.set_defaults(func=_cmd_audit_show)

    case = subparsers.add_parser("case", help="case workflow: status, advance, review, arbitrate, freeze, history",
                                 description="A case folder under workflow control, every step in its audit trail.")
    sub = case.add_subparsers(dest="case_command", metavar="ACTION")
    sub.required = True

    def add(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("case_dir", metavar="DIR", help="the case folder")
        add_json_option(parser)
        parser.set_defaults(func=func)
        return parser

    p = add("create", "create a case (state received) for a task", _cmd_case_create)
    p.add_argument("--case", required=True, help="pseudonymous case id")
    p.add_argument("--task", required=True, help="task JSON file")
    p.add_argument("--template", help="template file or built-in id (default: the task's)")
    p.add_argument("--reason", help="note recorded with the creation")
    _actor(p, role=False)
    add("status", "the case's state, versions, reviews, flags and allowed next steps", _cmd_case_status)
    p = add("advance", "move the case to another state (also 'exception' and rollback from it)", _cmd_case_advance)
    p.add_argument("--to", required=True, help="target state")
    _actor(p)
    p.add_argument("--reason", help="why (required for rework, exception, rollback)")
    p = add("save", "save a new version from an annotation package", _cmd_case_save)
    p.add_argument("--package", required=True, help="annotation package folder or zip")
    _actor(p, role=False)
    p.add_argument("--role", default="annotator", choices=("annotator", "arbiter"), help="annotator or arbiter")
    p.add_argument("--line", help="reader id of the version (default: the actor)")
    p.add_argument("--model", help="record the package as an AI proposal of this model")
    p.add_argument("--model-version", help="the model's version")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a model parameter (repeatable)")
    p.add_argument("--proposal", metavar="VERSION", help="the AI proposal this human result confirms")
    p.add_argument("--reason", help="note")
    p = add("compare", "compare the readers under review and store consensus proposals", _cmd_case_compare)
    _actor(p, role=False)
    p.add_argument("--role", default="reviewer", choices=("reviewer", "arbiter"), help="reviewer or arbiter")
    p = add("review", "record review opinions", _cmd_case_review)
    _actor(p, role=False)
    p.add_argument("--opinion", action="append", required=True, metavar="TARGET=OPINION",
                   help="annotation id (or 'case') = accept, request_change or reject (repeatable)")
    p.add_argument("--comment", help="comment (required unless every opinion is accept)")
    p = add("arbitrate", "the arbiter's final decision", _cmd_case_arbitrate)
    _actor(p, role=False)
    p.add_argument("--decision", required=True, choices=("adopt", "rework"), help="adopt a version or rework")
    p.add_argument("--version", help="the version adopted (vN)")
    p.add_argument("--reasons", required=True, help="the reasons of the decision")
    p = add("flag", "flag an annotation or the case uncertain", _cmd_case_flag)
    _actor(p)
    p.add_argument("--target", required=True, help="annotation id or 'case'")
    p.add_argument("--category", required=True, help="unclear_boundary, artefact, rare_finding or tool_problem")
    p.add_argument("--comment", help="comment")
    p = add("qc", "record the QC result of the current version", _cmd_case_qc)
    _actor(p, role=False)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--pass", dest="passed", action="store_true", help="QC passed")
    group.add_argument("--fail", dest="passed", action="store_false", help="QC failed (give --reason)")
    p.add_argument("--reason", help="why")
    p = add("freeze", "freeze the QC-passed version as a release", _cmd_case_freeze)
    _actor(p, role=False)
    p.add_argument("--release", required=True, help="release version number (1.0)")
    p.add_argument("--scope", required=True, help="what the release is for (training, validation, delivery)")
    p.add_argument("--notes", help="release notes")
    p.add_argument("--date", help="release date YYYY-MM-DD (default today, UTC)")
    p = add("change-request", "file a change request on a frozen case (makes a new version)",
            _cmd_case_change_request)
    _actor(p, role=False)
    p.add_argument("--release", required=True, help="the frozen release concerned")
    p.add_argument("--reason", required=True, help="why the change is needed")
    p = add("sample", "draw the seeded QC sample of a batch (folder of case folders)", _cmd_case_sample)
    _actor(p, role=False)
    p.add_argument("--seed", type=int, required=True, help="seed of the draw (recorded; same seed, same sample)")
    p.add_argument("--ratio", type=float, help="sampling ratio (default: the task's, or the widened one)")
    p = add("sample-check", "QC results of the sample -> deliver, wait, widen or halt (exit 1 on halt)",
            _cmd_case_sample_check)
    _actor(p, role=False)
    p = add("history", "the case's events (or a diff of two versions)", _cmd_case_history)
    p.add_argument("--diff", nargs=2, metavar=("A", "B"), help="list what changed from version A to B")
    add("verify", "verify trail, versions and releases (exit 1 when anything fails)", _cmd_case_verify)
