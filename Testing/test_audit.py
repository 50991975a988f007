"""The audit trail (R-5.6): hash chain, tamper detection, concurrent appends, privacy, packages."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest

from MultiModalAnnotationLib.cli import main
from MultiModalAnnotationLib.provenance.audit import (
    GENESIS_HASH,
    AuditTrail,
    TrailError,
    event_hash,
    head_path,
    read_trail,
    verify_trail,
)
from MultiModalAnnotationLib.provenance.canonical import CanonicalJSONError, canonical_json
from MultiModalAnnotationLib.provenance.privacy import PrivacyError, PrivacyGuard
from RTSSBridgeLib.errors import InputError

REPO = Path(__file__).resolve().parents[1]
N_EVENTS = 24
N_TAMPERINGS = 120


def _lines(path: Path) -> List[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def _write_lines(path: Path, lines: List[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


@pytest.fixture(scope="module")
def trail_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trail") / "audit.jsonl"
    trail = AuditTrail(path, case="CASE_0001")
    actions = ["created", "transition", "edited", "reviewed", "compared", "arbitrated", "qc_result", "frozen"]
    roles = ["administrator", "administrator", "annotator", "reviewer", "reviewer", "arbiter", "qc", "administrator"]
    for n in range(N_EVENTS):
        trail.append(actor=f"P{n % 5:02d}", role=roles[n % 8], action=actions[n % 8], objects=[f"v{n}"],
                     reason=f"step {n}: boundary 0.{n} mm, 结节边界清楚", before=None if n == 0 else "a" * 64,
                     after="b" * 64, details={"n": n, "dice": 0.5 + n / 100, "tiny": 1e-7 * (n + 1)})
    return path


def test_intact_trail_verifies_and_chains(trail_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """R-5.6: seq = line, prev = hash of the event before, hash over the canonical event; CLI exit 0."""
    events = read_trail(trail_file)
    assert [e["seq"] for e in events] == list(range(1, N_EVENTS + 1))
    assert events[0]["prev"] == GENESIS_HASH
    for before, after in zip(events, events[1:]):
        assert after["prev"] == before["hash"]
    for event in events:
        assert event["hash"] == event_hash(event)
        assert event["time"].endswith("Z") and event["software"]["name"] == "MultiModalAnnotation"
        assert set(event) >= {"seq", "time", "actor", "role", "action", "objects", "before", "after", "reason",
                              "software", "prev", "hash", "case"}
    assert _lines(trail_file) == [canonical_json(e) for e in events]
    head = json.loads(head_path(trail_file).read_text())
    assert head["events"] == N_EVENTS and head["last_hash"] == events[-1]["hash"]
    assert main(["audit", "verify", str(trail_file)]) == 0
    assert f"intact, {N_EVENTS} event(s)" in capsys.readouterr().out


def _tamper(kind: str, lines: List[bytes], rng: random.Random) -> tuple:
    """A tampered copy of the lines and the event the verifier must name first."""
    n = len(lines)
    if kind == "byte":
        k = rng.randrange(n)
        line = bytearray(lines[k] + b"\n")
        pos = rng.randrange(len(line))
        old = line[pos]
        line[pos] = rng.choice([b for b in range(256) if b != old])
        new = [*lines[:k], bytes(line), *lines[k + 1:]]
        return b"".join(x if i == k else x + b"\n" for i, x in enumerate(new)), k + 1
    if kind == "removed":
        k = rng.randrange(n)
        new = lines[:k] + lines[k + 1:]
        return b"".join(x + b"\n" for x in new), k + 1
    if kind == "inserted":
        k = rng.randrange(n + 1)
        source = json.loads(lines[rng.randrange(n)])
        forged = dict(source, reason="inserted afterwards", seq=k + 1,
                      prev=json.loads(lines[k - 1])["hash"] if k else GENESIS_HASH)
        forged["hash"] = event_hash(forged)  # a well-formed event chained onto the one before it:
        new = [*lines[:k], canonical_json(forged), *lines[k:]]  # the next genuine event breaks
        return b"".join(x + b"\n" for x in new), k + 2 if k < n else n + 1
    i, j = sorted(rng.sample(range(n), 2))
    new = list(lines)
    new[i], new[j] = new[j], new[i]
    return b"".join(x + b"\n" for x in new), i + 1


def test_every_random_tampering_is_caught(trail_file: Path, tmp_path: Path) -> None:
    """R-5.6 must-show: >= 100 random tamperings (changed byte, removed, inserted, reordered event),
    every one caught, and the first broken event named exactly."""
    rng = random.Random(20261122)
    lines = _lines(trail_file)
    copy = tmp_path / "audit.jsonl"
    head_path(copy).write_bytes(head_path(trail_file).read_bytes())
    kinds = ["byte", "removed", "inserted", "reordered"]
    caught = dict.fromkeys(kinds, 0)
    for n in range(N_TAMPERINGS):
        kind = kinds[n % 4]
        data, first = _tamper(kind, lines, rng)
        copy.write_bytes(data)
        result = verify_trail(copy)
        assert not result.ok, (kind, n)
        assert result.first_broken == first, (kind, n, result.problem)
        caught[kind] += 1
    assert sum(caught.values()) == N_TAMPERINGS and min(caught.values()) >= 25


def test_cli_names_the_first_broken_event(trail_file: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """R-5.6: mmanno audit verify exits 1 and names the first broken event (text and JSON)."""
    copy = tmp_path / "audit.jsonl"
    lines = _lines(trail_file)
    _write_lines(copy, [*lines[:6], lines[6].replace(b"step 6", b"step 7"), *lines[7:]])
    head_path(copy).write_bytes(head_path(trail_file).read_bytes())
    assert main(["audit", "verify", str(copy)]) == 1
    assert "BROKEN at event 7" in capsys.readouterr().out
    assert main(["audit", "verify", str(copy), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["first_broken"] == 7


def test_cut_end_and_missing_head_are_caught(trail_file: Path, tmp_path: Path) -> None:
    """R-5.6: removing the last events (a consistent chain) or the head does not pass."""
    copy = tmp_path / "audit.jsonl"
    _write_lines(copy, _lines(trail_file)[:-3])
    head_path(copy).write_bytes(head_path(trail_file).read_bytes())
    result = verify_trail(copy)
    assert not result.ok and result.first_broken == N_EVENTS - 2 and "removed" in result.problem
    head_path(copy).unlink()
    assert not verify_trail(copy).ok
    copy.write_bytes(b"")
    head_path(copy).write_bytes(head_path(trail_file).read_bytes())
    assert not verify_trail(copy).ok


def test_append_refuses_a_broken_trail(trail_file: Path, tmp_path: Path) -> None:
    """R-5.6: an append never extends a trail whose end does not check."""
    copy = tmp_path / "audit.jsonl"
    lines = _lines(trail_file)
    _write_lines(copy, [*lines[:-1], lines[-1].replace(b"step", b"Step")])
    head_path(copy).write_bytes(head_path(trail_file).read_bytes())
    before = copy.read_bytes()
    with pytest.raises(TrailError, match="does not match its hash"):
        AuditTrail(copy).append(actor="A01", role="annotator", action="note")
    copy.write_bytes(before[:-1])  # interrupted write: no final newline
    with pytest.raises(TrailError, match="no newline"):
        AuditTrail(copy).append(actor="A01", role="annotator", action="note")


_APPENDER = """
import sys
from MultiModalAnnotationLib.provenance.audit import AuditTrail
trail = AuditTrail(sys.argv[1], case="CASE_0001")
for n in range(int(sys.argv[3])):
    trail.append(actor=sys.argv[2], role="annotator", action="edited", objects=[f"{sys.argv[2]}-{n}"])
"""


def test_two_processes_append_concurrently(tmp_path: Path) -> None:
    """R-5.6 must-show: two processes appending 200 events each at once leave 400 events that verify."""
    path = tmp_path / "audit.jsonl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(path), actor, "200"], env=env)
             for actor in ("A01", "A02")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    result = verify_trail(path)
    assert result.ok, result.line()
    assert result.n_events == 400
    for actor in ("A01", "A02"):
        mine = [e["objects"][0] for e in result.events if e["actor"] == actor]
        assert mine == [f"{actor}-{n}" for n in range(200)]  # none lost, each process's order kept


def test_events_carry_no_identifying_value(tmp_path: Path) -> None:
    """R-5.5/R-5.6: names, resident IDs, phones, e-mails and non-pseudonymous actors are refused,
    naming the field but never echoing the value; nothing is written."""
    trail = AuditTrail(tmp_path / "audit.jsonl")
    refusals = [
        ({"actor": "Zhang San"}, "actor"),
        ({"actor": "张三"}, "actor"),
        ({"reason": "patient WANG^XIAOMING asked"}, "DICOM person name"),
        ({"reason": "ID 11010519491231002X on the form"}, "resident identity number"),
        ({"reason": "call 13812345678"}, "mobile phone"),
        ({"reason": "mail li@example.com"}, "e-mail"),
        ({"objects": ["ZHANG^SAN"]}, "objects"),
        ({"details": {"note": "LI^SI"}}, "details.note"),
    ]
    for change, expected in refusals:
        fields: dict = {"actor": "A01", "role": "annotator", "action": "note", **change}
        with pytest.raises(PrivacyError, match=expected) as info:
            trail.append(**fields)
        assert "13812345678" not in str(info.value) and "WANG" not in str(info.value)
    assert not trail.path.exists() or trail.path.read_bytes() == b""
    # 18 digits without a valid check digit are not a resident ID (a UID-like number is fine)
    trail.append(actor="A01", role="annotator", action="note", reason="series 110105194912310021 reloaded")
    with pytest.raises(InputError, match="role"):
        trail.append(actor="A01", role="doctor", action="note")
    with pytest.raises(InputError, match="action"):
        trail.append(actor="A01", role="annotator", action="deleted")


def test_known_case_values_are_refused(sample_case: Any, tmp_path: Path) -> None:
    """R-5.5: with the originals known, the case's own patient ID and name tokens are refused."""
    import pydicom

    case = sample_case("ct-chest", slices=8)
    first = next(p for p in Path(case.root).rglob("*") if p.is_file() and p.suffix in (".dcm", ""))
    ds = pydicom.dcmread(str(first), stop_before_pixels=True, force=True)
    guard = PrivacyGuard.from_originals(str(case.root))
    trail = AuditTrail(tmp_path / "audit.jsonl", guard)
    with pytest.raises(PrivacyError, match="case's id"):
        trail.append(actor="A01", role="annotator", action="note", reason=f"see record {ds.PatientID} again")
    family, given = str(ds.PatientName).split("=")[0].split("^")[:2]
    for spelling in (f"told {given.lower()} {family.lower()} the result", f"{family} {given} phoned"):
        with pytest.raises(PrivacyError, match="case's name"):
            trail.append(actor="A01", role="annotator", action="note", reason=spelling)
    trail.append(actor="A01", role="annotator", action="note", reason="boundary unclear on slice 4")
    assert verify_trail(trail.path).ok


def test_canonical_json_is_rfc8785() -> None:
    """R-5.6: canonical bytes (RFC 8785 numbers and key order) so any implementation gets the same hash."""
    assert canonical_json({"b": 1, "a": [1.0, -0.0, 1e-7, 1e21, 0.000001, 123.456, 2.5e-5]}) == \
        b'{"a":[1,0,1e-7,1e+21,0.000001,123.456,0.000025],"b":1}'
    assert canonical_json({"\u20ac": 1, "\r": 2, "\U0001f600": 3, "\ufb33": 4}) == \
        '{"\\r":2,"\u20ac":1,"\U0001f600":3,"\ufb33":4}'.encode()
    assert canonical_json("a\u0001\"\\") == b'"a\\u0001\\"\\\\"'
    for bad in (float("nan"), float("inf"), 2 ** 60, {1: 2}, object()):
        with pytest.raises(CanonicalJSONError):
            canonical_json(bad)


def test_cli_append_show_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """R-5.6: mmanno audit append / show; a bad role or identifying reason is one line, exit 2."""
    trail = tmp_path / "case" / "audit.jsonl"
    assert main(["audit", "append", str(trail), "--actor", "A01", "--role", "annotator", "--action", "edited",
                 "--object", "v1", "--reason", "first outline", "--case", "CASE_7", "--json"]) == 0
    event = json.loads(capsys.readouterr().out)
    assert event["seq"] == 1 and event["objects"] == ["v1"] and event["case"] == "CASE_7"
    assert main(["audit", "append", str(trail), "--actor", "R01", "--role", "reviewer", "--action", "reviewed"]) == 0
    assert main(["audit", "show", str(trail)]) == 0
    out = capsys.readouterr().out
    assert "R01/reviewer reviewed" in out and "(first outline)" in out
    with pytest.raises(SystemExit) as info:
        main(["audit", "append", str(trail), "--actor", "A01", "--role", "boss", "--action", "note"])
    assert info.value.code == 2
    capsys.readouterr()
    assert main(["audit", "append", str(trail), "--actor", "A01", "--role", "annotator", "--action", "note",
                 "--reason", "WANG^WU"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "person name" in err and "WANG" not in err
    assert main(["audit", "verify", str(tmp_path / "missing.jsonl")]) == 2
    assert verify_trail(trail).n_events == 2


def test_package_ships_and_checks_the_trail(trail_file: Path, tmp_path: Path) -> None:
    """R-5.6: the trail is listed in the package manifest and checked by verify_package."""
    from MultiModalAnnotationLib.package import export_package, verify_package
    from MultiModalAnnotationLib.sample_documents import document_from_sample
    from RTSSBridgeLib.samples import write_sample

    case = write_sample("mr-brain-mets", tmp_path / "sample", slices=8)
    document, masks, template = document_from_sample(Path(case.root))
    for as_zip in (False, True):
        out = export_package(tmp_path / ("pkg.zip" if as_zip else "pkg"), document, template, masks=masks,
                             audit=trail_file, as_zip=as_zip)
        report = verify_package(out)
        assert report.ok, report.lines()
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest["audit"]["events"] == N_EVENTS
    assert {"audit.jsonl", "audit.head.json"} <= {f["path"] for f in manifest["files"]}
    # a consistent rewrite of trail + manifest digests is still caught by the recorded last hash
    pkg = tmp_path / "pkg"
    lines = _lines(pkg / "audit.jsonl")
    _write_lines(pkg / "audit.jsonl", lines[:-1])
    report = verify_package(pkg)
    assert not report.ok and report.audit and "changed: audit.jsonl" in report.lines()
    broken = tmp_path / "broken.jsonl"
    _write_lines(broken, _lines(trail_file)[1:])
    head_path(broken).write_bytes(head_path(trail_file).read_bytes())
    with pytest.raises(TrailError, match="event 1"):
        export_package(tmp_path / "pkg2", document, template, masks=masks, audit=broken)
