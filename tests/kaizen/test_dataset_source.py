"""Tests for kaizen.dataset_source: Hugging Face `datasets` data (save_to_disk directories, Parquet, JSON,
CSV with named columns, hub names) read as knowledge rows, and `kaizen import` reading a Parquet file."""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import huggingface_hub.constants
import pytest

import launch
from feedback_db import store
from feedback_db.db import Database
from kaizen import errors
from kaizen.dataset_source import (
    DatasetImportError,
    DatasetSourceError,
    HubUnavailableError,
    RowError,
    is_dataset_source,
    read_dataset,
)
from kaizen.knowledge_files import ImportFileError, ImportLimits
from kaizen.settings import Settings

FACTS = {
    "question": ["Giờ mở cửa?", "Địa chỉ ở đâu?", "Có giao hàng không?"],
    "answer": ["8h đến 17h", "12 Lý Thường Kiệt", "Có, trong nội thành"],
}
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


@pytest.fixture(autouse=True)
def quiet_local_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The datasets library's cache (and its lock files) in tmp_path, and its own progress bars off."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    bars_were_off = datasets.utils.logging.is_progress_bar_enabled() is False
    datasets.disable_progress_bars()
    yield
    if not bars_were_off:
        datasets.enable_progress_bars()


def online_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both libraries in online mode (tests/conftest.py switches the hub off), with a hub that refuses connections."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", UNREACHABLE)


def pairs(result: Any) -> list[tuple[str, str, str, int]]:
    return [(r.question, r.answer, r.category, r.line) for r in result.rows]


def parquet(tmp_path: Path, columns: dict[str, list[Any]], name: str = "facts.parquet") -> Path:
    path = tmp_path / name
    datasets.Dataset.from_dict(columns).to_parquet(str(path))
    return path


def jsonl(tmp_path: Path, rows: list[dict[str, Any]], name: str = "facts.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def refused(source: Path | str, **kwargs: Any) -> DatasetImportError:
    with pytest.raises(DatasetImportError) as info:
        read_dataset(source, **kwargs)
    return info.value


# --- sources ---------------------------------------------------------------------------------------------


def test_a_save_to_disk_dataset_directory(tmp_path: Path) -> None:
    datasets.Dataset.from_dict({**FACTS, "source": ["a", "b", "c"]}).save_to_disk(str(tmp_path / "faq"))
    result = read_dataset(tmp_path / "faq")
    assert pairs(result) == [("Giờ mở cửa?", "8h đến 17h", "", 1), ("Địa chỉ ở đâu?", "12 Lý Thường Kiệt", "", 2),
                             ("Có giao hàng không?", "Có, trong nội thành", "", 3)]
    assert result.errors == []


def test_a_dataset_dict_directory_reads_the_split_asked_for(tmp_path: Path) -> None:
    train = datasets.Dataset.from_dict(FACTS)
    test = datasets.Dataset.from_dict({"question": ["Số điện thoại?"], "answer": ["0901 234 567"]})
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "faq"))
    assert [r.question for r in read_dataset(tmp_path / "faq").rows] == FACTS["question"]  # train by default
    assert pairs(read_dataset(tmp_path / "faq", split="test")) == [("Số điện thoại?", "0901 234 567", "", 1)]
    with pytest.raises(DatasetSourceError) as info:
        read_dataset(tmp_path / "faq", split="validation")
    assert "no split 'validation'" in info.value.message and "its splits are: train, test" in info.value.message


def test_a_directory_that_is_not_a_saved_dataset_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(DatasetSourceError, match="not a dataset directory"):
        read_dataset(tmp_path / "notes")


def test_a_parquet_file(tmp_path: Path) -> None:
    path = parquet(tmp_path, {**FACTS, "category": ["giờ", None, "giao hàng"]})
    result = read_dataset(path, category_column="category")
    assert pairs(result) == [("Giờ mở cửa?", "8h đến 17h", "giờ", 1), ("Địa chỉ ở đâu?", "12 Lý Thường Kiệt", "", 2),
                             ("Có giao hàng không?", "Có, trong nội thành", "giao hàng", 3)]


def test_a_json_array_file_with_named_columns(tmp_path: Path) -> None:
    path = tmp_path / "faq.json"
    rows = [{"hoi": q, "dap": a, "nhom": "chung", "question": "not this one"} for q, a in zip(*FACTS.values(),
                                                                                            strict=True)]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    result = read_dataset(path, question_column="hoi", answer_column="dap", category_column="nhom")
    assert pairs(result)[0] == ("Giờ mở cửa?", "8h đến 17h", "chung", 1)
    assert [r.question for r in result.rows] == FACTS["question"]


def test_a_csv_read_as_a_dataset_keeps_every_cell_as_text(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text("Cau hoi,Tra loi,Loai\nMã bưu chính?,700000,NA\nCó mở chủ nhật?,null,\n", encoding="utf-8")
    result = read_dataset(path, question_column="Cau hoi", answer_column="Tra loi", category_column="Loai")
    assert pairs(result) == [("Mã bưu chính?", "700000", "NA", 1), ("Có mở chủ nhật?", "null", "", 2)]


def test_a_single_file_has_no_other_split(tmp_path: Path) -> None:
    with pytest.raises(DatasetSourceError, match="has no split 'test'"):
        read_dataset(parquet(tmp_path, FACTS), split="test")


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(errors.NotFoundError, match="no such file"):
        read_dataset(tmp_path / "missing.parquet")
    with pytest.raises(errors.NotFoundError, match="no such file"):
        read_dataset(tmp_path / "missing")  # not a hub name either


@pytest.mark.parametrize(
    ("source", "columns_given", "expected"),
    [
        ("facts.parquet", False, True),
        ("facts.arrow", False, True),
        ("facts.json", False, True),
        ("facts.csv", False, False),
        ("facts.jsonl", False, False),
        ("facts.csv", True, True),
        ("facts.jsonl", True, True),
        ("facts.txt", True, False),
        ("owner/name", False, True),
        ("owner/name.v2", False, True),
        ("data/faq.csv", False, False),  # a missing knowledge file, not a hub dataset
        ("../owner/name", False, False),
        ("name-without-owner", False, False),
    ],
)
def test_which_sources_are_datasets(source: str, columns_given: bool, expected: bool, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert is_dataset_source(source, columns_given=columns_given) is expected


def test_an_existing_directory_is_a_dataset_source_and_an_existing_path_is_never_a_hub_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "name").write_text("question -> answer\n")
    assert is_dataset_source("owner", columns_given=False) is True
    assert is_dataset_source("owner/name", columns_given=False) is False  # a file named like a hub dataset


# --- columns ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "answer"),
    [("question", "answer"), ("q", "a"), ("prompt", "completion"), ("instruction", "output"),
     ("input", "response"), ("Question", "Answer")],
)
def test_default_columns_are_found(tmp_path: Path, question: str, answer: str) -> None:
    path = parquet(tmp_path, {"id": [1, 2], "extra": ["x", "y"], question: ["Q1?", "Q2?"], answer: ["A1", "A2"]})
    assert pairs(read_dataset(path)) == [("Q1?", "A1", "", 1), ("Q2?", "A2", "", 2)]


def test_the_first_default_name_wins(tmp_path: Path) -> None:
    path = parquet(tmp_path, {"input": ["context"], "question": ["Q?"], "output": ["not this"], "answer": ["A"]})
    assert pairs(read_dataset(path)) == [("Q?", "A", "", 1)]


def test_a_missing_column_names_the_columns_the_dataset_has(tmp_path: Path) -> None:
    path = parquet(tmp_path, {"text": ["Q?"], "label": ["A"]})
    with pytest.raises(DatasetSourceError) as info:
        read_dataset(path)
    assert "no question column" in info.value.message and "the dataset's columns are: text, label" in info.value.message
    assert "--question-column" in info.value.message
    with pytest.raises(DatasetSourceError) as info:
        read_dataset(path, question_column="text", answer_column="reply")
    assert "no column 'reply'" in info.value.message and "text, label" in info.value.message
    with pytest.raises(DatasetSourceError, match="no column 'topic'"):
        read_dataset(path, question_column="text", answer_column="label", category_column="topic")


# --- rows ------------------------------------------------------------------------------------------------


def bad_rows_file(tmp_path: Path) -> Path:
    return jsonl(tmp_path, [
        {"question": "Giờ mở cửa?", "answer": "8h đến 17h"},
        {"question": "Địa chỉ?", "answer": "   "},
        {"question": None, "answer": "Không có câu hỏi"},
        {"question": "Mã bưu chính?", "answer": 700000},
        {"question": "Danh sách?", "answer": ["a", "b"]},
        {"question": "Có giao hàng không?", "answer": "Có", "category": 5},
        {"question": "Số điện thoại?", "answer": "0901 234 567"},
    ])


def test_bad_rows_refuse_the_whole_import_with_their_row_numbers(tmp_path: Path) -> None:
    error = refused(bad_rows_file(tmp_path), question_column="question", category_column="category")
    assert isinstance(error, ImportFileError) and isinstance(error, errors.InputError)
    assert [str(e) for e in error.errors] == [
        "row 2: answer is empty",
        "row 3: question (column 'question') is missing (null)",
        "row 4: answer (column 'answer') is a number (700000), not text",
        "row 5: answer (column 'answer') is a list, not text",
        "row 6: category (column 'category') is a number (5), not text",
    ]
    assert error.message.startswith("facts.jsonl: 5 invalid row(s); nothing was imported")


def test_skip_invalid_keeps_the_bad_rows_out_and_lists_them(tmp_path: Path) -> None:
    result = read_dataset(bad_rows_file(tmp_path), question_column="question", category_column="category",
                          skip_invalid=True)
    assert pairs(result) == [("Giờ mở cửa?", "8h đến 17h", "", 1), ("Số điện thoại?", "0901 234 567", "", 7)]
    assert [e.line for e in result.errors] == [2, 3, 4, 5, 6]
    assert all(isinstance(e, RowError) for e in result.errors)


def test_rows_get_the_same_checks_as_a_knowledge_file(tmp_path: Path) -> None:
    path = parquet(tmp_path, {"question": ["Q1?", "Q\x07?", "Q3?"], "answer": ["A" * 11, "A", " e\u0301 "]})
    result = read_dataset(path, skip_invalid=True, limits=ImportLimits(max_answer_chars=10))
    assert [str(e) for e in result.errors] == ["row 1: answer is 11 characters; the limit is 10",
                                               "row 2: question contains a control character (U+0007)"]
    assert pairs(result) == [("Q3?", "\u00e9", "", 3)]  # stripped and NFC, like a file's rows


def test_a_repeated_question_is_a_duplicate(tmp_path: Path) -> None:
    path = parquet(tmp_path, {"question": ["Giờ mở cửa?", "Địa chỉ?", "giờ mở cửa"],
                              "answer": ["8h", "12 Lý Thường Kiệt", "9h"]})
    assert [str(e) for e in refused(path).errors] == ["row 3: duplicate of row 1"]
    assert [r.answer for r in read_dataset(path, skip_invalid=True).rows] == ["8h", "12 Lý Thường Kiệt"]


def test_more_rows_than_the_limit_refuse_the_dataset(tmp_path: Path) -> None:
    limits = ImportLimits(max_rows=2)
    datasets.Dataset.from_dict(FACTS).save_to_disk(str(tmp_path / "faq"))  # its length is known up front
    error = refused(tmp_path / "faq", limits=limits, skip_invalid=True)
    assert error.message == "faq: more than 2 rows; import a part of it (Dataset.select or .shard, then save_to_disk)"
    streamed = jsonl(tmp_path, [{"q": q, "a": a} for q, a in zip(*FACTS.values(), strict=True)])
    assert "more than 2 rows" in refused(streamed, question_column="q", limits=limits, skip_invalid=True).message
    assert len(read_dataset(streamed, question_column="q", limits=ImportLimits(max_rows=3)).rows) == 3


def test_an_empty_dataset_is_refused(tmp_path: Path) -> None:
    text = datasets.Value("string")
    empty = datasets.Dataset.from_dict({"question": [], "answer": []},
                                       features=datasets.Features({"question": text, "answer": text}))
    empty.save_to_disk(str(tmp_path / "empty"))
    assert refused(tmp_path / "empty").message == "empty: the dataset has no rows"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_shown_on_a_terminal_and_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets.Dataset.from_dict(FACTS).save_to_disk(str(tmp_path / "faq"))
    shown, quiet = Terminal(), Terminal()
    monkeypatch.setattr(sys, "stderr", shown)
    read_dataset(tmp_path / "faq")
    assert "reading faq: 100%" in shown.getvalue() and "3/3" in shown.getvalue()
    monkeypatch.setattr(sys, "stderr", quiet)
    read_dataset(tmp_path / "faq", progress=False)
    assert quiet.getvalue() == ""


# --- the hub, offline ------------------------------------------------------------------------------------


def test_a_hub_dataset_with_the_hub_switched_off_is_refused_at_once(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(HubUnavailableError) as info:
        read_dataset("nobody/no-such-faq", cache_dir=tmp_path / "cache")
    assert time.monotonic() - start < 5
    message = info.value.message
    assert "HF_HUB_OFFLINE=1" in message and "'nobody/no-such-faq'" in message
    assert "not in the local cache" in message and "save_to_disk, and import the directory" in message


def test_a_hub_dataset_with_no_network_is_refused_within_seconds(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Online mode, but the hub does not answer: load_dataset alone would retry for about 23 s.
    online_without_network(monkeypatch)
    start = time.monotonic()
    with pytest.raises(HubUnavailableError) as info:
        read_dataset("nobody/no-such-faq", cache_dir=tmp_path / "cache", hub_timeout=2)
    assert time.monotonic() - start < 8
    assert info.value.message.startswith(f"cannot reach the Hugging Face hub ({UNREACHABLE}; offline?)")
    assert "not in the local cache" in info.value.message
    assert datasets.config.HF_HUB_OFFLINE is False  # the library's switch is put back


def cache_as_hub_dataset(tmp_path: Path, repo_id: str, columns: dict[str, list[Any]]) -> Path:
    """A datasets cache holding `repo_id` as load_dataset(repo_id) leaves it after a download."""
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / "download"))
    shards = glob.glob(str(tmp_path / "download" / "*.arrow"))
    builder = datasets.load_dataset_builder("arrow", data_files={"train": shards}, cache_dir=str(tmp_path / "build"))
    builder.download_and_prepare()
    owner, name = repo_id.split("/")
    cached = tmp_path / "cache" / f"{owner}___{name}" / "default" / "0.0.0" / Path(builder.cache_dir).name
    shutil.copytree(builder.cache_dir, cached)
    (cached / "arrow-train.arrow").rename(cached / f"{name}-train.arrow")
    info = json.loads((cached / "dataset_info.json").read_text())
    (cached / "dataset_info.json").write_text(json.dumps({**info, "config_name": "default"}))
    return tmp_path / "cache"


def test_a_hub_dataset_in_the_local_cache_is_read_with_no_network(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cache = cache_as_hub_dataset(tmp_path, "shop/faq", FACTS)
    online_without_network(monkeypatch)
    start = time.monotonic()
    result = read_dataset("shop/faq", cache_dir=cache, hub_timeout=2)
    assert time.monotonic() - start < 10
    assert [r.question for r in result.rows] == FACTS["question"]
    with pytest.raises(DatasetSourceError, match="no split 'test'; Available splits: \\['train'\\]"):
        read_dataset("shop/faq", split="test", cache_dir=cache, hub_timeout=2)


# --- kaizen import ---------------------------------------------------------------------------------------


def kaizen_import(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    main_sets = {"HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}
    for key, default in main_sets.items():
        monkeypatch.setenv(key, os.environ.get(key, default))  # launch.main sets these; undo it after the test
    db_url = ["--db-url", settings.db_url] if settings.db_url else []
    return launch.main(["import", *args, "--data-dir", str(settings.data_dir), *db_url])


def test_kaizen_import_reads_a_parquet_file_into_the_database(settings: Settings, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = parquet(tmp_path, {"prompt": [*FACTS["question"], "Trống?"], "response": [*FACTS["answer"], ""],
                              "topic": ["giờ", "địa chỉ", "giao hàng", "x"]})
    assert kaizen_import(settings, monkeypatch, str(path), "--category-column", "topic") == 2
    assert "row 4: answer is empty" in capsys.readouterr().err
    assert kaizen_import(settings, monkeypatch, str(path), "--category-column", "topic", "--skip-invalid") == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"imported 3 item(s) from {path}; 0 already known"
    assert "skipped row 4: answer is empty" in err
    db = Database(settings.database_url)
    try:
        with db.session() as s:
            items = store.list_knowledge(session=s)
            assert [(i.question, i.answer, i.category) for i in items] == [
                ("Giờ mở cửa?", "8h đến 17h", "giờ"), ("Địa chỉ ở đâu?", "12 Lý Thường Kiệt", "địa chỉ"),
                ("Có giao hàng không?", "Có, trong nội thành", "giao hàng")]
    finally:
        db.close()
    assert kaizen_import(settings, monkeypatch, str(path), "--category-column", "topic", "--skip-invalid") == 0
    assert capsys.readouterr().out.strip() == f"imported 0 item(s) from {path}; 3 already known"


def test_kaizen_import_refuses_column_options_for_a_text_file(settings: Settings, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "facts.txt"
    path.write_text("Giờ mở cửa? -> 8h đến 17h\n", encoding="utf-8")
    assert kaizen_import(settings, monkeypatch, str(path), "--question-column", "q") == 2
    assert "apply to datasets" in capsys.readouterr().err
    assert kaizen_import(settings, monkeypatch, str(path)) == 0  # the knowledge file reader, as before
    assert capsys.readouterr().out.strip() == f"imported 1 item(s) from {path}; 0 already known"
