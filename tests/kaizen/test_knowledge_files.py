"""Tests for kaizen.knowledge_files: the three formats, every line error, whole-file refusals."""

import csv
import io
import json
import pickle
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaizen import errors
from kaizen.knowledge_files import (
    ImportFileError,
    ImportLimits,
    KnowledgeRow,
    LineError,
    parse_knowledge,
    question_key,
    read_knowledge_file,
    validate_import,
)

DATA = Path(__file__).parent / "data"


def parse(text: str, filename: str, **kwargs):
    return parse_knowledge(text.encode("utf-8"), filename, **kwargs)


def refusal(data: bytes, filename: str, **kwargs) -> ImportFileError:
    with pytest.raises(ImportFileError) as info:
        parse_knowledge(data, filename, **kwargs)
    return info.value


def pairs(result) -> list[tuple[str, str, str, int]]:
    return [(r.question, r.answer, r.category, r.line) for r in result.rows]


# --- the shipped sample files, one per format ---------------------------------------------------


def test_vietnamese_csv_with_header_and_multiline_answer_round_trips():
    result = read_knowledge_file(DATA / "knowledge_vi.csv")
    assert result.errors == []
    assert pairs(result) == [
        ("Giờ mở cửa là mấy giờ?", "Cửa hàng mở cửa từ 8h đến 21h mỗi ngày.", "giờ giấc", 2),
        (
            "Có giao hàng tận nơi không?",
            "Có, giao tận nơi trong nội thành Hà Nội.\nNgoại thành: 2–3 ngày.",
            "giao hàng",
            3,
        ),
        ("Đổi trả thế nào?", "Đổi trả trong 7 ngày, giữ nguyên tem mác.", "", 5),
    ]


def test_jsonl_file_accepts_chat_prompt_completion_and_question_answer():
    result = read_knowledge_file(DATA / "knowledge.jsonl")
    assert result.errors == []
    assert pairs(result) == [
        ("Xin chào", "Chào bạn! Mình giúp gì được?", "", 1),
        ("What is CHOREI?", "CHOREI is our morning meeting.", "company", 3),
        ("Phí ship bao nhiêu?", "Miễn phí cho đơn từ 300.000đ.", "", 4),
    ]


def test_txt_file_accepts_both_arrows_and_skips_comments_and_blank_lines():
    result = read_knowledge_file(DATA / "knowledge.txt")
    assert result.errors == []
    assert pairs(result) == [
        ("Ai là giám đốc?", "Bà Nguyễn Thị Lan.", "", 3),
        ("BICweb là gì", "BICweb là cổng thông tin nội bộ.", "", 4),
    ]


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_without_header_keeps_first_row():
    result = parse("Q1,A1\nQ2,A2,cat\n", "k.csv")
    assert pairs(result) == [("Q1", "A1", "", 1), ("Q2", "A2", "cat", 2)]


@pytest.mark.parametrize(
    "header",
    ["question,answer", "QUESTION, Answer ,Category", "câu hỏi,câu trả lời", "prompt,completion",
     # issue 13: a file whose header is "Q,A" imported the header as a fact; other usual headers too
     "Q,A", "q:,a:", "Câu Hỏi,Trả Lời", "Hỏi,Đáp", "input,output", "question_text,answer_text", "Q,A,Topic",
     "\ufeffQuestion?,Answer", "cau hoi,dap an,danh muc"],
)
def test_csv_header_is_detected_case_insensitively(header):
    result = parse(f"{header}\nQ1,A1\n", "k.csv")
    assert pairs(result) == [("Q1", "A1", "", 2)]


def test_csv_header_only_in_first_row():
    result = parse("Q1,A1\nquestion,answer\n", "k.csv")
    assert [r.question for r in result.rows] == ["Q1", "question"]


def test_csv_quoted_fields_keep_commas_and_newlines_and_line_numbers_stay_right():
    text = 'question,answer\n"A, B?","one\ntwo\r\nthree"\nQ3,"x"\n\nwrong\nQ5,A5\n'
    result = parse(text, "k.csv")
    assert pairs(result) == [
        ("A, B?", "one\ntwo\nthree", "", 2),
        ("Q3", "x", "", 5),
        ("Q5", "A5", "", 8),
    ]
    assert result.errors == [LineError(7, "expected 2 or 3 comma-separated columns, found 1")]


def test_csv_crlf_line_endings():
    result = parse("Q1,A1\r\nQ2,A2\r\nbad\r\n", "k.csv")
    assert pairs(result) == [("Q1", "A1", "", 1), ("Q2", "A2", "", 2)]
    assert [e.line for e in result.errors] == [3]


def test_csv_wrong_number_of_columns():
    result = parse("Q1,A1\nonly one\nQ3,A3,c,extra\nQ4,A4,c,,,\n", "k.csv")
    assert result.errors == [
        LineError(2, "expected 2 or 3 comma-separated columns, found 1"),
        LineError(3, "expected 2 or 3 comma-separated columns, found 4"),
    ]
    # Trailing empty cells (as spreadsheets export them) are not extra columns.
    assert pairs(result)[-1] == ("Q4", "A4", "c", 4)


def test_csv_rows_of_empty_cells_are_skipped():
    result = parse("Q1,A1\n,,\n , \nQ4,A4\n", "k.csv")
    assert pairs(result) == [("Q1", "A1", "", 1), ("Q4", "A4", "", 4)]
    assert result.errors == []


def test_csv_malformed_quoting_is_a_line_error_and_parsing_goes_on():
    result = parse('Q1,A1\n"Q2"oops,A2\nQ3,A3\n', "k.csv")
    assert [e.line for e in result.errors] == [2]
    assert "malformed CSV" in result.errors[0].reason
    assert [r.line for r in result.rows] == [1, 3]


def test_csv_unterminated_quote_is_reported_where_the_row_starts():
    result = parse('Q1,A1\nQ2,"never closed\nQ3,A3\n', "k.csv")
    assert [r.line for r in result.rows] == [1]
    assert [e.line for e in result.errors] == [2]


def test_csv_tab_inside_answer_is_allowed():
    assert parse('Q1,"a\tb"\n', "k.csv").rows[0].answer == "a\tb"


# --- JSONL ---------------------------------------------------------------------------------------


def jsonl(*objects) -> str:
    return "".join(
        (o if isinstance(o, str) else json.dumps(o, ensure_ascii=False)) + "\n" for o in objects
    )


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def test_jsonl_category_and_null_category():
    text = jsonl(
        {"prompt": "P", "completion": "C", "category": "  faq "},
        {"question": "Q", "answer": "A", "category": None},
    )
    assert pairs(parse(text, "k.jsonl")) == [("P", "C", "faq", 1), ("Q", "A", "", 2)]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{broken", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('"text"', "expected a JSON object"),
        ("{}", 'expected "messages", "prompt"/"completion" or "question"/"answer"'),
        ('{"q": "Giờ mở cửa?", "a": "8:00"}', 'expected "messages", "prompt"/"completion" or "question"/"answer"; '
         'this line has "q", "a". Rename them, or name the columns on the command line: kaizen import FILE '
         '--question-column NAME --answer-column NAME'),
        ('{"prompt": "P"}', '"prompt" and "completion" must both be strings'),
        ('{"question": "Q", "answer": 5}', '"question" and "answer" must both be strings'),
        ('{"question": "Q", "answer": "A", "category": 3}', '"category" must be a string'),
        ('{"messages": "hi"}', '"messages" must be a list'),
        (
            '{"messages": [{"role": "user"}]}',
            'every message must be an object with string "role" and "content"',
        ),
        ('{"messages": [{"role": "tool", "content": "x"}]}', "unsupported message role 'tool'"),
        ('{"messages": [{"role": "assistant", "content": "x"}]}', "no user message"),
        (json.dumps(chat(("user", "Q"))), "message 1 (user) has no assistant message right after it"),
        (
            json.dumps(chat(("user", "Q"), ("system", "S"), ("assistant", "A"))),
            "message 1 (user) has no assistant message right after it",
        ),
        # issue 14, kind 6: nothing in a line is dropped without a word
        (json.dumps(chat(("user", "Q1"), ("assistant", "A1"), ("user", "Q2"))),
         "message 3 (user) has no assistant message right after it"),
        (json.dumps(chat(("assistant", "Hi! How can I help?"), ("user", "Q"), ("assistant", "A"))),
         "message 1 (assistant) does not answer a user message"),
        ("[" * 100_000, "invalid JSON: too deeply nested"),
        ('{"n": ' + "9" * 5000 + "}", "invalid JSON: Exceeds the limit"),
        (
            '{"question": "Q\\ud800", "answer": "A"}',
            "question contains an invalid character (U+D800)",
        ),
    ],
)
def test_jsonl_line_errors(line, reason):
    text = jsonl(
        {"prompt": "ok", "completion": "fine"}, "", line, {"prompt": "ok2", "completion": "fine"}
    )
    result = parse(text, "k.jsonl")
    assert [e.line for e in result.errors] == [3]
    assert result.errors[0].reason.startswith(reason)
    assert [r.line for r in result.rows] == [1, 4]


# --- TXT -----------------------------------------------------------------------------------------


def test_txt_splits_on_the_first_arrow_only():
    result = parse("  How do I go back? ->  Press Alt -> Left.  \n", "k.txt")
    assert pairs(result) == [("How do I go back?", "Press Alt -> Left.", "", 1)]


def test_txt_line_without_arrow():
    result = parse("# comment\nQ1 -> A1\njust text\n", "k.txt")
    assert result.errors == [LineError(3, "expected 'question -> answer'")]


# --- checks on every row --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (" -> A", "question is empty"),
        ("Q ->   ", "answer is empty"),
        ("Q\x07 -> A", "question contains a control character (U+0007)"),
        ("Q -> A\x1b[31m", "answer contains a control character (U+001B)"),
        ("Q -> A\x85B", "answer contains a control character (U+0085)"),
        ("Q\x0cR -> A", "question contains a control character (U+000C)"),
    ],
)
def test_row_errors(line, reason):
    assert parse(f"Q0 -> A0\n{line}\n", "k.txt").errors == [LineError(2, reason)]


def test_category_with_control_character():
    assert parse("Q,A,c\x01\n", "k.csv").errors == [
        LineError(1, "category contains a control character (U+0001)")
    ]


def test_character_limits_are_inclusive():
    limits = ImportLimits(max_question_chars=5, max_answer_chars=8)
    text = "12345 -> 12345678\n123456 -> A\nQ -> 123456789\n"
    result = parse(text, "k.txt", limits=limits)
    assert pairs(result) == [("12345", "12345678", "", 1)]
    assert result.errors == [
        LineError(2, "question is 6 characters; the limit is 5"),
        LineError(3, "answer is 9 characters; the limit is 8"),
    ]


def test_duplicates_after_normalization_point_at_the_first_line():
    text = "Giờ mở cửa?,A1\nOther,A2\n  GIỜ   mở cửa ! ,A3\ngiờ mở cửa...,A4\n"
    result = parse(text, "k.csv")
    assert [r.line for r in result.rows] == [1, 2]
    assert result.errors == [
        LineError(3, "duplicate of line 1"),
        LineError(4, "duplicate of line 1"),
    ]


def test_an_invalid_row_does_not_count_as_the_first_of_a_duplicate():
    result = parse("Q ->\nQ -> A\n", "k.txt")
    assert result.errors == [LineError(1, "answer is empty")]
    assert pairs(result) == [("Q", "A", "", 2)]


def test_question_key():
    assert question_key("  Xin   CHÀO?! ") == question_key("xin chào") == "xin chào"


def test_text_is_normalized_to_nfc():
    decomposed = unicodedata.normalize("NFD", "Tiếng Việt -> Được")
    row = parse(decomposed, "k.txt").rows[0]
    assert (row.question, row.answer) == ("Tiếng Việt", "Được")


def test_utf8_bom_is_stripped_and_header_still_detected():
    data = b"\xef\xbb\xbf" + "question,answer\nCâu 1,Đáp án\n".encode()
    assert [(r.question, r.line) for r in parse_knowledge(data, "k.csv").rows] == [("Câu 1", 2)]


def test_extension_is_case_insensitive():
    assert len(parse("Q -> A\n", "NOTES.TXT").rows) == 1


# --- whole-file refusals --------------------------------------------------------------------------


def test_file_over_max_bytes_is_refused_first():
    limits = ImportLimits(max_bytes=2_000_000)
    error = refusal(b"\x80" * 2_000_001, "k.pkl", limits=limits)
    assert error.errors == [LineError(0, "the file is larger than 2 MB; split it")]
    assert "2 MB" in error.message
    assert (
        len(parse_knowledge(b"Q -> A\n".ljust(2_000_000, b" "), "k.txt", limits=limits).rows) == 1
    )


def test_too_many_rows_is_refused_at_the_first_extra_row():
    limits = ImportLimits(max_rows=3)
    assert len(parse("Q1,A1\nQ2,A2\nQ3,A3\n", "k.csv", limits=limits).rows) == 3
    error = refusal(b"question,answer\nQ1,A1\nbad\n\nQ3,A3\nQ4,A4\n", "k.csv", limits=limits)
    assert error.errors == [LineError(6, "more than 3 rows; split the file")]


@pytest.mark.parametrize(
    ("data", "filename", "reason"),
    [
        (b"", "k.csv", "the file is empty"),
        (b" \n\r\n\t", "k.jsonl", "the file is empty"),
        (b"\xef\xbb\xbf\n", "k.txt", "the file is empty"),
        (b"# only a comment\n\n", "k.txt", "the file has no question/answer rows"),
        (b"question,answer\n", "k.csv", "the file has no question/answer rows"),
        (pickle.dumps([("q", "a")]), "k.csv", "pickle files are not accepted"),
        (b"Q -> A\n", "k.pkl", "pickle files are not accepted"),
        (b"Q -> A\n", "k.PICKLE", "pickle files are not accepted"),
        (b"Q -> A\n", "k.json", "unsupported file type '.json'; use one of .csv, .jsonl, .txt"),
        (b"Q -> A\n", "knowledge", "unsupported file type '(no extension)'"),
        (b"Q,A\n\x00\x01\x02", "k.csv", "binary file"),
        (
            "Q -> A\n".encode("utf-16"),
            "k.txt",
            "the file is UTF-16 or UTF-32 encoded; save it as UTF-8",
        ),
        (b"\xfe\xff" + "Q -> A\n".encode("utf-16-be"), "k.txt", "the file is UTF-16 or UTF-32"),
        ("Q -> A\n".encode("utf-32"), "k.txt", "the file is UTF-16 or UTF-32"),
    ],
)
def test_whole_file_refusals(data, filename, reason):
    error = refusal(data, filename)
    assert len(error.errors) == 1 and error.errors[0].line == 0
    assert error.errors[0].reason.startswith(reason)
    assert error.message.startswith(f"{filename}: {reason}")


def test_pickle_is_never_unpickled(tmp_path):
    class Bomb:
        def __reduce__(self):
            return (open, (str(tmp_path / "exploded"), "w"))

    refusal(pickle.dumps(Bomb()), "k.csv")
    refusal(pickle.dumps(Bomb(), protocol=0), "k.pickle")
    assert not (tmp_path / "exploded").exists()


def test_invalid_utf8_names_the_line():
    data = "Q1 -> A1\nQ2 -> Đ\n".encode() + "Q3 -> Sài Gòn\n".encode("cp1252")
    error = refusal(data, "k.txt")
    assert error.errors == [LineError(3, "not valid UTF-8 (byte 0xE0); save the file as UTF-8")]
    assert "line 3" in error.message


# --- validate_import and read_knowledge_file ------------------------------------------------------


def test_validate_import_is_all_or_nothing():
    data = b"Q1,A1\nbad\nQ3,\n"
    with pytest.raises(ImportFileError) as info:
        validate_import(data, "dir/k.csv")
    error = info.value
    assert isinstance(error, errors.InputError) and error.status == 422
    assert error.errors == [
        LineError(2, "expected 2 or 3 comma-separated columns, found 1"),
        LineError(3, "answer is empty"),
    ]
    assert error.message.splitlines()[1:] == [
        "line 2: expected 2 or 3 comma-separated columns, found 1",
        "line 3: answer is empty",
    ]
    assert error.message.startswith("k.csv: 2 invalid line(s); nothing was imported")


def test_validate_import_skip_invalid_returns_good_rows_and_the_errors():
    result = validate_import(b"Q1,A1\nbad\nQ1,A3\nQ4,A4\n", "k.csv", skip_invalid=True)
    assert result.rows == [KnowledgeRow("Q1", "A1", "", 1), KnowledgeRow("Q4", "A4", "", 4)]
    assert [e.line for e in result.errors] == [2, 3]


def test_validate_import_valid_file_passes():
    assert len(validate_import(b"Q1,A1\n", "k.csv").rows) == 1


def test_skip_invalid_does_not_skip_whole_file_errors():
    with pytest.raises(ImportFileError, match="binary file"):
        validate_import(b"Q,A\x00", "k.csv", skip_invalid=True)


def test_error_message_lists_only_the_first_twenty():
    data = "".join(f"bad line {i}\n" for i in range(25)).encode()
    with pytest.raises(ImportFileError) as info:
        validate_import(data, "k.txt")
    lines = info.value.message.splitlines()
    assert len(info.value.errors) == 25
    assert lines[1] == "line 1: expected 'question -> answer'"
    assert lines[20] == "line 20: expected 'question -> answer'"
    assert lines[21:] == ["... and 5 more"]


class RecordingReads:
    """Wraps Path.open so a test can see how much read_knowledge_file asked to read."""

    def __init__(self, monkeypatch):
        self.sizes: list[int] = []
        real_open = Path.open

        def spying_open(path, *args, **kwargs):
            f = real_open(path, *args, **kwargs)
            real_read = f.read

            def read(size=-1):
                self.sizes.append(size)
                return real_read(size)

            monkeypatch.setattr(f, "read", read, raising=False)
            return f

        monkeypatch.setattr(Path, "open", spying_open)


def test_read_knowledge_file_refuses_a_huge_file_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "huge.csv"
    with path.open("wb") as f:
        f.truncate(50_000_000)  # sparse: costs no disk
    reads = RecordingReads(monkeypatch)
    with pytest.raises(ImportFileError, match="larger than 5 MB"):
        read_knowledge_file(path)
    assert reads.sizes == []


def test_read_knowledge_file_reads_at_most_one_byte_past_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "k.txt"
    path.write_bytes(b"Q -> A\n")
    reads = RecordingReads(monkeypatch)
    read_knowledge_file(path, limits=ImportLimits(max_bytes=100))
    assert reads.sizes == [101]


def test_read_knowledge_file_passes_skip_invalid_and_limits(tmp_path):
    path = tmp_path / "k.txt"
    path.write_text("Q1 -> A1\nnope\nQ3 -> a long answer\n", encoding="utf-8")
    with pytest.raises(ImportFileError):
        read_knowledge_file(path)
    result = read_knowledge_file(path, skip_invalid=True, limits=ImportLimits(max_answer_chars=5))
    assert [r.line for r in result.rows] == [1]
    assert [e.line for e in result.errors] == [2, 3]


def test_read_knowledge_file_missing_or_unreadable(tmp_path):
    with pytest.raises(errors.NotFoundError):
        read_knowledge_file(tmp_path / "missing.csv")
    with pytest.raises(errors.InputError, match="cannot read"):
        read_knowledge_file(tmp_path)


# --- properties -----------------------------------------------------------------------------------

EXTENSIONS = st.sampled_from(["k.csv", "k.jsonl", "k.txt", "k.CSV", "k.pkl", "k.bin", "k", "k.exe", "../k.txt"])
SMALL = ImportLimits(max_bytes=2_000, max_rows=20, max_question_chars=40, max_answer_chars=60)


def line_count(data: bytes) -> int:
    return len(io.StringIO(data.decode("utf-8", "replace"), newline="").readlines()) + 1


def check_result_or_refusal(data: bytes, filename: str) -> None:
    """Any input either parses, with every row and error tied to a real line, or is refused as a
    whole with ImportFileError; nothing else is ever raised."""
    lines = line_count(data)
    try:
        result = parse_knowledge(data, filename, limits=SMALL)
    except ImportFileError as e:
        refusal = e
    else:
        refusal = None
    if refusal is not None:
        assert refusal.errors and refusal.message
        assert all(0 <= err.line <= lines for err in refusal.errors)
        return
    keys = [question_key(r.question) for r in result.rows]
    assert len(keys) == len(set(keys))
    for row in result.rows:
        assert row.question and row.question == row.question.strip()
        assert row.answer and row.answer == row.answer.strip()
        assert len(row.question) <= SMALL.max_question_chars
        assert len(row.answer) <= SMALL.max_answer_chars
        assert 1 <= row.line <= lines
        text = row.question + row.answer + row.category
        assert all(c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs") for c in text)
    assert all(1 <= e.line <= lines and e.reason for e in result.errors)
    assert result.rows or result.errors


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3_000), filename=EXTENSIONS)
def test_property_arbitrary_bytes(data, filename):
    check_result_or_refusal(data, filename)


# Text built from the characters the parsers care about, so that rows are actually produced.
TOKENS = list('ab Đ?,"\n\r\t{}[]:#->→\x07\ufeff') + ['"question"', '"answer"', "question,answer"]
STRUCTURED = st.lists(st.sampled_from(TOKENS), max_size=120).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=500), STRUCTURED), filename=EXTENSIONS)
def test_property_arbitrary_text(text, filename):
    check_result_or_refusal(text.encode("utf-8", "surrogatepass"), filename)


def write_file(fmt: str, rows: list[tuple[str, str]]) -> bytes:
    """rows in one of the formats, written the way a tool would write them."""
    if fmt == "csv":
        out = io.StringIO(newline="")
        csv.writer(out).writerows(rows)
        return out.getvalue().encode("utf-8", "surrogatepass")
    if fmt == "jsonl":
        lines = [json.dumps({"prompt": q, "completion": a}) for q, a in rows]
    else:
        lines = [f"{q} -> {a}" for q, a in rows]
    return "\n".join(lines).encode("utf-8", "surrogatepass")


# Any code point, lone surrogates included (JSON can carry them as escapes).
FIELD = st.text(
    st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None), max_size=60
)


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.sampled_from(["csv", "jsonl", "txt"]),
    rows=st.lists(st.tuples(FIELD, FIELD), min_size=1, max_size=25),
)
def test_property_written_files(fmt, rows):
    data = write_file(fmt, rows)
    check_result_or_refusal(data, f"k.{fmt}")
    if fmt == "jsonl" and len(rows) <= SMALL.max_rows and len(data) <= SMALL.max_bytes:
        # JSON keeps every field intact, so each row is either accepted as written or reported.
        result = parse_knowledge(data, "k.jsonl", limits=SMALL)
        assert len(result.rows) + len(result.errors) == len(rows)
        for row in result.rows:
            q, a = (as_imported(s) for s in rows[row.line - 1])
            assert (row.question, row.answer) == (q, a)


def as_imported(field: str) -> str:
    nfc = unicodedata.normalize("NFC", field)
    return nfc.replace("\r\n", "\n").replace("\r", "\n").strip()


def test_a_chat_line_with_several_pairs_imports_every_pair():
    # issue 14, kind 6: two user/assistant pairs on one line imported as one item ("imported 1 item(s)")
    line = chat(("system", "Be kind."), ("user", "Mấy giờ mở cửa?"), ("assistant", "8 giờ sáng."),
                ("user", "Số điện thoại?"), ("assistant", "0243 826 1234."))
    result = parse(jsonl(line), "k.jsonl")
    assert result.errors == []
    assert pairs(result) == [("Mấy giờ mở cửa?", "8 giờ sáng.", "", 1), ("Số điện thoại?", "0243 826 1234.", "", 1)]


def test_a_follow_up_question_is_imported_with_the_question_before_it():
    # issue 14, kind 6: "each with its preceding context where that matters"
    line = chat(("user", "Giờ mở cửa thứ Bảy?"), ("assistant", "8 giờ đến 12 giờ."),
                ("user", "Còn chủ nhật?"), ("assistant", "Chủ nhật nghỉ."),
                ("user", "Số điện thoại?"), ("assistant", "0243 826 1234."),
                ("user", "And on holidays?"), ("assistant", "Closed."))
    result = parse(jsonl(line), "k.jsonl")
    assert result.errors == []
    assert pairs(result) == [
        ("Giờ mở cửa thứ Bảy?", "8 giờ đến 12 giờ.", "", 1),
        ("Giờ mở cửa thứ Bảy? Còn chủ nhật?", "Chủ nhật nghỉ.", "", 1),  # means nothing alone
        ("Số điện thoại?", "0243 826 1234.", "", 1),  # a question of its own
        ("Số điện thoại? And on holidays?", "Closed.", "", 1),
    ]


@pytest.mark.parametrize(("question", "follow_up"), [
    ("Còn chủ nhật?", True), ("Vậy còn giá vé?", True), ("And on Sunday?", True), ("What about Hue?", True),
    ("Chủ nhật?", True), ("Why?", True), ("Số điện thoại?", False), ("Con mèo ăn gì?", False),
    ("Who founded BICweb?", False), ("Andrew là ai vậy?", False), ("Giờ mở cửa thứ Bảy?", False),
])
def test_which_questions_lean_on_the_turn_before(question, follow_up):
    from kaizen.text import is_follow_up

    assert is_follow_up(question) is follow_up
