"""Parse and validate knowledge files (question/answer pairs) before they are imported.

Three formats, chosen by the file's extension:

- ``.csv``: ``question,answer[,category]``, with or without a header row
  (``question,answer[,category]`` or ``câu hỏi,câu trả lời[,danh mục]``). Quoted fields may hold
  commas and line breaks.
- ``.jsonl``: one object per line, either chat style
  ``{"messages": [{"role": "system", ...}?, {"role": "user", ...}, {"role": "assistant", ...}, ...]}``
  (every user/assistant pair of the line is a row; an unanswered question refuses the line; a
  system message is an instruction to the model, not a fact, and is not imported: the persona
  sets Kaizen's system prompt)
  or ``{"prompt": ..., "completion": ...}`` / ``{"question": ..., "answer": ...}``, with an
  optional ``"category"``.
- ``.txt``: ``question -> answer`` (or ``→``) per line; blank lines and ``#`` comments are skipped.

This module is pure: it never touches the database. ``parse_knowledge`` reports every bad line
in ``ParseResult.errors`` and raises ``ImportFileError`` only when the file as a whole cannot be
accepted (too big, too many rows, not UTF-8 text, a pickle, ...). ``validate_import`` is what the
command line and the admin UI call: all or nothing, unless ``skip_invalid``.
Text is normalized to Unicode NFC so that Vietnamese typed with combining accents (as some
keyboards and macOS produce) matches the precomposed form users type in chat.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kaizen import errors
from kaizen.text import fold, is_follow_up, question_key

FORMATS = (".csv", ".jsonl", ".txt")
MAX_CATEGORY_CHARS = 100
MAX_ERRORS_IN_MESSAGE = 20

# Column names accepted in a CSV header row, by position, compared folded (no diacritics), case-
# insensitively and without surrounding punctuation ("Q:", "Câu hỏi?", a BOM): a header is never a fact.
_HEADER_NAMES = (
    {"q", "ques", "question", "questions", "prompt", "prompts", "query", "input", "instruction", "user", "hoi",
     "cau hoi", "cac cau hoi", "hoi dap", "faq", "faq question", "question text"},
    {"a", "ans", "answer", "answers", "completion", "response", "reply", "output", "assistant", "dap", "tra loi",
     "cau tra loi", "dap an", "answer text"},
    {"c", "cat", "category", "categories", "topic", "tag", "tags", "type", "group", "danh muc", "chu de", "loai",
     "nhom"},
)
# Control characters (Unicode category Cc) except \n and \t, which multi-line CSV/JSONL fields
# may hold, and lone surrogates, which JSON escapes ("\\ud800") can produce and UTF-8 cannot store.
_BAD_CHAR = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_HEADER_PUNCT = " :?#*.\"'()[]"
_ARROW = re.compile(r"->|→")
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")


@dataclass(frozen=True)
class KnowledgeRow:
    question: str
    answer: str
    category: str = ""
    line: int = 0  # 1-based line in the file where the row starts


@dataclass(frozen=True)
class LineError:
    line: int  # 0 for errors about the whole file
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


@dataclass
class ParseResult:
    rows: list[KnowledgeRow]
    errors: list[LineError]


@dataclass(frozen=True)
class ImportLimits:
    max_bytes: int = 5_000_000
    max_rows: int = 20_000
    max_question_chars: int = 1_000
    max_answer_chars: int = 4_000


class ImportFileError(errors.InputError):
    """A knowledge file was refused. ``.errors`` lists every problem found; ``UNIT`` names what a
    problem is in (a file's line, a dataset's row)."""

    UNIT = "line"

    def __init__(
        self, line_errors: Sequence[LineError], *, source: str = "", whole_file: bool = False
    ):
        self.errors = list(line_errors)
        prefix = f"{source}: " if source else ""
        if whole_file:
            message = prefix + "; ".join(str(e) for e in self.errors)
        else:
            shown = "\n".join(str(e) for e in self.errors[:MAX_ERRORS_IN_MESSAGE])
            more = len(self.errors) - MAX_ERRORS_IN_MESSAGE
            tail = f"\n... and {more} more" if more > 0 else ""
            message = (
                f"{prefix}{len(self.errors)} invalid {self.UNIT}(s); nothing was imported "
                f"(fix them, or skip invalid {self.UNIT}s to import the rest):\n{shown}{tail}"
            )
        super().__init__(message)


def parse_knowledge(
    data: bytes, filename: str, *, limits: ImportLimits = ImportLimits()
) -> ParseResult:
    """Parse a knowledge file, collecting every bad line in ``errors``.

    Raises ImportFileError when the file as a whole is unacceptable; never unpickles anything.
    """
    name, suffix = Path(filename).name, Path(filename).suffix.lower()
    text = _decode(data, suffix, limits)
    if isinstance(text, LineError):
        raise ImportFileError([text], source=name, whole_file=True)
    parse = {".csv": _parse_csv, ".jsonl": _parse_jsonl, ".txt": _parse_txt}[suffix]
    result = ParseResult(rows=[], errors=[])
    seen: dict[str, int] = {}
    for count, (line, fields) in enumerate(parse(text), start=1):
        if count > limits.max_rows:
            too_many = LineError(line, f"more than {limits.max_rows:,} rows; split the file")
            raise ImportFileError([too_many], source=name, whole_file=True)
        if isinstance(fields, LineError):
            row: KnowledgeRow | LineError = fields
        else:
            row = check_row(*fields, line=line, limits=limits)
        if isinstance(row, LineError):
            result.errors.append(row)
        elif (key := question_key(row.question)) in seen:
            result.errors.append(LineError(line, f"duplicate of line {seen[key]}"))
        else:
            seen[key] = line
            result.rows.append(row)
    if not result.rows and not result.errors:
        empty = LineError(0, "the file has no question/answer rows")
        raise ImportFileError([empty], source=name, whole_file=True)
    return result


def validate_import(
    data: bytes,
    filename: str,
    *,
    skip_invalid: bool = False,
    limits: ImportLimits = ImportLimits(),
) -> ParseResult:
    """Parse a file for import: any bad line refuses the whole file unless ``skip_invalid``.

    With ``skip_invalid`` the result's ``rows`` are the good rows and ``errors`` the skipped
    lines. Whole-file problems are refused either way.
    """
    result = parse_knowledge(data, filename, limits=limits)
    if result.errors and not skip_invalid:
        raise ImportFileError(result.errors, source=Path(filename).name)
    return result


def read_knowledge_file(
    path: str | Path, *, skip_invalid: bool = False, limits: ImportLimits = ImportLimits()
) -> ParseResult:
    """Read and validate a knowledge file, refusing oversized files before reading them."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size > limits.max_bytes:
                raise ImportFileError([_too_big(limits)], source=path.name, whole_file=True)
            # Read one byte past the limit so a file that grew (or a pipe) is still caught.
            data = f.read(limits.max_bytes + 1)
    except FileNotFoundError:
        raise errors.NotFoundError(f"no such file: {path}") from None
    except OSError as e:
        raise errors.InputError(f"cannot read {path}: {e.strerror or e}") from None
    return validate_import(data, path.name, skip_invalid=skip_invalid, limits=limits)


def _too_big(limits: ImportLimits) -> LineError:
    return LineError(0, f"the file is larger than {limits.max_bytes / 1_000_000:g} MB; split it")


def _decode(data: bytes, suffix: str, limits: ImportLimits) -> str | LineError:
    """The file's text (NFC, UTF-8 BOM removed), or why the file as a whole is refused."""
    if len(data) > limits.max_bytes:
        return _too_big(limits)
    if suffix in (".pkl", ".pickle") or data.startswith(b"\x80"):
        return LineError(0, "pickle files are not accepted; use .csv, .jsonl or .txt")
    if suffix not in FORMATS:
        shown = suffix or "(no extension)"
        return LineError(0, f"unsupported file type {shown!r}; use one of {', '.join(FORMATS)}")
    if data.startswith(_UTF16_32_BOMS):
        return LineError(0, "the file is UTF-16 or UTF-32 encoded; save it as UTF-8")
    data = data.removeprefix(b"\xef\xbb\xbf")
    if not data.strip():
        return LineError(0, "the file is empty")
    if b"\x00" in data:
        return LineError(
            0, "binary file (it contains NUL bytes); knowledge files must be UTF-8 text"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return LineError(
            data.count(b"\n", 0, e.start) + 1,
            f"not valid UTF-8 (byte 0x{data[e.start]:02X}); save the file as UTF-8",
        )
    return unicodedata.normalize("NFC", text)


# A parser yields (line, (question, answer, category)) for each data row, or
# (line, LineError) for a line it cannot read.
_Parsed = Iterator[tuple[int, tuple[str, str, str] | LineError]]


def _lines(text: str) -> Iterator[tuple[int, str]]:
    # Same line splitting as the csv module (\n, \r\n or \r), so line numbers agree across formats.
    for number, line in enumerate(io.StringIO(text, newline=""), start=1):
        yield number, line.rstrip("\r\n")


def _parse_txt(text: str) -> _Parsed:
    for number, line in _lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = _ARROW.split(line, maxsplit=1)
        if len(parts) != 2:
            yield number, LineError(number, "expected 'question -> answer'")
        else:
            yield number, (parts[0], parts[1], "")


def _parse_csv(text: str) -> _Parsed:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    first = True
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield start, LineError(start, f"malformed CSV: {e}")
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        # Spreadsheets pad rows with empty trailing cells, and leave rows of empty cells.
        while len(cells) > 3 and not cells[-1].strip():
            cells.pop()
        if not any(c.strip() for c in cells):
            continue
        if first:
            first = False
            if _is_header(cells):
                continue
        if len(cells) not in (2, 3):
            yield (
                line,
                LineError(line, f"expected 2 or 3 comma-separated columns, found {len(cells)}"),
            )
        else:
            yield line, (cells[0], cells[1], cells[2] if len(cells) == 3 else "")


def _is_header(cells: list[str]) -> bool:
    def name(cell: str) -> str:
        return " ".join(fold(cell.replace("\ufeff", "")).casefold().replace("_", " ").split()).strip(_HEADER_PUNCT)

    return len(cells) in (2, 3) and all(
        name(c) in names for c, names in zip(cells, _HEADER_NAMES, strict=False)
    )


def _parse_jsonl(text: str) -> _Parsed:
    for number, line in _lines(text):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            reason = "too deeply nested" if isinstance(e, RecursionError) else getattr(e, "msg", e)
            yield number, LineError(number, f"invalid JSON: {reason}")
            continue
        rows = _json_rows(obj)
        if isinstance(rows, str):
            yield number, LineError(number, rows)
        else:
            for row in rows:  # a chat line holds one row per user/assistant pair
                yield number, row


def _json_rows(obj: object) -> list[tuple[str, str, str]] | str:
    """The (question, answer, category) rows of one JSONL object, or the reason it has none."""
    if not isinstance(obj, dict):
        return "expected a JSON object"
    category = obj.get("category")
    if category is None:
        category = ""
    if not isinstance(category, str):
        return '"category" must be a string'
    if "messages" in obj:
        pairs = _chat_pairs(obj["messages"])
        return pairs if isinstance(pairs, str) else [(q, a, category) for q, a in pairs]
    for q_key, a_key in (("prompt", "completion"), ("question", "answer")):
        if q_key in obj or a_key in obj:
            q, a = obj.get(q_key), obj.get(a_key)
            if not isinstance(q, str) or not isinstance(a, str):
                return f'"{q_key}" and "{a_key}" must both be strings'
            return [(q, a, category)]
    expected = 'expected "messages", "prompt"/"completion" or "question"/"answer"'
    if not obj:
        return expected
    keys = ", ".join(json.dumps(k, ensure_ascii=False) for k in list(obj)[:6])
    return (f"{expected}; this line has {keys}. Rename them, or name the columns on the command line: "
            "kaizen import FILE --question-column NAME --answer-column NAME")


def _chat_pairs(messages: object) -> list[tuple[str, str]] | str:
    """Every user message with the assistant message right after it; a user message without an
    answer, or an answer without a question, refuses the line rather than being dropped. A
    follow-up question (kaizen.text.is_follow_up: "Còn chủ nhật?") is stored after the question
    before it ("Giờ mở cửa thứ Bảy? Còn chủ nhật?"), its context, so the item means something alone."""
    if not isinstance(messages, list):
        return '"messages" must be a list'
    for m in messages:
        if not (
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
        ):
            return 'every message must be an object with string "role" and "content"'
        if m["role"] not in ("system", "user", "assistant"):
            return f"unsupported message role {m['role']!r}"
    if not any(m["role"] == "user" for m in messages):
        return "no user message"
    pairs: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        after = messages[i + 1]["role"] if i + 1 < len(messages) else None
        before = messages[i - 1]["role"] if i > 0 else None
        if m["role"] == "user" and after != "assistant":
            return f"message {i + 1} (user) has no assistant message right after it"
        if m["role"] == "assistant" and before != "user":
            return f"message {i + 1} (assistant) does not answer a user message"
        if m["role"] == "user":
            question = m["content"]
            if pairs and is_follow_up(question):  # "Còn chủ nhật?" means nothing without the turn before it
                question = f"{pairs[-1][0].strip()} {question.strip()}"
            pairs.append((question, messages[i + 1]["content"]))
    return pairs


def check_row(
    question: str, answer: str, category: str, *, line: int, limits: ImportLimits
) -> KnowledgeRow | LineError:
    """The row, stripped and NFC-normalized, or why it is refused (empty question or answer, a field over
    its length limit, a control or invalid character). ``line`` is the row's number in its source."""
    # NFC again per field: JSON escapes (\uXXXX) are decoded after the file-level normalization.
    question, answer, category = (
        unicodedata.normalize("NFC", s.replace("\r\n", "\n").replace("\r", "\n")).strip()
        for s in (question, answer, category)
    )
    checks = (
        ("question", question, limits.max_question_chars),
        ("answer", answer, limits.max_answer_chars),
        ("category", category, MAX_CATEGORY_CHARS),
    )
    for name, value, limit in checks:
        if not value and name != "category":
            return LineError(line, f"{name} is empty")
        if len(value) > limit:
            return LineError(line, f"{name} is {len(value):,} characters; the limit is {limit:,}")
        if bad := _BAD_CHAR.search(value):
            code = ord(bad.group())
            kind = "an invalid" if 0xD800 <= code <= 0xDFFF else "a control"
            return LineError(line, f"{name} contains {kind} character (U+{code:04X})")
    return KnowledgeRow(question=question, answer=answer, category=category, line=line)
