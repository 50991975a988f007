"""Shared command-line plumbing for ``mmanno`` subcommands (core only).

Every subcommand: ``--help``; ``--json [OUT]`` writes machine-readable output to stdout (no
value or ``-``) or atomically to a file; progress goes to stderr; bad input ends with one line
``mmanno <command>: error: <reason>`` and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable, List, Optional, TextIO

from .errors import InputError
from .fileio import write_json_atomic
from .labels import LabelSet

EXIT_OK = 0
EXIT_FAILED_CHECK = 1  # the command ran and found what it was asked to find (a blocking problem)
EXIT_BAD_INPUT = 2  # nothing usable: the reason is printed on one line
EXIT_INTERNAL = 3


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump): ``mmanno sample: error: ... (see --help)``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def add_json_option(parser: argparse.ArgumentParser, help_text: str = "") -> None:
    parser.add_argument(
        "--json", nargs="?", const="-", default=None, metavar="OUT",
        help=help_text or "write the result as JSON to OUT (or to standard output when OUT is omitted or '-')",
    )


def emit_json(destination: Optional[str], data: Any, stream: Optional[TextIO] = None) -> None:
    """Write ``data`` as JSON to ``destination`` ('-' = stdout); nothing when None."""
    if destination is None:
        return
    if destination == "-":
        out = stream or sys.stdout
        out.write(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
        out.flush()
    else:
        write_json_atomic(destination, data)


class Progress:
    """A progress line on stderr: rewritten in place on a terminal, a few plain lines otherwise."""

    def __init__(self, label: str, enabled: bool = True, stream: Optional[TextIO] = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._last_fraction = -1.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        now = time.monotonic()
        fraction = done / total
        if self.tty:
            if done == total or now - self._last > 0.1:
                width = 30
                filled = int(width * fraction)
                self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
                if done == total:
                    self.stream.write("\n")
                self.stream.flush()
                self._last = now
        elif done == total or fraction - self._last_fraction >= 0.25:
            self.stream.write(f"{self.label}: {done}/{total}\n")
            self.stream.flush()
            self._last_fraction = fraction


def fail(command: str, reason: str, code: int = EXIT_BAD_INPUT) -> int:
    """Print the one-line reason and return the exit status."""
    sys.stderr.write(f"mmanno {command}: error: {' '.join(str(reason).split())}\n")
    return code


#: How ``--template FILE`` becomes a :class:`~RTSSBridgeLib.labels.LabelSet`. Label templates
#: belong to MultiModalAnnotation, which the lower modules must not import; its command line sets
#: this at start-up (dependency inversion), so RTSSBridge and QCMetrics commands can take templates.
label_set_loader: Optional[Callable[[str], LabelSet]] = None


#: Called (each once, in order) before a QC command reads its inputs: MultiModalAnnotation adds
#: the reader of its annotation packages this way without the lower modules importing it, and
#: without loading QCMetrics for commands that do not need it.
reader_hooks: List[Callable[[], None]] = []


def run_reader_hooks() -> None:
    while reader_hooks:
        reader_hooks.pop(0)()


def load_label_set(path: str) -> LabelSet:
    """The label set of the template file ``path`` (raises :class:`InputError` on any problem)."""
    if label_set_loader is None:
        raise InputError("label templates are read by the MultiModalAnnotation core, which is not loaded",
                         file=path, field="--template")
    return label_set_loader(path)
