"""The project's exceptions (STYLE habit 2).

Every error the core raises for bad input is an :class:`InputError` whose message is one line
naming the file (when there is one), the field and the rule that was broken. The command line
prints that line and exits non-zero; the Slicer panels show it in an error dialog.
"""

from __future__ import annotations

from typing import List, Optional


class MMAnnoError(Exception):
    """Base class of every error raised on purpose by MultiModalAnnotation code."""


class InputError(MMAnnoError, ValueError):
    """An input file or argument breaks a rule.

    Remedy: fix the named field of the named file (or choose another input); nothing was
    written and no input was modified.
    """

    def __init__(self, rule: str, *, file: Optional[str] = None, field: Optional[str] = None) -> None:
        self.rule = rule
        self.file = file
        self.field = field
        parts = [p for p in (file, field) if p]
        prefix = ": ".join(parts)
        message = f"{prefix}: {rule}" if prefix else rule
        super().__init__(" ".join(message.split()))  # always one line


class ProblemListError(InputError):
    """An input that breaks several rules at once: ``problems`` lists each on one line; the
    message shows the first and how many more (with ``hint``, e.g. the command that lists them all)."""

    #: Said after the count of further problems, e.g. "run mmanno template validate".
    hint = ""

    def __init__(self, problems: List[str], file: Optional[str] = None) -> None:
        self.problems = list(problems)
        more = ""
        if len(self.problems) > 1:
            more = f" (and {len(self.problems) - 1} more problem(s){'; ' + self.hint if self.hint else ''})"
        super().__init__(self.problems[0] + more, file=file)


class GeometryError(InputError):
    """Image geometry that cannot be represented or is inconsistent.

    Remedy: check the orientation, spacing and origin fields of the input (DICOM Image
    Orientation/Position Patient and Pixel Spacing, or the NIfTI sform/qform).
    """


class DicomError(InputError):
    """A DICOM file or series that cannot be read as asked.

    Remedy: the message names the file and the tag; fix or remove that file, or load the rest
    of the series and read the problem list.
    """


class NotApplicableError(InputError):
    """An option that does not apply to the chosen kind of input (e.g. ``--oblique`` on a 2-D
    ultrasound sample). Remedy: drop the option or choose another kind."""
