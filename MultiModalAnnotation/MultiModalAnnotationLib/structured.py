"""Image-structured data (R-8.4.3): field definitions, CSV/XLSX tables, binding by keys, time deviation.

Field definitions
-----------------
A ``structured-fields/v1`` JSON file (``Resources/structured/*.fields.json`` holds the seed 001 and
seed 004 ones) defines every column of a table: ``name`` (the header, as written in the sheet),
``type`` (``string``, ``integer``, ``number``, ``date``, ``datetime``), ``unit``, ``time_attribute``
(``none``, ``exam_time`` - compared with the image time -, ``event_time``, ``duration``),
``normal_range`` (a value outside is kept and flagged ``low``/``high``), ``minimum``/``maximum``
and ``allowed_values`` (a value outside is rejected), ``pattern`` (strings), ``format`` (dates:
``yyyyMMdd``, ``yyyy-MM-dd`` ...), ``identifying`` (the value is a pseudonym or other identifying
datum: never echoed in a message or log), ``required`` and ``key`` (the binding role: ``case_id``,
``accession_number``, ``image_uid`` or ``record`` - the column that tells records of one case
apart, such as seed 001's tumour ``Order``). An ``exam_time`` field may name the key field of the
exam it dates (``exam_key``: seed 004's ``Exam_date_F`` dates the ``REQ_F`` exam).

Tables
------
:func:`read_table` reads a CSV (UTF-8, with or without BOM) or an XLSX sheet (openpyxl,
read-only) and validates every value; every broken rule is one line naming the row (the sheet's
row number: the header is row 1) and the column (letter and header), e.g. ``row 7, column E
(Age): 'abc' is not an integer``. Values of identifying columns are withheld from messages.
:func:`write_table` writes a table back (atomically) in the order of its columns; numbers are
written in Python's shortest round-trip form and dates in the field's format, so a file in that
canonical form round-trips byte for byte through import -> document -> export.

Binding and time deviation
--------------------------
:func:`bind_table` keeps the records of one case (its case ID, and the accession numbers or image
UIDs of its images) and refuses a table in which two records share the same keys (key fields and
exam times: two lab results of one case on different dates are two records). For each record
with an ``exam_time`` field it computes the distance in **calendar days** between the exam date
and the date of the image it belongs to (the image its ``exam_key`` names, else the document's
image) and sets the **time-deviation tag** when that distance is more than the task's threshold
(default 90 days, :data:`MultiModalAnnotationLib.tasks.DEFAULT_QC`): 89 and 90 days are not tagged,
91 days is (8.4.3.5 "超过90天"). The bound records go into the document's ``structured_data``
section (schema ``structured-data/v1``) with the field definitions, so the document alone can be
exported again.
"""

from __future__ import annotations

import copy
import csv
import datetime as _dt
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from RTSSBridgeLib.errors import InputError, ProblemListError

from .documents import AnnotationDocument
from .schemas import read_json, schema_id, schema_problems

FIELDS_SCHEMA = "structured-fields"
TABLE_SCHEMA = "structured-table"
SECTION_SCHEMA = "structured-data"
FIELD_TYPES = ("string", "integer", "number", "date", "datetime")
TIME_ATTRIBUTES = ("none", "exam_time", "event_time", "duration")
KEY_ROLES = ("case_id", "accession_number", "image_uid", "record")
#: Default time-deviation threshold (8.4.3.5); a task's ``qc.time_deviation_days`` overrides it.
DEFAULT_TIME_DEVIATION_DAYS = 90
_FORMAT_TOKENS = (("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S"))
_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


class TableError(ProblemListError):
    """A table breaks rules of its field definitions; ``problems`` lists each on one line (row and column)."""


def _strftime_format(spec: str) -> str:
    out = spec
    for token, directive in _FORMAT_TOKENS:
        out = out.replace(token, directive)
    return out


def column_letter(index: int) -> str:
    """Spreadsheet letter of the 0-based column ``index`` (0 -> A, 26 -> AA)."""
    letters = ""
    n = index + 1
    while n:
        n, rest = divmod(n - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


# --------------------------------------------------------------------------- definitions
@dataclass(frozen=True)
class FieldDefinition:
    """One column (R-8.4.3.3: type, unit, time attribute, normal range)."""

    name: str
    type: str
    description: str = ""
    unit: str = ""
    time_attribute: str = "none"
    normal_range: Optional[Tuple[Optional[float], Optional[float]]] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    allowed_values: Tuple[Any, ...] = ()
    pattern: str = ""
    format: str = ""
    identifying: bool = False
    required: bool = True
    key: str = ""
    exam_key: str = ""

    def __post_init__(self) -> None:
        if self.type not in FIELD_TYPES:
            raise InputError(f"{self.name}: type {self.type!r} is not one of {', '.join(FIELD_TYPES)}",
                             field="fields.type")
        if self.time_attribute not in TIME_ATTRIBUTES:
            raise InputError(f"{self.name}: time_attribute {self.time_attribute!r} is not one of "
                             f"{', '.join(TIME_ATTRIBUTES)}", field="fields.time_attribute")
        if self.key and self.key not in KEY_ROLES:
            raise InputError(f"{self.name}: key {self.key!r} is not one of {', '.join(KEY_ROLES)}", field="fields.key")
        if self.time_attribute == "exam_time" and self.type not in ("date", "datetime"):
            raise InputError(f"{self.name}: an exam_time field is a date or datetime", field="fields.type")

    @property
    def date_format(self) -> str:
        if self.format:
            return _strftime_format(self.format)
        return "%Y-%m-%d" if self.type == "date" else "%Y-%m-%dT%H:%M:%S"

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"name": self.name, "type": self.type}
        for key in ("description", "unit", "pattern", "format", "key", "exam_key"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.time_attribute != "none":
            data["time_attribute"] = self.time_attribute
        if self.normal_range is not None:
            data["normal_range"] = list(self.normal_range)
        for key in ("minimum", "maximum"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.allowed_values:
            data["allowed_values"] = list(self.allowed_values)
        if self.identifying:
            data["identifying"] = True
        if not self.required:
            data["required"] = False
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FieldDefinition:
        rng = data.get("normal_range")
        return cls(str(data["name"]), str(data["type"]), str(data.get("description", "")), str(data.get("unit", "")),
                   str(data.get("time_attribute", "none")), (rng[0], rng[1]) if rng is not None else None,
                   data.get("minimum"), data.get("maximum"), tuple(data.get("allowed_values", ())),
                   str(data.get("pattern", "")), str(data.get("format", "")), bool(data.get("identifying", False)),
                   bool(data.get("required", True)), str(data.get("key", "")), str(data.get("exam_key", "")))

    # ------------------------------------------------------------------ values
    def shown(self, raw: Any) -> str:
        """How a value appears in a message: identifying values are withheld (R-5.1)."""
        return "(value withheld: identifying field)" if self.identifying else repr(raw)

    def parse(self, raw: Any) -> Any:
        """The JSON value of a cell (``str`` from CSV; ``str``/``int``/``float``/``datetime`` from XLSX).

        Returns None for an empty cell; raises ValueError with the rule when the value is invalid.
        """
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            if self.required:
                raise ValueError("is empty; rule: required")
            return None
        value: Any
        if self.type == "string":
            value = raw if isinstance(raw, str) else _number_text(raw)
            if self.pattern and not re.fullmatch(self.pattern, value):
                raise ValueError(f"{self.shown(value)} does not match {self.pattern}")
        elif self.type == "integer":
            if isinstance(raw, bool):
                raise ValueError(f"{self.shown(raw)} is not an integer")
            if isinstance(raw, float) and raw.is_integer():
                value = int(raw)
            elif isinstance(raw, int):
                value = raw
            elif isinstance(raw, str) and _INTEGER.match(raw.strip()):
                value = int(raw.strip())
            else:
                raise ValueError(f"{self.shown(raw)} is not an integer")
        elif self.type == "number":
            if isinstance(raw, bool):
                raise ValueError(f"{self.shown(raw)} is not a number")
            if isinstance(raw, (int, float)):
                value = raw
            elif isinstance(raw, str) and _NUMBER.match(raw.strip()):
                text = raw.strip()
                value = int(text) if _INTEGER.match(text) else float(text)
            else:
                raise ValueError(f"{self.shown(raw)} is not a number")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{self.shown(raw)} is not a finite number")
        else:
            value = self._parse_time(raw)
        if self.allowed_values and value not in self.allowed_values:
            allowed = ", ".join(str(v) for v in self.allowed_values)
            raise ValueError(f"{self.shown(value)} is not one of the allowed values ({allowed})")
        if isinstance(value, (int, float)):
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{self.shown(value)} is below the minimum {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"{self.shown(value)} is above the maximum {self.maximum}")
        return value

    def _parse_time(self, raw: Any) -> str:
        if isinstance(raw, _dt.datetime):
            moment = raw
        elif isinstance(raw, _dt.date):
            moment = _dt.datetime(raw.year, raw.month, raw.day)
        else:
            text = raw if isinstance(raw, str) else _number_text(raw)
            try:
                moment = _dt.datetime.strptime(text.strip(), self.date_format)
            except ValueError:
                raise ValueError(f"{self.shown(text)} is not a {self.type} in the format "
                                 f"{self.format or self.date_format}") from None
        return moment.date().isoformat() if self.type == "date" else moment.isoformat()

    def flag(self, value: Any) -> Optional[str]:
        """``low``/``high`` when a number is outside the normal range (kept, never rejected)."""
        if self.normal_range is None or not isinstance(value, (int, float)):
            return None
        lo, hi = self.normal_range
        if lo is not None and value < lo:
            return "low"
        if hi is not None and value > hi:
            return "high"
        return None

    def text(self, value: Any) -> str:
        """The canonical CSV text of a JSON value (inverse of :meth:`parse` on canonical input)."""
        if value is None:
            return ""
        if self.type in ("date", "datetime"):
            return _dt.datetime.fromisoformat(str(value)).strftime(self.date_format)
        if isinstance(value, float):
            return repr(value)
        return str(value)

    def cell(self, value: Any) -> Any:
        """The XLSX cell value of a JSON value (dates as dates, numbers as numbers)."""
        if value is None:
            return None
        if self.type == "date":
            return _dt.date.fromisoformat(str(value))
        if self.type == "datetime":
            return _dt.datetime.fromisoformat(str(value))
        return value


def _number_text(raw: Any) -> str:
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw)


@dataclass(frozen=True)
class FieldDefinitions:
    """The field definitions of one kind of table (schema ``structured-fields/v1``)."""

    id: str
    version: str
    title: str
    fields: Tuple[FieldDefinition, ...]
    description: str = ""

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        for name in names:
            if names.count(name) > 1:
                raise InputError(f"{self.id}: field {name} is defined twice", field="fields.name")
        for f in self.fields:
            if f.exam_key and f.exam_key not in names:
                raise InputError(f"{self.id}: {f.name}.exam_key names no field {f.exam_key}", field="fields.exam_key")

    def get(self, name: str) -> Optional[FieldDefinition]:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def keyed(self, role: str) -> List[FieldDefinition]:
        return [f for f in self.fields if f.key == role]

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"schema": schema_id(FIELDS_SCHEMA), "id": self.id, "version": self.version,
                                "title": self.title}
        if self.description:
            data["description"] = self.description
        data["fields"] = [f.to_dict() for f in self.fields]
        return data

    @classmethod
    def from_dict(cls, data: Any, file: Optional[str] = None) -> FieldDefinitions:
        problems = schema_problems(FIELDS_SCHEMA, data)
        if problems:
            raise TableError(problems, file=file)
        try:
            return cls(str(data["id"]), str(data["version"]), str(data["title"]),
                       tuple(FieldDefinition.from_dict(f) for f in data["fields"]), str(data.get("description", "")))
        except InputError as exc:
            raise InputError(exc.rule, file=file, field=exc.field) from None


def read_field_definitions(path: str) -> FieldDefinitions:
    """Read and validate a field-definitions file."""
    return FieldDefinitions.from_dict(read_json(path), file=path)


def builtin_field_definitions(name: str) -> FieldDefinitions:
    """A shipped definition file of ``Resources/structured`` (``seed001-clinical`` ...)."""
    from RTSSBridgeLib.resources import resources_dir

    path = resources_dir() / "structured" / f"{name}.fields.json"
    if not path.is_file():
        known = sorted(p.name[: -len(".fields.json")] for p in (resources_dir() / "structured").glob("*.fields.json"))
        raise InputError(f"no built-in field definitions {name!r} (known: {', '.join(known)})", field="fields")
    return read_field_definitions(str(path))


# --------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class Record:
    """One row: ``values`` by column name (JSON types; dates as ISO text), ``flags`` for values
    outside their normal range, ``row`` the sheet row it came from (header = row 1)."""

    row: int
    values: Mapping[str, Any]
    flags: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"row": self.row, "values": copy.deepcopy(dict(self.values))}
        if self.flags:
            data["flags"] = dict(self.flags)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Record:
        return cls(int(data["row"]), copy.deepcopy(dict(data["values"])), dict(data.get("flags", {})))


@dataclass(frozen=True)
class Table:
    """An imported table: its definitions, column order, records and where it came from."""

    id: str
    fields: FieldDefinitions
    columns: Tuple[str, ...]
    records: Tuple[Record, ...]
    source: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {"schema": schema_id(TABLE_SCHEMA), "id": self.id, "fields": self.fields.to_dict(),
                "columns": list(self.columns), "source": copy.deepcopy(dict(self.source)),
                "records": [r.to_dict() for r in self.records]}

    @classmethod
    def from_dict(cls, data: Any, file: Optional[str] = None) -> Table:
        problems = schema_problems(TABLE_SCHEMA, data)
        if problems:
            raise TableError(problems, file=file)
        fields = FieldDefinitions.from_dict(data["fields"], file=file)
        table = cls(str(data["id"]), fields, tuple(data["columns"]),
                    tuple(Record.from_dict(r) for r in data["records"]),
                    copy.deepcopy(data.get("source", {})))
        problems = table_problems(table)
        if problems:
            raise TableError(problems, file=file)
        return table

    def column(self, name: str) -> List[Any]:
        return [r.values.get(name) for r in self.records]


def table_problems(table: Table) -> List[str]:
    """Every value re-validated against its definition (a table JSON edited by hand)."""
    problems: List[str] = []
    for name in table.columns:
        if table.fields.get(name) is None:
            problems.append(f"columns: {name} has no field definition in {table.fields.id}")
    for record in table.records:
        for n, name in enumerate(table.columns):
            definition = table.fields.get(name)
            if definition is None:
                continue
            value = record.values.get(name)
            try:
                again = definition.parse(definition.text(value) if value is not None else None)
            except (ValueError, TypeError) as exc:
                problems.append(f"row {record.row}, column {column_letter(n)} ({name}): {exc}")
                continue
            if again != value:
                problems.append(f"row {record.row}, column {column_letter(n)} ({name}): "
                                f"{definition.shown(value)} is not a {definition.type} value")
    return problems


def _rows_csv(path: Path) -> Tuple[List[List[Any]], Dict[str, Any]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"is not UTF-8 text (byte {exc.start}); save the sheet as CSV UTF-8", file=str(path)) from None
    first = text.find("\n")
    style = {"bom": raw.startswith(b"\xef\xbb\xbf"),
             "line_terminator": "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"}
    try:
        return list(csv.reader(io.StringIO(text, newline=""))), style
    except csv.Error as exc:
        raise InputError(f"is not a readable CSV file ({exc})", file=str(path)) from None


def _rows_xlsx(path: Path, sheet: Optional[str]) -> List[List[Any]]:
    import zipfile

    import openpyxl

    try:
        book = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise InputError(f"is not a readable XLSX workbook ({type(exc).__name__})", file=str(path)) from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise InputError(f"has no sheet {sheet!r} (sheets: {', '.join(book.sheetnames)})", file=str(path),
                             field="sheet")
        ws = book[sheet] if sheet is not None else book.worksheets[0]
        rows = [list(r) for r in ws.iter_rows(values_only=True)]
    finally:
        book.close()
    while rows and all(v is None for v in rows[-1]):
        rows.pop()
    return rows


def read_table(path: str, fields: FieldDefinitions, table_id: Optional[str] = None,
               sheet: Optional[str] = None) -> Table:
    """Read and validate a CSV or XLSX table (see the module docstring); raises :class:`TableError`
    listing every invalid value with its row and column."""
    from RTSSBridgeLib.fileio import sha256_file

    source = Path(path)
    if not source.is_file():
        raise InputError("does not exist or is not a file", file=path)
    suffix = source.suffix.lower()
    if suffix == ".csv":
        rows, style = _rows_csv(source)
        kind = "csv"
    elif suffix in (".xlsx", ".xlsm"):
        rows = _rows_xlsx(source, sheet)
        kind, style = "xlsx", {}
    else:
        raise InputError(f"has the extension {suffix or '(none)'}; rule: a table is .csv or .xlsx", file=path)
    if not rows:
        raise TableError(["row 1: the table is empty; rule: the first row holds the column names"], file=path)
    header = ["" if v is None else str(v).strip() for v in rows[0]]
    while header and header[-1] == "":
        header.pop()
    problems: List[str] = []
    for n, name in enumerate(header):
        at = f"row 1, column {column_letter(n)}"
        if not name:
            problems.append(f"{at}: empty column name; rule: every column has a name")
        elif header.index(name) != n:
            problems.append(f"{at} ({name}): duplicate column name (also column {column_letter(header.index(name))})")
        elif fields.get(name) is None:
            problems.append(f"{at} ({name}): no field definition in {fields.id}; rule: every column is defined")
    for definition in fields.fields:
        if definition.required and definition.name not in header:
            problems.append(f"row 1: required column {definition.name} is missing")
    if problems:
        raise TableError(problems, file=path)
    records: List[Record] = []
    for r, row in enumerate(rows[1:], start=2):
        cells = list(row) + [None] * (len(header) - len(row))
        if all(c is None or (isinstance(c, str) and c.strip() == "") for c in cells):
            continue  # blank line between blocks
        extra = [c for c in cells[len(header):] if c not in (None, "")]
        if extra:
            problems.append(f"row {r}, column {column_letter(len(header))}: {len(extra)} value(s) beyond the last "
                            "named column")
        values: Dict[str, Any] = {}
        flags: Dict[str, str] = {}
        for n, name in enumerate(header):
            found = fields.get(name)
            assert found is not None
            definition = found
            try:
                value = definition.parse(cells[n])
            except ValueError as exc:
                problems.append(f"row {r}, column {column_letter(n)} ({name}): {exc}")
                continue
            values[name] = value
            flag = definition.flag(value)
            if flag:
                flags[name] = flag
        records.append(Record(r, values, flags))
    if problems:
        raise TableError(problems, file=path)
    info: Dict[str, Any] = {"file": source.name, "format": kind, "sha256": sha256_file(source), **style}
    if sheet is not None:
        info["sheet"] = sheet
    return Table(table_id or fields.id, fields, tuple(header), tuple(records), info)


def write_table(path: str, table: Table) -> Path:
    """Write ``table`` as CSV (canonical text, UTF-8, with the byte-order mark and line ends of the
    file it was read from; ``\\r\\n`` without BOM for a new table) or XLSX (typed cells),
    atomically; the format follows the extension."""
    from RTSSBridgeLib.fileio import atomic_path

    target = Path(path)
    suffix = target.suffix.lower()
    definitions = [table.fields.get(c) for c in table.columns]
    if any(d is None for d in definitions):
        raise InputError("a column has no field definition", field="columns")
    if suffix == ".csv":
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator=str(table.source.get("line_terminator", "\r\n")))
        writer.writerow(table.columns)
        for record in table.records:
            writer.writerow([d.text(record.values.get(d.name)) for d in definitions if d is not None])
        with atomic_path(target) as tmp:
            tmp.write_bytes((b"\xef\xbb\xbf" if table.source.get("bom") else b"") + buffer.getvalue().encode("utf-8"))
        return target
    if suffix == ".xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        ws = book.active
        ws.title = table.id[:31]
        ws.append(list(table.columns))
        for record in table.records:
            ws.append([d.cell(record.values.get(d.name)) for d in definitions if d is not None])
        for n, d in enumerate(definitions):
            if d is not None and d.type in ("date", "datetime"):
                # Excel format codes: mm is the month in a date, hh the hour
                fmt = "yyyy-mm-dd" if d.type == "date" else "yyyy-mm-dd hh:mm:ss"
                for column in ws.iter_cols(min_col=n + 1, max_col=n + 1, min_row=2):
                    for c in column:
                        c.number_format = fmt
        with atomic_path(target) as tmp:
            book.save(str(tmp))
        return target
    raise InputError(f"has the extension {suffix or '(none)'}; rule: a table is written as .csv or .xlsx", file=path)


def read_table_json(path: str) -> Table:
    """Read a table written by ``mmanno table import --out`` (validated)."""
    return Table.from_dict(read_json(path), file=path)


# --------------------------------------------------------------------------- binding
@dataclass(frozen=True)
class ImageKey:
    """An image of the case as the binding sees it: UID, accession number, acquisition date (ISO)."""

    uid: str
    accession_number: str = ""
    date: str = ""

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"uid": self.uid}
        if self.accession_number:
            data["accession_number"] = self.accession_number
        if self.date:
            data["date"] = self.date
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageKey:
        return cls(str(data["uid"]), str(data.get("accession_number", "")), str(data.get("date", "")))


@dataclass(frozen=True)
class CaseKeys:
    """The unique keys of a case (R-8.4.3.2): case ID and its images."""

    case_id: str
    images: Tuple[ImageKey, ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        return {"case_id": self.case_id, "images": [i.to_dict() for i in self.images]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseKeys:
        return cls(str(data["case_id"]), tuple(ImageKey.from_dict(i) for i in data.get("images", [])))


def days_between(a: str, b: str) -> int:
    """Whole calendar days between two ISO dates or date-times (time of day ignored)."""
    return abs((_dt.date.fromisoformat(str(a)[:10]) - _dt.date.fromisoformat(str(b)[:10])).days)


def time_deviation(exam_date: str, image_date: str, threshold_days: int = DEFAULT_TIME_DEVIATION_DAYS,
                   field_name: str = "") -> Dict[str, Any]:
    """The time-deviation entry: tagged when the dates are **more than** ``threshold_days`` apart."""
    days = days_between(exam_date, image_date)
    entry: Dict[str, Any] = {"exam_date": str(exam_date), "image_date": str(image_date), "days": days,
                             "threshold_days": int(threshold_days), "tag": days > threshold_days}
    if field_name:
        entry["field"] = field_name
    return entry


def _image_for(record: Record, definition: FieldDefinition, fields: FieldDefinitions, keys: CaseKeys
               ) -> Optional[ImageKey]:
    if definition.exam_key:
        wanted = record.values.get(definition.exam_key)
        partner = fields.get(definition.exam_key)
        role = partner.key if partner is not None else ""
        for image in keys.images:
            if (image.uid if role == "image_uid" else image.accession_number) == wanted:
                return image
        return None
    return keys.images[0] if keys.images else None


def _matches(record: Record, fields: FieldDefinitions, keys: CaseKeys) -> bool:
    for f in fields.keyed("case_id"):
        if str(record.values.get(f.name)) != keys.case_id:
            return False
    image_fields = fields.keyed("accession_number") + fields.keyed("image_uid")
    if image_fields and keys.images:
        known = {i.accession_number for i in keys.images} | {i.uid for i in keys.images}
        if not any(str(record.values.get(f.name)) in known for f in image_fields):
            return False
    return True


def bind_table(table: Table, keys: CaseKeys, threshold_days: int = DEFAULT_TIME_DEVIATION_DAYS
               ) -> List[Dict[str, Any]]:
    """The records of ``table`` that belong to the case ``keys`` as document records (JSON):
    ``id``, ``row``, ``keys``, ``values``, ``flags``, ``time_deviation``. Raises when no record
    belongs to the case or when two records of the case have the same keys."""
    fields = table.fields
    # the unique keys of a record: its key fields and its exam times (8.4.3.2: case ID, image UID, exam time)
    key_fields = [f for f in fields.fields if f.key or f.time_attribute == "exam_time"]
    if not fields.keyed("case_id") and not fields.keyed("accession_number") and not fields.keyed("image_uid"):
        raise InputError(f"fields {fields.id} define no case_id, accession_number or image_uid key; rule: records "
                         "are bound to a case by unique keys (8.4.3.2)", field="fields.key")
    bound: List[Dict[str, Any]] = []
    seen: Dict[Tuple[Any, ...], int] = {}
    for record in table.records:
        if not _matches(record, fields, keys):
            continue
        signature = tuple(record.values.get(f.name) for f in key_fields)
        if signature in seen:
            names = ", ".join(f.name for f in key_fields)
            raise InputError(f"rows {seen[signature]} and {record.row} have the same keys ({names}); rule: a record "
                             "is identified by its keys", field="keys")
        seen[signature] = record.row
        entry: Dict[str, Any] = {"id": f"{table.id}-r{record.row}", **record.to_dict(),
                                 "keys": {f.name: record.values.get(f.name) for f in key_fields}}
        worst: Optional[Dict[str, Any]] = None
        for definition in fields.fields:
            value = record.values.get(definition.name)
            if definition.time_attribute != "exam_time" or value is None:
                continue
            image = _image_for(record, definition, fields, keys)
            if image is None or not image.date:
                continue
            deviation = time_deviation(str(value), image.date, threshold_days, definition.name)
            if worst is None or deviation["days"] > worst["days"]:
                worst = deviation
        if worst is not None:
            entry["time_deviation"] = worst
        bound.append(entry)
    if not bound:
        raise InputError(f"no record of {table.id} belongs to case {keys.case_id} "
                         f"({len(table.records)} record(s) read); rule: bind by case ID / accession number / image UID",
                         field="keys")
    return bound


# --------------------------------------------------------------------------- the document section
def structured_section(document: AnnotationDocument) -> Dict[str, Any]:
    """The document's ``structured_data`` (an empty section when it has none)."""
    return copy.deepcopy(dict(document.structured_data)) if document.structured_data else {}


def add_table(document: AnnotationDocument, table: Table, keys: CaseKeys,
              threshold_days: int = DEFAULT_TIME_DEVIATION_DAYS,
              annotation_ids: Optional[Mapping[int, str]] = None) -> AnnotationDocument:
    """``document`` with the records of ``table`` that belong to the case (replacing a table of the
    same id). ``annotation_ids`` (row -> annotation id) ties records to annotations (seed 001's
    tumour rows to their point annotations)."""
    section = structured_section(document)
    if section and section.get("keys") and section["keys"]["case_id"] != keys.case_id:
        raise InputError(f"the document is bound to case {section['keys']['case_id']}, not {keys.case_id}",
                         field="structured_data.keys.case_id")
    records = bind_table(table, keys, threshold_days)
    for entry in records:
        if annotation_ids and entry["row"] in annotation_ids:
            entry["annotation_id"] = annotation_ids[entry["row"]]
    tables = [t for t in section.get("tables", []) if t["id"] != table.id]
    tables.append({"id": table.id, "fields": table.fields.to_dict(), "columns": list(table.columns),
                   "source": copy.deepcopy(dict(table.source)), "records": records})
    new = {"keys": keys.to_dict(), "time_deviation_days": int(threshold_days), "tables": tables}
    return document.replace(structured_data=new)


def table_from_document(document: AnnotationDocument, table_id: str) -> Table:
    """The table ``table_id`` of the document's structured data (its bound records)."""
    for raw in structured_section(document).get("tables", []):
        if raw["id"] == table_id:
            fields = FieldDefinitions.from_dict(raw["fields"])
            return Table(raw["id"], fields, tuple(raw["columns"]), tuple(Record.from_dict(r) for r in raw["records"]),
                         copy.deepcopy(raw.get("source", {})))
    known = ", ".join(t["id"] for t in structured_section(document).get("tables", [])) or "none"
    raise InputError(f"no table {table_id!r} in the document (tables: {known})", field="structured_data.tables")


def structured_data_problems(data: Mapping[str, Any], annotations: Sequence[Mapping[str, Any]]) -> List[str]:
    """Rules the schema cannot state: unique table and record ids, values valid for their fields,
    time-deviation tags equal to what the dates say, linked annotations exist."""
    problems: List[str] = []
    ids = {a["id"] for a in annotations}
    threshold = int(data.get("time_deviation_days", DEFAULT_TIME_DEVIATION_DAYS))
    seen_tables: List[str] = []
    for n, raw in enumerate(data.get("tables", [])):
        at = f"structured_data.tables[{n}] ({raw['id']})"
        if raw["id"] in seen_tables:
            problems.append(f"{at}.id: duplicate table id")
        seen_tables.append(raw["id"])
        try:
            fields = FieldDefinitions.from_dict(raw["fields"])
        except InputError as exc:
            problems.append(f"{at}.fields: {exc.rule}")
            continue
        table = Table(raw["id"], fields, tuple(raw["columns"]), tuple(Record.from_dict(r) for r in raw["records"]))
        problems += [f"{at}: {p}" for p in table_problems(table)]
        record_ids: List[str] = []
        for m, record in enumerate(raw["records"]):
            rat = f"{at}.records[{m}]"
            if record["id"] in record_ids:
                problems.append(f"{rat}.id: duplicate record id {record['id']}")
            record_ids.append(record["id"])
            if record.get("annotation_id") is not None and record["annotation_id"] not in ids:
                problems.append(f"{rat}.annotation_id: no annotation {record['annotation_id']}")
            deviation = record.get("time_deviation")
            if deviation is not None:
                days = days_between(deviation["exam_date"], deviation["image_date"])
                if days != deviation["days"] or deviation["tag"] != (days > deviation["threshold_days"]) \
                        or deviation["threshold_days"] != threshold:
                    problems.append(f"{rat}.time_deviation: {deviation['days']} days / tag {deviation['tag']} but the "
                                    f"dates are {days} days apart (threshold {threshold}); rule: tag when more than "
                                    "the threshold")
    return problems


def records_of(document: AnnotationDocument) -> Iterable[Tuple[str, Dict[str, Any]]]:
    """(table id, record) for every record of the document."""
    for raw in structured_section(document).get("tables", []):
        for record in raw["records"]:
            yield raw["id"], record
