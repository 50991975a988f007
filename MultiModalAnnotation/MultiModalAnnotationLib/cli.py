"""The ``mmanno`` command line: one console script over the three cores (ARCHITECTURE.md).

Each module registers its own subcommands (``RTSSBridgeLib.cli``, ``QCMetricsLib.cli``,
this package's ``demo``). Bad input ends with a single line on stderr and exit status 2;
an unexpected failure with a single line and status 3 (``MMANNO_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import List, Optional

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


def build_parser() -> argparse.ArgumentParser:
    install_template_loader()
    parser = Parser(
        prog="mmanno",
        description="MultiModalAnnotation command line: inspect and convert images, generate sample cases, "
                    "run the headless pipeline. Every subcommand has --help and --json.",
    )
    parser.add_argument("--version", action="version", version=f"mmanno {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
