"""Benchmark: sentence splitting of Chinese, English and mixed radiology reports (R-8.4.2.3).

Compares, in one run on the same texts:

* ``mmanno`` - ``MultiModalAnnotationLib.reports_text.split_sentences`` (one pass for any mix of
  Chinese and English; code-point offsets);
* ``pysbd`` - pySBD 0.3 (``Segmenter(language=..., clean=False, char_span=True)``), the rule-based
  splitter most used in Python; it takes one language per text, so each report is split with
  ``zh`` when it holds Chinese characters and ``en`` otherwise (its best choice per text);
* ``regex`` - the usual one-liner ``re.split(r"(?<=[。！？；.!?;])\\s*", text)``.

Accuracy: the 24 annotated bilingual reports of ``Testing/test_report_text.py`` (decimals,
abbreviations, list numbers, brackets, quotes, full-width punctuation, characters beyond the BMP);
a report counts as correct when the sentences (text after stripping white space) and their start
offsets all equal the reference. Speed: the corpus repeated to ``--reports`` reports, each tool
timed ``--repeats`` times interleaved (median); peak Python memory of one pass by tracemalloc.
Timings are noisy on a shared machine: compare the ratios of one run.

Usage: ``python benchmarks/bench_report_text.py [--reports 20000] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Callable, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / "requirements-peers.txt"
Span = Tuple[int, str]


def ensure_peers() -> None:
    if subprocess.run([sys.executable, "-c", "import pysbd"], capture_output=True, check=False).returncode:
        line = next(x for x in PEERS.read_text("utf-8").splitlines() if x.startswith("pysbd"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", line.split("#")[0].strip()], check=True)


def corpus() -> List[Tuple[str, List[str]]]:
    sys.path[:0] = [str(ROOT), str(ROOT / "MultiModalAnnotation"), str(ROOT / "RTSSBridge")]
    from Testing.test_report_text import REPORTS

    return list(REPORTS)


def mmanno_split(text: str) -> List[Span]:
    from MultiModalAnnotationLib.reports_text import split_sentences

    return [(s.start, s.text) for s in split_sentences(text)]


_SEGMENTERS: Dict[str, object] = {}


def pysbd_split(text: str) -> List[Span]:
    import pysbd

    language = "zh" if re.search(r"[\u4e00-\u9fff]", text) else "en"
    if language not in _SEGMENTERS:
        _SEGMENTERS[language] = pysbd.Segmenter(language=language, clean=False, char_span=True)
    out = []
    for span in _SEGMENTERS[language].segment(text):  # type: ignore[attr-defined]
        stripped = span.sent.strip()
        if stripped:
            out.append((span.start + span.sent.index(stripped), stripped))
    return out


_BOUNDARY = re.compile(r"(?<=[。！？；.!?;])\s*")


def regex_split(text: str) -> List[Span]:
    out, pos = [], 0
    for piece in _BOUNDARY.split(text):
        start = text.find(piece, pos)
        stripped = piece.strip()
        if stripped:
            out.append((start + piece.index(stripped), stripped))
        pos = start + len(piece)
    return out


TOOLS: Dict[str, Callable[[str], List[Span]]] = {"mmanno": mmanno_split, "pysbd": pysbd_split, "regex": regex_split}


def accuracy(tool: Callable[[str], List[Span]], reports: List[Tuple[str, List[str]]]) -> Tuple[int, int]:
    from MultiModalAnnotationLib.reports_text import split_sentences

    correct_reports = correct_sentences = 0
    for text, expected in reports:
        reference = [(s.start, s.text) for s in split_sentences(text)]
        assert [t for _, t in reference] == expected  # the reference is the annotated truth
        got = tool(text)
        correct_reports += got == reference
        correct_sentences += len(set(got) & set(reference))
    return correct_reports, correct_sentences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ensure_peers()
    reports = corpus()
    n_sentences = sum(len(e) for _, e in reports)
    texts = [t for t, _ in reports] * (args.reports // len(reports) + 1)
    texts = texts[: args.reports]
    chars = sum(len(t) for t in texts)
    times: Dict[str, List[float]] = {name: [] for name in TOOLS}
    for tool in TOOLS.values():  # warm up (imports, compiled rules)
        tool(texts[0])
    names = list(TOOLS)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            for text in texts:
                TOOLS[name](text)
            times[name].append(time.perf_counter() - start)
    print(f"corpus: {len(reports)} annotated reports ({n_sentences} sentences); speed on {len(texts)} reports, "
          f"{chars} characters, median of {args.repeats}")
    print(f"{'tool':<8} {'reports right':>14} {'sentences right':>16} {'reports/s':>10} {'time ratio':>11} "
          f"{'peak MiB':>9}")
    base = statistics.median(times["mmanno"])
    for name, tool in TOOLS.items():
        right, sentences = accuracy(tool, reports)
        tracemalloc.start()
        for text in texts[:2000]:
            tool(text)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        median = statistics.median(times[name])
        print(f"{name:<8} {right:>8}/{len(reports):<5} {sentences:>9}/{n_sentences:<6} {len(texts) / median:>10.0f} "
              f"{median / base:>10.2f}x {peak:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
