"""The ``mmanno`` command line: one console script over the three cores (ARCHITECTURE.md).

Each module registers its own subcommands (``RTSSBridgeLib.cli``, ``QCMetricsLib.cli``,
this package's ``demo``). Bad input ends with a single line on stderr and exit status 2;
an unexpected failure with a single line and status 3 (``MMANNO_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback
from typing import Any, List, Optional

from RTSSBridgeLib import cliutil
from RTSSBridgeLib.cliutil import EXIT_INTERNAL, Parser, fail
from RTSSBridgeLib.errors import MMAnnoError

from . import __version__

#: Modules that add subcommands, each with ``register(subparsers)``: one line per capability.
COMMAND_MODULES = (
    "RTSSBridgeLib.cli",
    "RTSSBridgeLib.admission.cli",
    "RTSSBridgeLib.deid.cli",
    "QCMetricsLib.cli",
    "RTSSBridgeLib.convert_cli",
    "MultiModalAnnotationLib.demo",
    "MultiModalAnnotationLib.commands",
    "MultiModalAnnotationLib.provenance.cli",
    "MultiModalAnnotationLib.linking_cli",
    "MultiModalAnnotationLib.fusion_cli",
)


def install_template_loader() -> None:
    """Let RTSSBridge and QCMetrics commands take ``--template FILE`` (or a built-in template id):
    they only know :class:`RTSSBridgeLib.labels.LabelSet`; templates are read here (ARCHITECTURE.md).
    A loader already in place (a test's) is kept."""
    from .templates import load_label_set

    if cliutil.label_set_loader is None:
        cliutil.label_set_loader = load_label_set
    if _install_qc_readers not in cliutil.reader_hooks:  # qc compare/batch read annotation packages too
        cliutil.reader_hooks.append(_install_qc_readers)


def _install_qc_readers() -> None:
    from .qc_readers import install

    install()


class _Sink:
    """Stands in for the parsers of the commands not being run: every call is accepted and ignored."""

    def __getattr__(self, name: str) -> Any:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> _Sink:
        return self

    def __setattr__(self, name: str, value: Any) -> None:  # even ``p.__class__ = ...`` is ignored
        pass


class _OnlyCommand:
    """The subparsers action seen by the modules' ``register`` when one command is run: only that
    command's parser is built. argparse spent 0.1 s building the parsers of all 19 commands (and
    their subcommands), a fifth of an RT Structure Set import."""

    def __init__(self, subparsers: Any, command: str) -> None:
        self._subparsers = subparsers
        self._command = command
        self.found = False

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name == self._command or self._command in kwargs.get("aliases", ()):
            self.found = True
            return self._subparsers.add_parser(name, **kwargs)
        return _Sink()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._subparsers, name)


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The ``mmanno`` parser; with ``command``, only that command's subparser is built (all of
    them when no module registers it, so that argparse lists the choices)."""
    install_template_loader()
    parser = Parser(
        prog="mmanno",
        description="MultiModalAnnotation command line: inspect and convert images, generate sample cases, "
                    "run the headless pipeline. Every subcommand has --help and --json.",
    )
    parser.add_argument("--version", action="version", version=f"mmanno {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    target: Any = subparsers if command is None else _OnlyCommand(subparsers, command)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(target)
    if command is not None and not target.found:
        return build_parser()
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    command = words[0] if words and not words[0].startswith("-") else None
    parser = build_parser(command)
    args = parser.parse_args(words)
    try:
        return int(args.func(args))
    except MMAnnoError as exc:
        return fail(args.command, str(exc))
    except KeyboardInterrupt:
        return fail(args.command, "interrupted", 130)
    except Exception as exc:  # a bug: still one line, and the trace on request
        if os.environ.get("MMANNO_DEBUG"):
            traceback.print_exc()
        return fail(args.command, f"internal error {type(exc).__name__}: {exc} (set MMANNO_DEBUG=1 for details)",
                    EXIT_INTERNAL)


def run() -> None:
    """The ``mmanno`` console script: :func:`main` with one BLAS thread unless the caller chose
    otherwise (``OPENBLAS_NUM_THREADS``), leaving without the interpreter's teardown.

    No command multiplies large matrices, and OpenBLAS starting its thread pool cost 0.06-0.1 s
    of every start on the 2-core machines measured (``import numpy`` 0.18 s -> 0.12 s); one
    thread also keeps the forked helper of ``rtss import`` clear of BLAS threads."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    code = main()
    # Everything is written and closed by now (outputs are atomic files, thread pools and helper
    # processes are joined), so the interpreter's teardown - freeing every object of the run, 0.06 s
    # after an RTSS import of 0.45 s - is skipped; only the standard streams need flushing.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
