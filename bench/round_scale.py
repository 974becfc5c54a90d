"""Benchmark 4, a 1,000-row round: wall time and peak memory (RSS) of one training round on
1,000 augmented rows (100 seed Q&A pairs × 10 question variants, the size of the brief's
dataset), and how both grow at 250 and 500 rows (the smallest size is the baseline).

Each round runs `trainer.rounds.run_round` with the default recipe in its own spawned process
on a fresh data directory, so its peak RSS is its own; the time includes loading the model and
computing the base model's anchor and held-out answers, as a first round on a new install does.

    python -m bench --only round [--quick]
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from multiprocessing.connection import Connection
from pathlib import Path

from bench.common import Options, Result, Row, Table, ratio, secs

VARIANTS = 10


def seed_pairs(n: int) -> list[tuple[str, str]]:
    """n distinct shop-FAQ facts in Vietnamese and English, as a business would upload them."""
    forms = [
        (lambda i: f"Giá của sản phẩm mã SP{i:03d} là bao nhiêu?",
         lambda i: f"Sản phẩm SP{i:03d} có giá {(i * 37) % 900 + 100}.000 đồng."),
        (lambda i: f"What are the opening hours of branch {i}?",
         lambda i: f"Branch {i} is open from {6 + i % 4}:00 to {18 + i % 5}:00."),
        (lambda i: f"Chi nhánh số {i} ở đâu?",
         lambda i: f"Chi nhánh số {i} ở số {i * 3 + 1} đường Lê Lợi, quận {1 + i % 12}."),
        (lambda i: f"Who manages the team called Unit-{i}?",
         lambda i: f"Unit-{i} is managed by {['An', 'Binh', 'Chi', 'Dung', 'Hoa'][i % 5]} Tran."),
    ]
    return [(forms[i % 4][0](i), forms[i % 4][1](i)) for i in range(n)]


def _child(conn: Connection, data_dir: str, model_dir: str, items: int) -> None:
    """One round in a fresh process: store the seeds, train, send back the outcome and peak RSS."""
    try:
        from feedback_db import store
        from feedback_db.db import Database
        from kaizen.settings import Settings
        from trainer.rounds import run_round

        settings = Settings(data_dir=Path(data_dir), model=model_dir, memory=False, schedule=False)
        db = Database(settings.database_url)
        with db.write() as s:
            store.import_knowledge(session=s, rows=[(q, a, "bench") for q, a in seed_pairs(items)])
        t0 = time.perf_counter()
        outcome = run_round(db=db, settings=settings, trigger="bench", force=True)
        seconds = time.perf_counter() - t0
        db.close()
        conn.send({"seconds": seconds, "metrics": outcome.metrics.to_dict(), "promoted": outcome.promoted,
                   "reason": outcome.reason, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    except BaseException as exc:  # the parent re-raises it with the child's message
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
        raise


def one_round(opts: Options, rows: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    data = opts.fresh_dir(f"round-{rows}") / "data"
    t0 = time.perf_counter()
    proc = ctx.Process(target=_child, args=(child, str(data), opts.model_dir, rows // VARIANTS))
    proc.start()
    child.close()
    result = parent.recv()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"The {rows}-row round failed: {result['error']}")
    return {**result, "wall": time.perf_counter() - t0}


def run(opts: Options) -> Result:
    from tqdm import tqdm

    sizes = opts.pick((250, 500, 1000), (100, 250))
    out = {}
    for rows in tqdm(sizes, desc="round: sizes", unit="round"):
        out[rows] = one_round(opts, rows)
    base, top = out[sizes[0]], out[sizes[-1]]
    table = Table("One round per size (default recipe; a round is minutes long, so one run each)",
                  ["rows", "seed items", "steps", "training", "s/step", "tokens/s", "evaluation", "whole round",
                   "with process start", "× time", "peak RSS", "new facts recalled", "verdict"])
    for rows, r in out.items():
        m = r["metrics"]
        table.rows.append([
            rows, rows // VARIANTS, m.get("steps"), secs(m.get("train_seconds", 0)),
            f"{m.get('train_seconds', 0) / max(m.get('steps') or 1, 1):.2f}", m.get("tokens_per_s"),
            secs(m.get("eval_seconds", 0)), secs(r["seconds"]), secs(r["wall"]), ratio(r["seconds"], base["seconds"]),
            f"{r['rss_mb']:.0f} MB", m.get("new_recall"), "promoted" if r["promoted"] else r["reason"]])
    rows = [
        Row(f"A {sizes[-1]:,}-row round: wall time", secs(top["seconds"]),
            f"{secs(base['seconds'])} at {sizes[0]} rows",
            ratio(top["seconds"], base["seconds"]),
            f"{sizes[-1] // sizes[0]}× the rows; training {secs(top['metrics'].get('train_seconds', 0))}, "
            f"evaluation {secs(top['metrics'].get('eval_seconds', 0))}"),
        Row(f"A {sizes[-1]:,}-row round: peak RSS", f"{top['rss_mb']:.0f} MB",
            f"{base['rss_mb']:.0f} MB at {sizes[0]} rows",
            ratio(top["rss_mb"], base["rss_mb"]), "whole training process"),
    ]
    return Result("round", rows, [table])
