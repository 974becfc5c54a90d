"""Read question/answer rows from Hugging Face ``datasets`` data, for ``kaizen import``.

Sources (``read_dataset``'s ``source``):

- a directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (for a DatasetDict,
  ``split`` picks the split);
- a ``.parquet``, ``.arrow`` or ``.json`` (an array of objects, or JSON lines) file, and a ``.csv`` or
  ``.jsonl`` file when the caller names columns (``is_dataset_source``); a plain ``.csv``/``.jsonl``/``.txt``
  is ``kaizen.knowledge_files``' business;
- a Hugging Face hub dataset ``owner/name`` (that is not an existing path), streamed. With no network, or
  with the hub switched off (``HF_HUB_OFFLINE=1``, which ``kaizen`` sets unless told otherwise), only a
  copy in the local ``datasets`` cache can be read; otherwise ``HubUnavailableError`` within seconds.

Each row goes through the same checks as a knowledge file's (``knowledge_files.check_row``), and a
question seen before (``kaizen.text.question_key``) is an error. Errors name the 1-based row index in the
dataset (``RowError``: "row 7: answer is empty"). Like ``knowledge_files.validate_import``, any bad row
refuses the whole import unless ``skip_invalid``; problems with the source as a whole (unreadable, a
missing column, an unknown split, more than ``ImportLimits.max_rows`` rows, no rows) always refuse it.
Nothing here unpickles: ``datasets`` reads Arrow, Parquet, JSON and CSV, and its metadata is JSON.
This module never touches the database.
"""

from __future__ import annotations

import csv
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kaizen import errors
from kaizen.knowledge_files import (
    ImportFileError,
    ImportLimits,
    KnowledgeRow,
    LineError,
    ParseResult,
    check_row,
)
from kaizen.text import question_key

# The `datasets` builder that reads each file type. .csv and .jsonl go through datasets only when
# columns are named; .json, .parquet and .arrow always do.
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}
ALWAYS_DATASET_SUFFIXES = (".parquet", ".arrow", ".json")
QUESTION_COLUMNS = ("question", "q", "prompt", "instruction", "input")
ANSWER_COLUMNS = ("answer", "a", "response", "output", "completion")
DEFAULT_SPLIT = "train"
HUB_TIMEOUT_S = 5.0  # how long to wait for the hub to answer before reading the local cache instead
BATCH_ROWS = 1_000  # rows read from the dataset at a time
DEFAULT_LIMITS = ImportLimits()  # the same bounds as a knowledge file's
# A hub repository id: owner/name, letters, digits, '-', '_' and '.' (huggingface_hub's validate_repo_id).
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
# The hub is left alone while another thread reads with the datasets library switched offline.
_OFFLINE_LOCK = threading.Lock()


class RowError(LineError):
    """A bad row of a dataset; ``line`` is the 1-based row index in the dataset (split)."""

    def __str__(self) -> str:
        return f"row {self.line}: {self.reason}" if self.line else self.reason


class DatasetSourceError(errors.InputError):
    """The dataset cannot be read as a whole: not a dataset, unknown split, missing column, ..."""


class HubUnavailableError(DatasetSourceError):
    """A hub dataset was asked for, the hub cannot be reached, and the local cache has no copy."""


class DatasetImportError(ImportFileError):
    """A dataset was refused; ``.errors`` lists every bad row (``RowError``), or the one whole-dataset problem."""

    UNIT = "row"

    def __init__(self, row_errors: Sequence[LineError], *, source: str = "", whole_dataset: bool = False):
        super().__init__(row_errors, source=source, whole_file=whole_dataset)


def is_dataset_source(source: str, *, columns_given: bool) -> bool:
    """Whether ``read_dataset`` (rather than ``knowledge_files.read_knowledge_file``) reads ``source``.

    True for an existing directory, a .parquet/.arrow/.json file (existing or not: reading it reports
    a missing one), a .csv/.jsonl file when ``columns_given`` (the caller names a question, answer or
    category column), and ``owner/name`` when no such path exists and it has no file extension
    (a hub dataset). False for everything else, including .txt and a missing ``facts/faq.csv``.
    """
    path = Path(source)
    suffix = path.suffix.lower()
    if path.is_dir():
        return True
    if suffix in ALWAYS_DATASET_SUFFIXES or (columns_given and suffix in FILE_BUILDERS):
        return True
    return not path.exists() and _looks_like_hub_name(source)


def read_dataset(
    source: str | Path,
    *,
    split: str = DEFAULT_SPLIT,
    question_column: str | None = None,
    answer_column: str | None = None,
    category_column: str | None = None,
    skip_invalid: bool = False,
    limits: ImportLimits = DEFAULT_LIMITS,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    hub_timeout: float = HUB_TIMEOUT_S,
) -> ParseResult:
    """Read and validate the question/answer rows of a dataset (see the module docstring for sources).

    ``split`` picks the split of a DatasetDict directory or of a hub dataset; a single Dataset (a
    directory or a file) has one, and any other name than "train" (or the split it was saved from) is
    refused. Columns default to the first of ``QUESTION_COLUMNS`` / ``ANSWER_COLUMNS`` present (compared
    case-insensitively); there is no category column unless named. ``progress`` shows a tqdm bar on
    stderr (only on a terminal). ``cache_dir`` is the ``datasets`` cache for hub datasets (default: the
    library's, ``~/.cache/huggingface/datasets``), ``hub_timeout`` the seconds to wait for the hub
    to answer before falling back to that cache.

    Returns ``ParseResult``: ``rows`` (``KnowledgeRow`` with ``line`` the 1-based row index) and, with
    ``skip_invalid``, ``errors`` (``RowError``) for the rows left out. Raises ``DatasetImportError`` for bad
    rows (unless ``skip_invalid``) and for too many rows or none, ``DatasetSourceError`` (an
    ``InputError``; ``HubUnavailableError`` for a hub dataset that cannot be reached) when the source
    cannot be read as a whole, ``errors.NotFoundError`` for a missing path.
    """
    source = str(source)
    name = Path(source).name if Path(source).exists() else source
    dataset, total = _open(source, split=split, cache_dir=cache_dir, hub_timeout=hub_timeout)
    if total is not None and total > limits.max_rows:
        raise DatasetImportError([_too_many(limits)], source=name, whole_dataset=True)
    first: dict[str, list[Any]] | None = None
    columns = dataset.column_names  # None for JSON read as a stream: its first batch tells
    if not columns:
        batches = _batches(dataset, source=name)
        first = next(batches, None)
        columns = list(first) if first is not None else []
    q_col, a_col, c_col = _pick_columns(columns, question_column, answer_column, category_column, source=name)
    if first is None:  # read only the columns used (a dataset may carry images, embeddings, ...)
        batches = _batches(dataset.select_columns([c for c in (q_col, a_col, c_col) if c]), source=name)
    result = ParseResult(rows=[], errors=[])
    seen: dict[str, int] = {}
    index = 0
    from tqdm import tqdm

    with tqdm(total=total, unit="row", desc=f"reading {name}", file=sys.stderr,
              disable=None if progress else True) as bar:
        for batch in _chain(first, batches):
            cells = [batch[c] for c in (q_col, a_col)] + ([batch[c_col]] if c_col else [])
            for values in zip(*cells, strict=True):
                index += 1
                if index > limits.max_rows:
                    raise DatasetImportError([_too_many(limits)], source=name, whole_dataset=True)
                row = _row(values, (q_col, a_col, c_col), index=index, limits=limits)
                if isinstance(row, RowError):
                    result.errors.append(row)
                elif (key := question_key(row.question)) in seen:
                    result.errors.append(RowError(index, f"duplicate of row {seen[key]}"))
                else:
                    seen[key] = index
                    result.rows.append(row)
            bar.update(len(cells[0]))
    if not result.rows and not result.errors:
        raise DatasetImportError([_no_rows()], source=name, whole_dataset=True)
    if result.errors and not skip_invalid:
        raise DatasetImportError(result.errors, source=name)
    return result


def _looks_like_hub_name(source: str) -> bool:
    return (
        bool(_HUB_NAME.fullmatch(source))
        and ".." not in source
        and "--" not in source
        and Path(source).suffix.lower() not in (*FILE_BUILDERS, ".txt")
    )


def _no_rows() -> RowError:
    return RowError(0, "the dataset has no rows")


def _too_many(limits: ImportLimits) -> RowError:
    return RowError(0, f"more than {limits.max_rows:,} rows; import a part of it (Dataset.select or .shard, "
                       "then save_to_disk)")


def _open(source: str, *, split: str, cache_dir: str | Path | None, hub_timeout: float) -> tuple[Any, int | None]:
    """The dataset (a ``datasets.Dataset`` or ``IterableDataset``, formatted as Python objects) and its
    number of rows if known."""
    path = Path(source)
    if path.is_dir():
        return _open_saved(path, split)
    if path.exists() or path.suffix.lower() in FILE_BUILDERS or not _looks_like_hub_name(source):
        return _open_file(path, split)
    return _open_hub(source, split=split, cache_dir=cache_dir, hub_timeout=hub_timeout)


def _open_saved(path: Path, split: str) -> tuple[Any, int | None]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise DatasetSourceError(
            f"{path} is not a dataset directory (one written by Dataset.save_to_disk or DatasetDict.save_to_disk, "
            "with dataset_info.json or dataset_dict.json)"
        ) from None
    except IndexError as e:
        # datasets 5.2 saves a dataset with no rows as no data files, and then cannot load it.
        if not any(path.rglob("*.arrow")):
            raise DatasetImportError([_no_rows()], source=path.name, whole_dataset=True) from None
        raise DatasetSourceError(f"cannot read the dataset in {path}: {e!r}") from None
    except (OSError, ValueError) as e:
        raise DatasetSourceError(f"cannot read the dataset in {path}: {e}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DatasetSourceError(
                f"{path.name} has no split {split!r}; its splits are: {', '.join(loaded)} (choose one with --split)"
            )
        dataset = loaded[split]
    else:
        dataset = loaded
        if split not in (DEFAULT_SPLIT, str(dataset.split)):
            raise DatasetSourceError(f"{path.name} is a single dataset with no split {split!r}; leave --split out")
    return dataset.with_format(None), len(dataset)


def _open_file(path: Path, split: str) -> tuple[Any, int | None]:
    import datasets

    if not path.exists():
        raise errors.NotFoundError(f"no such file: {path}")
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        shown = path.suffix or "(no extension)"
        raise DatasetSourceError(
            f"unsupported file type {shown!r} for a dataset; use a save_to_disk directory or one of "
            f"{', '.join(FILE_BUILDERS)}"
        )
    if not path.is_file():
        raise DatasetSourceError(f"{path} is not a regular file")
    if split != DEFAULT_SPLIT:
        raise DatasetSourceError(f"{path.name} is a single file: it has no split {split!r}; leave --split out")
    options: dict[str, Any] = {}
    if builder == "csv":
        # Every CSV cell is text: no guessing of numbers, and "NA" or "null" stay words, not missing cells.
        options = {"features": _csv_text_features(path), "keep_default_na": False}
    try:
        # Streaming reads the file in batches, straight from disk: no copy to the datasets cache.
        dataset = datasets.load_dataset(builder, data_files=str(path), split=DEFAULT_SPLIT, streaming=True,
                                        **options)
    except (OSError, ValueError) as e:
        raise DatasetSourceError(f"cannot read {path.name} as {builder}: {e}") from None
    return dataset.with_format(None), None


def _csv_text_features(path: Path) -> Any:
    import datasets

    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetSourceError(f"cannot read the header row of {path.name}: {e}") from None
    if not header or len(set(header)) != len(header):
        raise DatasetSourceError(f"{path.name}: the first row must name each column once (a header row)")
    return datasets.Features({name: datasets.Value("string") for name in header})


def _open_hub(name: str, *, split: str, cache_dir: str | Path | None, hub_timeout: float) -> tuple[Any, int | None]:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    # The library's own offline switch (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, read when it was imported).
    offline = bool(datasets.config.HF_HUB_OFFLINE)
    off = "the Hugging Face hub is switched off (HF_HUB_OFFLINE=1; set it to 0 to use the network)"
    reason = off if offline else ""
    if not offline and not _hub_answers(name, hub_timeout):
        reason = f"cannot reach the Hugging Face hub ({datasets.config.HF_ENDPOINT}; offline?)"
    try:
        with _datasets_offline(bool(reason)):
            dataset = datasets.load_dataset(name, split=split, streaming=True,
                                            cache_dir=None if cache_dir is None else str(cache_dir))
    except ConnectionError:
        raise HubUnavailableError(
            f"{reason or 'cannot reach the Hugging Face hub'}: cannot load {name!r}, and it is not in the local "
            "cache; download it on a machine with network, save_to_disk, and import the directory"
        ) from None
    except DatasetNotFoundError as e:
        raise errors.NotFoundError(f"{e} (a private or gated dataset needs `hf auth login`)") from None
    except ValueError as e:
        if str(e).startswith("Bad split"):
            raise DatasetSourceError(f"{name}: no split {split!r}; {str(e).partition('. ')[2]}") from None
        raise DatasetSourceError(f"cannot load {name!r}: {e}") from None
    except (OSError, NotImplementedError) as e:
        raise DatasetSourceError(f"cannot load {name!r}: {e}") from None
    # The row count, when the hub's metadata (or the cache's) has it: for the progress bar and max_rows.
    split_info = (dataset.info.splits or {}).get(split)
    total = getattr(split_info, "num_examples", None) or None
    return dataset.with_format(None), total


def _hub_answers(name: str, timeout: float) -> bool:
    """Whether the hub answers a request about ``name`` within ``timeout`` seconds (one try, no retries).
    Any HTTP answer counts, "not found" too: load_dataset then says what is wrong."""
    import datasets
    from huggingface_hub import HfApi
    from huggingface_hub.utils import OfflineModeIsEnabled, httpx

    try:
        HfApi(endpoint=datasets.config.HF_ENDPOINT).dataset_info(name, timeout=timeout)
    except (OfflineModeIsEnabled, httpx.TransportError):
        return False
    except httpx.HTTPError:  # HfHubHTTPError (not found, gated, rate limited, ...) and other answers
        return True
    return True


@contextmanager
def _datasets_offline(offline: bool) -> Iterator[None]:
    """Run the block with the datasets library's offline switch on, if ``offline``.

    When the hub does not answer, load_dataset still tries it first: huggingface_hub's download retries
    with backoff (1+2+4+8+8 s, measured 23 s here) before it falls back to the local cache. With
    ``datasets.config.HF_HUB_OFFLINE`` on it goes to the cache at once (datasets/load.py,
    dataset_module_factory, _raise_if_offline_mode_is_enabled reads that attribute at call time). The
    library has no per-call argument for it, so the module attribute is set for this call only and restored;
    it is process-wide meanwhile, hence the lock. The environment is not touched.
    """
    if not offline:
        yield
        return
    import datasets

    with _OFFLINE_LOCK:
        before = datasets.config.HF_HUB_OFFLINE
        datasets.config.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            datasets.config.HF_HUB_OFFLINE = before


def _batches(dataset: Any, *, source: str) -> Iterator[dict[str, list[Any]]]:
    """The dataset's rows as column batches ({column: [values]}); a read error is the user's file's."""
    import pyarrow as pa  # type: ignore[import-untyped]

    it = iter(dataset.iter(batch_size=BATCH_ROWS))
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (pa.ArrowException, OSError, ValueError) as e:
            raise DatasetSourceError(f"cannot read {source}: {e}") from None
        yield batch


def _chain(first: dict[str, list[Any]] | None, rest: Iterator[dict[str, list[Any]]]) -> Iterator[dict[str, list[Any]]]:
    if first is not None:
        yield first
    yield from rest


def _pick_columns(
    columns: Sequence[str], question: str | None, answer: str | None, category: str | None, *, source: str
) -> tuple[str, str, str | None]:
    """The question, answer and category columns: those named, or the default names present."""
    have = ", ".join(columns) if columns else "(none)"

    def pick(given: str | None, defaults: tuple[str, ...], role: str) -> str:
        if given is not None:
            if given not in columns:
                raise DatasetSourceError(f"{source}: no column {given!r}; the dataset's columns are: {have}")
            return given
        by_name = {c.casefold(): c for c in reversed(columns)}  # the first of equal names wins
        for default in defaults:
            if default in by_name:
                return by_name[default]
        raise DatasetSourceError(
            f"{source}: no {role} column (looked for {', '.join(defaults)}); the dataset's columns are: {have}; "
            f"name it with --{role}-column"
        )

    q_col = pick(question, QUESTION_COLUMNS, "question")
    a_col = pick(answer, ANSWER_COLUMNS, "answer")
    c_col = pick(category, (), "category") if category is not None else None
    if q_col == a_col:
        raise DatasetSourceError(f"{source}: the question and answer columns are both {q_col!r}")
    return q_col, a_col, c_col


def _row(
    values: tuple[Any, ...], columns: tuple[str, str, str | None], *, index: int, limits: ImportLimits
) -> KnowledgeRow | RowError:
    texts: list[str] = []
    for role, column, value in zip(("question", "answer", "category"), columns, values, strict=False):
        if value is None and role == "category":
            value = ""
        if not isinstance(value, str):
            what = "missing (null)" if value is None else f"{_describe(value)}, not text"
            return RowError(index, f"{role} (column {column!r}) is {what}")
        texts.append(value)
    question, answer = texts[0], texts[1]
    category = texts[2] if len(texts) == 3 else ""
    checked = check_row(question, answer, category, line=index, limits=limits)
    return checked if isinstance(checked, KnowledgeRow) else RowError(checked.line, checked.reason)


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"a true/false value ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
