"""Benchmark: de-identification throughput, peak memory and leaks (R-7.3).

Compares, in one run on the same files (warm page cache), three tools de-identifying a generated
1,000-file CT study (``mmanno sample ct-chest --slices 1000``: 512x512 slices, 0.5 MB each, with
planted identifying values, private tags and the sample's ``case.json`` record of them):

* ``mmanno`` - ``mmanno deid IN OUT --profile basic --key KEY`` (raw element streaming, pixel data
  copied untouched, worker processes);
* ``dicognito`` - ``python -m dicognito --output-directory OUT IN`` (its defaults);
* ``deid`` - ``deid.dicom.replace_identifiers`` with its default recipe and ``remove_private=True``.

Each tool runs as a fresh process per repeat, interleaved (the order rotates every round);
the time is the whole process, from start to exit (interpreter start and imports included), and
memory is the peak of the summed resident memory of the process and its children, sampled every
10 ms from /proc. Every tool's first output is checked by ``mmanno deid verify`` against the
originals (leaks by category) and by ``--images`` (same geometry and voxels).

Usage: ``python benchmarks/bench_deid.py [--files 1000] [--repeats 3] [--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data"
PEERS = HERE / "requirements-peers.txt"
TOOLS = ("mmanno", "dicognito", "deid")

DEID_CHILD = r"""
import sys, logging
logging.disable(logging.WARNING)
from deid.dicom import get_files, replace_identifiers
from deid.logger import bot
bot.level = 0
files = sorted(get_files(sys.argv[1]))
replace_identifiers(files, save=True, output_folder=sys.argv[2], remove_private=True, overwrite=True)
"""


def ensure_peers() -> None:
    """Install the peer tools from benchmarks/requirements-peers.txt when they are missing."""
    missing = []
    for module in ("dicognito", "deid"):
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, check=False).returncode:
            missing.append(module)
    if missing:
        print(f"installing peers: {', '.join(missing)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(PEERS)], check=True)


def study(n_files: int) -> Path:
    """The generated study (cached in benchmarks/data)."""
    root = DATA / f"deid-ct-{n_files}"
    if not (root / "case.json").exists():
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "MultiModalAnnotationLib.cli", "sample", "ct-chest", "--out", str(root),
                        "--slices", str(n_files), "--seed", "7", "--quiet"], check=True)
    return root


def _memory_kb(pid: int) -> Tuple[int, int]:
    """(RSS, PSS) in kB of one process; PSS shares pages between the processes that map them."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _tree_memory_kb(pid: int) -> Tuple[int, int]:
    """Summed (RSS, PSS) of ``pid`` and all its descendants."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    rss = pss = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        r, s = _memory_kb(p)
        rss, pss = rss + r, pss + s
        stack.extend(children.get(p, []))
    return rss, pss


def run_tool(tool: str, source: Path, out: Path, key: Path) -> Tuple[float, float, float, float]:
    """(wall seconds, peak tree RSS MB, peak tree PSS MB, CPU seconds of the tree) of one run."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(str(out) + ".private", ignore_errors=True)
    if tool == "mmanno":
        command = [sys.executable, "-m", "MultiModalAnnotationLib.cli", "deid", str(source), str(out),
                   "--profile", "basic", "--key", str(key), "--quiet"]
    elif tool == "dicognito":
        out.mkdir(parents=True)
        command = [sys.executable, "-m", "dicognito", "--output-directory", str(out), "--quiet", str(source)]
    else:
        out.mkdir(parents=True)
        command = [sys.executable, "-c", DEID_CHILD, str(source), str(out)]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = peak_pss = 0
    while process.poll() is None:
        rss, pss = _tree_memory_kb(process.pid)
        peak, peak_pss = max(peak, rss), max(peak_pss, pss)
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode != 0:
        raise RuntimeError(f"{tool} failed ({process.returncode}): {stderr[-2000:]}")
    return elapsed, peak / 1024, peak_pss / 1024, cpu


def check_output(out: Path, original: Path) -> Dict[str, Any]:
    from RTSSBridgeLib.deid.verify import compare_series, verify_output

    report = verify_output(str(out), str(original))
    try:
        images = compare_series(str(original), str(out))
        same = f"{images['matched']}/{images['original_series']} series identical"
    except Exception as exc:  # a peer's output may not even load as a series
        same = f"not loadable ({type(exc).__name__})"
    n_out = sum(1 for _ in out.rglob("*") if _.is_file())
    return {"n_leaks": report["n_leaks"], "by_category": report["leaks_by_category"], "images": same,
            "output_files": n_out, "leaking_keywords": sorted({leak["keyword"] for leak in report["leaks"]})[:12]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="files in the generated study (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON results")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    args = parser.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    ensure_peers()
    case = study(args.files)
    source = case / "dicom" / "CT_CHEST"
    n_files = sum(1 for p in source.iterdir() if p.is_file())
    work = DATA / "deid-work"
    work.mkdir(parents=True, exist_ok=True)
    key = work / "bench.key"
    if not key.exists():
        key.write_text(os.urandom(32).hex() + "\n", encoding="ascii")
        key.chmod(0o600)
    for p in source.iterdir():  # warm the page cache
        p.read_bytes()
    times: Dict[str, List[float]] = {t: [] for t in tools}
    memory: Dict[str, List[float]] = {t: [] for t in tools}
    shared: Dict[str, List[float]] = {t: [] for t in tools}
    cpu: Dict[str, List[float]] = {t: [] for t in tools}
    checks: Dict[str, Dict[str, Any]] = {}
    for round_no in range(args.repeats):
        order = tools[round_no % len(tools):] + tools[:round_no % len(tools)]
        for tool in order:
            out = work / f"out-{tool}"
            elapsed, peak, peak_pss, cpu_s = run_tool(tool, source, out, key)
            times[tool].append(elapsed)
            cpu[tool].append(cpu_s)
            memory[tool].append(peak)
            shared[tool].append(peak_pss)
            print(f"round {round_no + 1} {tool:10} {elapsed:7.2f} s  {n_files / elapsed:7.0f} files/s  "
                  f"peak RSS {peak:6.0f} MB  PSS {peak_pss:6.0f} MB  CPU {cpu_s:6.2f} s", file=sys.stderr)
            if tool not in checks:
                checks[tool] = check_output(out, case)
    rows = []
    for tool in tools:
        median = statistics.median(times[tool])
        rows.append({"tool": tool, "median_s": round(median, 3), "files_per_s": round(n_files / median, 1),
                     "peak_rss_mb": round(max(memory[tool]), 1), "peak_pss_mb": round(max(shared[tool]), 1),
                     "runs_s": [round(t, 3) for t in times[tool]],
                     "median_cpu_s": round(statistics.median(cpu[tool]), 3),
                     **checks[tool]})
    by_tool = {r["tool"]: r for r in rows}
    peers = [r for r in rows if r["tool"] != "mmanno"]
    summary: Dict[str, Any] = {}
    if "mmanno" in by_tool and peers:
        fastest = max(peers, key=lambda r: r["files_per_s"])
        per_round = [peer / own for own, peer in zip(times["mmanno"], times[fastest["tool"]])]
        summary = {"fastest_peer": fastest["tool"],
                   "throughput_ratio": round(by_tool["mmanno"]["files_per_s"] / fastest["files_per_s"], 2),
                   "throughput_ratio_per_round": [round(r, 2) for r in per_round],
                   "cpu_ratio": round(fastest["median_cpu_s"] / by_tool["mmanno"]["median_cpu_s"], 2),
                   "memory_ratio_rss": round(by_tool["mmanno"]["peak_rss_mb"] / fastest["peak_rss_mb"], 2),
                   "memory_ratio_pss": round(by_tool["mmanno"]["peak_pss_mb"] / fastest["peak_pss_mb"], 2)}
    result = {"benchmark": "bench_deid", "files": n_files, "file_mb": round(
        sum(p.stat().st_size for p in source.iterdir()) / n_files / 1e6, 3),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "repeats": args.repeats,
        "results": rows, "summary": summary}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench_deid-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("| tool | median s | files/s | CPU s | peak RSS MB | peak PSS MB | leaks | leaks by category | images |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in rows:
        categories = ", ".join(f"{k} {v}" for k, v in r["by_category"].items()) or "-"
        print(f"| {r['tool']} | {r['median_s']:.2f} | {r['files_per_s']:.0f} | {r['median_cpu_s']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | "
              f"{r['peak_pss_mb']:.0f} | {r['n_leaks']} | {categories} | {r['images']} |")
    if summary:
        print(f"\nmmanno: {summary['throughput_ratio']}x the throughput of the faster peer "
              f"({summary['fastest_peer']}; per round {summary['throughput_ratio_per_round']}), "
              f"{summary['cpu_ratio']}x less CPU time, {summary['memory_ratio_rss']}x its peak RSS, "
              f"{summary['memory_ratio_pss']}x its peak PSS. "
              f"Results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
