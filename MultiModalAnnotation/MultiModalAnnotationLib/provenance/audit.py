"""The audit trail (R-5.6): every operation on a case, append-only, hash-chained, checkable.

File format: ``audit.jsonl`` (JSON Lines, UTF-8): line *n* is event *n*, written as its RFC 8785
canonical JSON (:mod:`.canonical`) and a newline; schema ``audit-event`` v1. Each event holds

``seq`` (= line number), ``time`` (UTC, ISO 8601), ``case``, ``actor`` (pseudonymous id), ``role``
(annotator, reviewer, arbiter, qc, administrator), ``action``, ``objects`` (ids), ``before`` /
``after`` (SHA-256 of the content before and after, or null), ``reason``, ``transition`` (workflow
state change), ``details`` (structured content), ``software`` {name, version}, ``prev`` and
``hash``: ``hash`` is the SHA-256 of the canonical JSON of the event without ``hash``; ``prev`` is
the ``hash`` of the previous event (64 zeros for the first one).

Beside it, ``audit.head.json`` (schema ``audit-head``) records the number of events and the last
hash; it is rewritten atomically after every append, so that removing the last events (which a
chain alone cannot show) is caught too.

:func:`verify_trail` names the first broken event: a changed byte (the line is no longer valid
JSON, no longer canonical, or its content no longer matches its hash), a removed, inserted or
reordered event (``seq`` or ``prev`` out of step), a cut end or an unanchored tail (head).
A chain proves that nothing was changed *quietly*: whoever can rewrite the whole file and its head
can forge a consistent history, which is why the head hash is also copied into every version
record, every frozen release (read-only) and every export package.

Appends from several processes are serialised by an exclusive lock on the trail file itself
(``fcntl.flock`` on POSIX, ``msvcrt.locking`` of one byte beyond the data on Windows, where
locks are mandatory; see :func:`_exclusive`): the standard library is enough, no lock package is
added to Slicer's Python. Under the lock an
append reads the last event and the head, refuses a trail whose end does not check, writes one
line, ``fsync``\\ s it, and rewrites the head - so no append is lost or interleaved.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from RTSSBridgeLib.errors import InputError
from RTSSBridgeLib.fileio import write_json_atomic

from ..schemas import schema_id, schema_problems
from .canonical import GENESIS_HASH, CanonicalJSONError, canonical_json, content_hash
from .privacy import PrivacyGuard

EVENT_SCHEMA = "audit-event"
HEAD_SCHEMA = "audit-head"
TRAIL_NAME = "audit.jsonl"
ROLES = ("annotator", "reviewer", "arbiter", "qc", "administrator")
ACTIONS = ("created", "transition", "exception", "rollback", "model_proposal", "edited", "confirmed", "reviewed",
           "compared", "consensus", "arbitrated", "flagged", "unflagged", "qc_result", "rework_requested", "sampled",
           "frozen", "change_request", "change_approved", "exported", "note")
MAX_REASON = 2000
PathLike = Union[str, "os.PathLike[str]"]


class TrailError(InputError):
    """The audit trail does not verify (or cannot be appended to safely). Remedy: run ``mmanno
    audit verify`` and restore the trail from a verified copy (a package or a release)."""


def head_path(trail: PathLike) -> Path:
    """``audit.head.json`` for ``audit.jsonl`` (``X.head.json`` for ``X.jsonl`` or ``X``)."""
    path = Path(trail)
    stem = path.name[:-len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(f"{stem}.head.json")


def software() -> Dict[str, str]:
    from .. import __version__

    return {"name": "MultiModalAnnotation", "version": __version__}


def utc_now() -> str:
    """The time stamp of events (UTC, seconds, ``Z``): the package's one clock."""
    from ..documents import now_utc

    return now_utc()


# --------------------------------------------------------------------------- locking
#: Windows locks a byte range, and its locks are mandatory: a locked byte cannot be read by anyone
#: else. The lock therefore sits on one byte far beyond any real trail's end (Windows allows
#: locking beyond the end of a file), so readers (``audit verify``) are never blocked by a writer.
WINDOWS_LOCK_OFFSET = 2 ** 31 - 2


@contextlib.contextmanager
def _exclusive(fh: Any) -> Iterator[None]:
    """An exclusive lock on the open file ``fh`` for as long as the block runs (blocking).

    POSIX: ``fcntl.flock`` (advisory, whole file; released by the kernel if the process dies).
    Windows: ``msvcrt.locking`` of one byte at :data:`WINDOWS_LOCK_OFFSET` (also released when the
    process dies); ``LK_LOCK`` gives up after ten one-second tries, so it is retried until it holds.
    """
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import msvcrt

        def at_lock_byte() -> None:
            fh.seek(WINDOWS_LOCK_OFFSET)

        at_lock_byte()
        while True:
            try:
                msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
                break
            except OSError:
                time.sleep(0.05)
                at_lock_byte()
        try:
            yield
        finally:
            at_lock_byte()
            msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------- verification
@dataclass
class VerifyResult:
    """What :func:`verify_trail` found: ``ok``, the events, and the first broken event."""

    trail: str
    ok: bool
    n_events: int
    first_broken: Optional[int] = None  # line = seq number of the first broken event
    problem: str = ""
    last_hash: Optional[str] = None
    events: List[Dict[str, Any]] = field(default_factory=list, repr=False)

    def line(self) -> str:
        if self.ok:
            return f"{self.trail}: intact, {self.n_events} event(s), last hash {self.last_hash or '-'}"
        return f"{self.trail}: BROKEN at event {self.first_broken}: {self.problem}"

    def to_dict(self) -> Dict[str, Any]:
        return {"trail": self.trail, "ok": self.ok, "events": self.n_events, "first_broken": self.first_broken,
                "problem": self.problem or None, "last_hash": self.last_hash}


def event_hash(event: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``event`` without its ``hash`` member."""
    return content_hash({k: v for k, v in event.items() if k != "hash"})


def _read_head(path: Path) -> Optional[Dict[str, Any]]:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TrailError(f"the head is not readable JSON ({exc})", file=str(path)) from exc
    problems = schema_problems(HEAD_SCHEMA, data)
    if problems:
        raise TrailError(f"the head breaks its schema: {problems[0]}", file=str(path))
    return data


def check_events(lines: Sequence[bytes], terminated: bool) -> VerifyResult:
    """Verify the event lines of a trail (without its head); the result names the first broken one."""
    events: List[Dict[str, Any]] = []
    previous = GENESIS_HASH
    for n, raw in enumerate(lines, start=1):

        def broken(problem: str, n: int = n, previous: str = previous) -> VerifyResult:
            return VerifyResult("", False, len(events), n, problem, previous, events)

        if n == len(lines) and not terminated:
            return broken("the last line has no newline (an interrupted write, or bytes cut or changed)")
        if not raw:
            return broken("empty line")
        try:
            event = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return broken("not valid UTF-8 JSON (bytes changed)")
        if not isinstance(event, dict):
            return broken("not a JSON object")
        try:
            canonical = canonical_json(event)
        except CanonicalJSONError as exc:
            return broken(f"no canonical form ({exc})")
        if canonical != raw:
            return broken("not written in canonical form (bytes changed)")
        problems = schema_problems(EVENT_SCHEMA, event)
        if problems:
            return broken(f"breaks the audit-event schema: {problems[0]}")
        if event["seq"] != n:
            return broken(f"holds seq {event['seq']} on line {n}: an event was removed, inserted or reordered")
        if event["prev"] != previous:
            return broken("its prev does not match the hash of the event before it: an event was removed, inserted "
                          "or reordered, or the one before was changed")
        if event_hash(event) != event["hash"]:
            return broken("its content does not match its hash (changed)")
        events.append(event)
        previous = event["hash"]
    return VerifyResult("", True, len(events), None, "", previous if events else None, events)


def verify_trail(trail: PathLike) -> VerifyResult:
    """Verify ``trail`` and its head; never raises for a broken trail (the result says where)."""
    path = Path(trail)
    if not path.is_file():
        raise TrailError("no such audit trail", file=str(path))
    data = path.read_bytes()
    lines = data.split(b"\n")
    terminated = data.endswith(b"\n") or not data
    if terminated:
        lines = lines[:-1]
    result = check_events(lines, terminated)
    result.trail = str(path)
    if not result.ok:
        return result
    try:
        head = _read_head(head_path(path))
    except TrailError as exc:
        return VerifyResult(str(path), False, result.n_events, result.n_events + 1 if result.n_events else 1,
                            f"head: {exc.rule}", result.last_hash, result.events)
    n = result.n_events
    if head is None:
        if n:
            return VerifyResult(str(path), False, n, 1, f"no head file {head_path(path).name}: the trail cannot be "
                                "checked for removed last events", result.last_hash, result.events)
        return result
    if head["events"] > n:
        return VerifyResult(str(path), False, n, n + 1, f"the trail ends at event {n} but its head records "
                            f"{head['events']} events: the last event(s) were removed", result.last_hash,
                            result.events)
    if head["events"] < n:
        return VerifyResult(str(path), False, n, head["events"] + 1,
                            f"events after {head['events']} are not anchored in the head (added outside mmanno, or "
                            "an append was interrupted)", result.last_hash, result.events)
    if head["last_hash"] != result.last_hash:
        return VerifyResult(str(path), False, n, n, "the last event is not the one its head records (changed)",
                            result.last_hash, result.events)
    return result


def read_trail(trail: PathLike) -> List[Dict[str, Any]]:
    """The events of a verified trail (raises :class:`TrailError` naming the first broken event)."""
    result = verify_trail(trail)
    if not result.ok:
        raise TrailError(f"event {result.first_broken}: {result.problem}", file=str(trail))
    return result.events


# --------------------------------------------------------------------------- appending
def _last_line(fh: Any) -> bytes:
    """The last complete line of the open binary file (without its newline), b"" when empty."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size == 0:
        return b""
    block = 4096
    data = b""
    position = size
    while position > 0:
        step = min(block, position)
        position -= step
        fh.seek(position)
        data = fh.read(step) + data
        if data.count(b"\n") >= 2 or position == 0:
            break
    if not data.endswith(b"\n"):
        raise TrailError("the last line has no newline (an interrupted write, or bytes cut or changed); run "
                         "mmanno audit verify", file=getattr(fh, "name", None))
    return data[:-1].rsplit(b"\n", 1)[-1]


class AuditTrail:
    """An audit trail file with its head (see the module docstring).

    ``guard`` checks every text for identifying patient values (:class:`PrivacyGuard`); ``case`` is
    the pseudonymous case id written into each event.
    """

    def __init__(self, path: PathLike, guard: Optional[PrivacyGuard] = None, case: Optional[str] = None) -> None:
        self.path = Path(path)
        self.guard = guard or PrivacyGuard()
        self.case = case

    @property
    def head(self) -> Path:
        return head_path(self.path)

    def verify(self) -> VerifyResult:
        return verify_trail(self.path)

    def events(self) -> List[Dict[str, Any]]:
        if not self.path.exists():
            return []
        return read_trail(self.path)

    def build_event(self, *, actor: str, role: str, action: str, objects: Sequence[str] = (),
                    reason: Optional[str] = None, before: Optional[str] = None, after: Optional[str] = None,
                    transition: Optional[Mapping[str, str]] = None, details: Optional[Mapping[str, Any]] = None,
                    case: Optional[str] = None) -> Dict[str, Any]:
        """An event without seq, prev and hash, every field checked (privacy, enums, hashes)."""
        if role not in ROLES:
            raise InputError(f"{role!r} is not one of {', '.join(ROLES)}", field="role")
        if action not in ACTIONS:
            raise InputError(f"{action!r} is not one of {', '.join(ACTIONS)}", field="action")
        self.guard.check_actor(actor)
        case = case or self.case
        event: Dict[str, Any] = {"time": utc_now(), "actor": actor, "role": role, "action": action,
                                 "objects": [str(o) for o in objects], "before": before, "after": after,
                                 "reason": reason if reason is None else " ".join(str(reason).split()) or None,
                                 "software": software()}
        if case:
            event["case"] = self.guard.check_actor(case, "case")
        if event["reason"] is not None:
            if len(event["reason"]) > MAX_REASON:
                raise InputError(f"{len(event['reason'])} characters; rule: at most {MAX_REASON}", field="reason")
            self.guard.check_text(event["reason"], "reason")
        for n, ident in enumerate(event["objects"]):
            self.guard.check_text(ident, f"objects[{n}]")
        if transition is not None:
            event["transition"] = {"from": transition["from"], "to": transition["to"]}
        if details:
            clean = json.loads(json.dumps(details, allow_nan=False))  # plain JSON types only
            self.guard.check_value(clean, "details")
            event["details"] = clean
        probe = {**event, "seq": 1, "prev": GENESIS_HASH, "hash": GENESIS_HASH}
        problems = schema_problems(EVENT_SCHEMA, probe)
        if problems:
            raise InputError(f"the event would break the audit-event schema: {problems[0]}", field="event")
        canonical_json(probe)  # refuses what has no canonical form before anything is written
        return event

    @contextlib.contextmanager
    def transaction(self, verify_all: bool = True) -> Iterator[Transaction]:
        """Hold the trail's lock: read the (verified) events, decide, append - atomically with
        respect to other processes. ``verify_all`` False checks only the last event and the head
        (what a plain append needs)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as fh, _exclusive(fh):
            yield Transaction(self, fh, verify_all)

    def append(self, **fields: Any) -> Dict[str, Any]:
        """Append one event (keyword arguments of :meth:`build_event`) and return it."""
        event = self.build_event(**fields)
        with self.transaction(verify_all=False) as tx:
            return tx.append_built(event)


class Transaction:
    """The trail while its lock is held (from :meth:`AuditTrail.transaction`)."""

    def __init__(self, trail: AuditTrail, fh: Any, verify_all: bool) -> None:
        self.trail = trail
        self._fh = fh
        self._events: Optional[List[Dict[str, Any]]] = None
        self._last: Optional[Dict[str, Any]] = None
        if verify_all:
            self._events = self._read_all()
            self._last = self._events[-1] if self._events else None
        else:
            self._last = self._read_last()

    def _read_all(self) -> List[Dict[str, Any]]:
        self._fh.flush()
        result = verify_trail(self.trail.path)
        if not result.ok:
            raise TrailError(f"refusing to work on a trail that does not verify: event {result.first_broken}: "
                             f"{result.problem}", file=str(self.trail.path))
        return result.events

    def _read_last(self) -> Optional[Dict[str, Any]]:
        raw = _last_line(self._fh)
        head = _read_head(self.trail.head)
        where = str(self.trail.path)
        if not raw:
            if head is not None and head["events"]:
                raise TrailError(f"the trail is empty but its head records {head['events']} events", file=where)
            return None
        try:
            last = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise TrailError("the last event is not valid JSON; run mmanno audit verify", file=where) from exc
        if not isinstance(last, dict) or canonical_json(last) != raw or event_hash(last) != last.get("hash"):
            raise TrailError("the last event does not match its hash; run mmanno audit verify", file=where)
        if head is None or head["events"] != last.get("seq") or head["last_hash"] != last["hash"]:
            raise TrailError("the last event is not the one the head records; run mmanno audit verify", file=where)
        return last

    @property
    def events(self) -> List[Dict[str, Any]]:
        """Every event (verified when the transaction was opened) plus those appended since."""
        if self._events is None:
            self._events = self._read_all()
        return self._events

    def append(self, **fields: Any) -> Dict[str, Any]:
        return self.append_built(self.trail.build_event(**fields))

    def append_built(self, event: Dict[str, Any]) -> Dict[str, Any]:
        last = self._last
        event = dict(event)
        event["seq"] = (last["seq"] + 1) if last else 1
        event["prev"] = last["hash"] if last else GENESIS_HASH
        event["hash"] = event_hash(event)
        line = canonical_json(event) + b"\n"
        self._fh.seek(0, os.SEEK_END)
        self._fh.write(line)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        write_json_atomic(self.trail.head, {"schema": schema_id(HEAD_SCHEMA), "trail": self.trail.path.name,
                                            "events": event["seq"], "last_hash": event["hash"],
                                            "updated": event["time"]})
        self._last = event
        if self._events is not None:
            self._events.append(event)
        return event
