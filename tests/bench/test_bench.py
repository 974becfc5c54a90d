"""The benchmark harness's own logic (no timings are asserted: the machines are shared and noisy)."""

from __future__ import annotations

import random

import pytest

from bench.__main__ import END, START, parse, render, update_readme
from bench.chat import agreement, batch_scaling, profile_step
from bench.common import Options, Result, Row, Table, markdown_table
from bench.round_scale import VARIANTS, seed_pairs
from bench.storage import dashboard_queries, generate, logging_rate
from feedback_db import store
from feedback_db.db import Database
from trainer.augment import clean_question, variants


def test_only_selects_known_benchmarks_and_refuses_others():
    assert parse(["--only", "chat, storage"]).names == ["chat", "storage"]
    assert "hotswap" in parse([]).names
    with pytest.raises(SystemExit):
        parse(["--only", "chat,nonsense"])


def test_markdown_table_escapes_pipes_and_newlines():
    text = markdown_table(["a", "b"], [["x|y", "line\nbreak"]], title="T")
    assert text.splitlines() == ["**T**", "", "| a | b |", "|---|---|", "| x\\|y | line break |"]


def test_render_has_the_headline_row_and_each_detail_table(tmp_path):
    result = Result("storage", [Row("logging", "10 rows/s", "5 rows/s", "2.00×")], [Table("Detail", ["k"], [["v"]])])
    import datetime as dt

    text = render([result], Options(model_dir="m", out_dir=tmp_path), dt.datetime(2026, 1, 1), "0.0 0.0 0.0", 60)
    assert "| storage | logging | 10 rows/s | 5 rows/s | 2.00× |  |" in text
    assert "## storage" in text and "**Detail**" in text


def test_readme_table_gets_the_new_rows_and_keeps_the_other_benchmarks():
    readme = (f"# Perf\n\nintro\n{START}\n"
              "| bench | what | figure | baseline (same run) | ratio | notes | measured |\n"
              "|---|---|---|---|---|---|---|\n"
              "| storage | logging | 1 rows/s | 1 rows/s | 1.00× | a \\| b | 2026-01-01, load 3.0 |\n"
              "| chat | decode | 2 tok/s | 1 tok/s | 2.00× |  | 2026-01-01, load 3.0 |\n"
              f"{END}\n\nWhat these say.\n")
    new = Result("storage", [Row("logging", "9 rows/s", "3 rows/s", "3.00×"), Row("queries", "5 ms", "1 ms", "5.00×")])
    text = update_readme(readme, [new], "2026-02-02, load 0.5")
    assert text.startswith("# Perf\n\nintro\n") and text.endswith(f"{END}\n\nWhat these say.\n")
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and "bench | what" not in ln]
    assert lines == [  # BENCHMARKS order: chat before storage; the old storage row is gone
        "| chat | decode | 2 tok/s | 1 tok/s | 2.00× |  | 2026-01-01, load 3.0 |",
        "| storage | logging | 9 rows/s | 3 rows/s | 3.00× |  | 2026-02-02, load 0.5 |",
        "| storage | queries | 5 ms | 1 ms | 5.00× |  | 2026-02-02, load 0.5 |",
    ]
    assert update_readme(text, [], "x") == text  # nothing ran: nothing changes
    with pytest.raises(ValueError, match="bench:start"):
        update_readme("# no markers\n", [new], "x")


def test_agreement_counts_exact_answers_and_shared_prefixes():
    exact, prefix = agreement(["Paris.", "abcd", "zzz"], ["Paris.", "abXX", "yyy"])
    assert exact == 1
    assert prefix == pytest.approx((1 + 0.5 + 0) / 3)


def test_the_step_profile_counts_every_linear_layer_as_a_matrix_product(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    prof = profile_step(model, torch.tensor([[1, 2, 3, 4]]), steps=3)
    assert prof.matmuls >= linears  # every projection, the output head included, once per forward
    assert 0 < prof.matmul_share < 1 and prof.ops > prof.matmuls and prof.ms > 0
    assert len(prof.top) == 5 and abs(sum(x for _, x in prof.top)) <= 1
    times = batch_scaling(model, torch.tensor([[1, 2, 3, 4]]), sizes=(1, 3), steps=2)
    assert list(times) == [1, 3] and all(t > 0 for t in times.values())


def test_seed_pairs_give_the_briefs_thousand_rows():
    pairs = seed_pairs(100)
    assert len({q for q, _ in pairs}) == 100
    rows = sum(len(variants(clean_question(q), VARIANTS, seed=i)) for i, (q, _) in enumerate(pairs))
    assert rows == 1000


def test_logging_rate_writes_every_row(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    assert logging_rate(db, 4, 40) > 0
    with db.session() as s:
        assert store.totals(session=s)["exchanges"] == 40


def test_generated_data_feeds_every_dashboard_query(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    generate(db, 500, random.Random(0))
    generate(db, 500, random.Random(1), start_index=500)
    results = {name: fn() for name, fn in dashboard_queries(db).items()}
    totals = results["totals (stats)"]
    assert totals["exchanges"] == 1000 and totals["conversations"] == 200
    assert 0 < totals["ratings"] < 1000
    assert sum(up + down for _, up, down in results["rating by day"]) == totals["ratings"]
    assert sum(results["emotion counts"].values()) == 1000
    assert len(results["25 recent exchanges"]) == 25
