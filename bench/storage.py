"""Benchmark 6, storage: exchange-logging throughput with concurrent writers, and the admin
dashboard's queries at 100,000 stored exchanges.

Both are measured on SQLite and, where a PostgreSQL server can be started here (tests/postgres.py:
a throwaway local cluster on a Unix socket), on PostgreSQL in the same run. Logging writes each
exchange exactly as the chat service does (one `db.write()` transaction per
finished reply, a new conversation each, as an API client without a conversation id), from 1,
4 and 8 threads; the baseline is one writer. The dashboard runs the store queries the admin tab's
dashboard runs (bot/ui_admin.py), plus the review queue, on generated data: first at 10,000
exchanges (the baseline), then at 100,000.

    python -m bench --only storage [--quick]
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import insert

from bench.common import Options, Result, Row, Table, median, ratio
from feedback_db import store
from feedback_db.db import Database
from feedback_db.models import Conversation, Exchange, Feedback, new_id

WRITERS = (1, 4, 8)
EMOTIONS = ("neutral", "positive", "negative")


def _log_one(db: Database, i: int) -> None:
    with db.write() as s:
        store.create_exchange(session=s, conversation_id=None, user_text=f"Question number {i}?",
                              bot_text=f"Answer number {i}, a sentence of ordinary length for a reply.",
                              emotion_label=EMOTIONS[i % 3], emotion_score=0.1, latency_ms=420.0, prompt_tokens=60,
                              completion_tokens=24, client="api")


def logging_rate(db: Database, writers: int, rows: int) -> float:
    """Rows per second when `writers` threads log `rows` exchanges between them."""
    per = rows // writers
    start = threading.Barrier(writers + 1)

    def work(w: int) -> None:
        start.wait()
        for i in range(per):
            _log_one(db, w * per + i)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return per * writers / (time.perf_counter() - t0)


def generate(db: Database, n: int, rng: random.Random, *, start_index: int = 0) -> None:
    """Add n exchanges (5 per conversation, over 90 days); 30% rated, 70% of those up; a tenth of
    the thumbs-down carry a correction, pending, approved or rejected."""
    now = dt.datetime(2026, 11, 1)
    versions = ["base", "v1", "v2", "v3", "v4", "v5"]
    for chunk in range(start_index, start_index + n, 5000):
        convs, exchanges, feedback = [], [], []
        for i in range(chunk, min(chunk + 5000, start_index + n)):
            if i % 5 == 0:
                conv = new_id()
                convs.append({"id": conv, "client": "ui", "created_at": now})
            when = now - dt.timedelta(minutes=rng.randrange(90 * 24 * 60))
            ex = new_id()
            exchanges.append({
                "id": ex, "conversation_id": conv, "user_text": f"Generated question {i}?",
                "bot_text": f"Generated answer {i}.", "emotion_label": rng.choice(EMOTIONS),
                "emotion_score": rng.uniform(-1, 1), "adapter_version": versions[i * len(versions) // 100_000 % 6],
                "source": rng.choice(("model", "model", "model", "memory", "rag")), "memory_item_ids": [],
                "latency_ms": rng.uniform(200, 3000), "prompt_tokens": 60, "completion_tokens": 30,
                "started_at": when, "created_at": when,
            })
            if rng.random() < 0.3:
                up = rng.random() < 0.7
                correction = None if up or rng.random() > 0.1 else f"Corrected answer {i}."
                status = rng.choice(("pending", "approved", "rejected")) if correction else "approved"
                feedback.append({"exchange_id": ex, "rating": "up" if up else "down", "correction": correction,
                                 "status": status, "created_at": when, "updated_at": when})
        with db.write() as s:
            s.execute(insert(Conversation), convs)
            s.execute(insert(Exchange), exchanges)
            if feedback:
                s.execute(insert(Feedback), feedback)


def dashboard_queries(db: Database) -> dict[str, Callable[[], object]]:
    """The admin tab's dashboard queries (one session each) and the review queue."""
    def q(fn: Callable[..., object], **kw: object) -> Callable[[], object]:
        def call() -> object:
            with db.session() as s:
                return fn(session=s, **kw)
        return call

    return {
        "totals (stats)": q(store.totals),
        "rating by day": q(store.rating_by_day),
        "rating by adapter": q(store.rating_by_adapter),
        "emotion counts": q(store.emotion_counts),
        "source counts": q(store.source_counts),
        "25 recent exchanges": q(store.list_exchanges, limit=25),
        "review queue (pending, 200)": q(store.list_feedback, status="pending", limit=200),
    }


def time_queries(db: Database, reps: int) -> dict[str, float]:
    queries = dashboard_queries(db)
    times: dict[str, list[float]] = {name: [] for name in [*queries, "whole dashboard"]}
    for _ in range(reps + 1):  # the first pass warms the page cache
        total = 0.0
        for name, fn in queries.items():
            t0 = time.perf_counter()
            fn()
            dt_ = time.perf_counter() - t0
            times[name].append(dt_)
            total += dt_
        times["whole dashboard"].append(total)
    return {name: median(ts[1:]) for name, ts in times.items()}


def measure(make_db: Callable[[str], str], opts: Options) -> dict[str, object]:
    """Logging rates by writer count, and the dashboard at 10,000 and 100,000 exchanges, on one kind
    of database; `make_db(name)` gives the URL of a new empty database."""
    reps = opts.pick(3, 2)
    rows_per_rep = opts.pick(2000, 600)
    db = Database(make_db("logging"))
    rates: dict[int, list[float]] = {w: [] for w in WRITERS}
    for _ in range(reps):
        for w in WRITERS:
            rates[w].append(logging_rate(db, w, rows_per_rep))
    db.close()
    db = Database(make_db("dashboard"))
    rng = random.Random(0)
    small, big = 10_000, 100_000
    generate(db, small, rng)
    t_small = time_queries(db, opts.pick(5, 3))
    t0 = time.perf_counter()
    generate(db, big - small, rng, start_index=small)
    gen_s = time.perf_counter() - t0
    t_big = time_queries(db, opts.pick(5, 3))
    with db.session() as s:
        counts = store.totals(session=s)
    db.close()
    return {"rate": {w: median(r) for w, r in rates.items()}, "reps": reps, "rows_per_rep": rows_per_rep,
            "small": small, "big": big, "t_small": t_small, "t_big": t_big, "gen_s": gen_s, "counts": counts}


def run(opts: Options) -> Result:
    from tests.postgres import PostgresCluster

    work = opts.fresh_dir("storage")
    kinds: dict[str, dict[str, Any]] = {
        "SQLite": measure(lambda name: f"sqlite:///{work / (name + '.db')}", opts)}
    bin_dir, why = PostgresCluster.find()
    if bin_dir is not None:
        cluster = PostgresCluster(bin_dir)  # a local server on a Unix socket, fsync off (as in the tests)
        try:
            kinds["PostgreSQL"] = measure(lambda _name: cluster.create_database(), opts)
        finally:
            cluster.stop()
    rows: list[Row] = []
    tables: list[Table] = []
    sqlite = kinds["SQLite"]
    top = max(WRITERS)
    for kind, m in kinds.items():
        rate, t_small, t_big, counts = m["rate"], m["t_small"], m["t_big"], m["counts"]
        small, big = m["small"], m["big"]
        tables.append(Table(
            f"Exchange logging on {kind} (one transaction per exchange; {m['rows_per_rep']} rows per measurement, "
            f"median of {m['reps']})", ["writers", "rows/s", "× one writer", "× SQLite"],
            [[w, f"{rate[w]:.0f}", ratio(rate[w], rate[1]), ratio(rate[w], sqlite["rate"][w])] for w in WRITERS]))
        tables.append(Table(
            f"Admin dashboard queries on {kind} (median of {opts.pick(5, 3)}; {counts['exchanges']:,} exchanges, "
            f"{counts['ratings']:,} ratings, {counts['conversations']:,} conversations; generating the last "
            f"{big - small:,} took {m['gen_s']:.1f} s)",
            ["query", f"{small:,} exchanges", f"{big:,} exchanges", "growth", "× SQLite"],
            [[name, f"{1000 * t_small[name]:.1f} ms", f"{1000 * t_big[name]:.1f} ms", ratio(t_big[name], t_small[name]),
              ratio(t_big[name], sqlite["t_big"][name])] for name in t_big]))
        if kind == "SQLite":
            rows.append(Row(f"Exchange logging, {top} concurrent writers", f"{rate[top]:.0f} rows/s",
                            f"{rate[1]:.0f} rows/s, 1 writer", ratio(rate[top], rate[1]),
                            "SQLite takes one writer at a time"))
            rows.append(Row(f"Admin dashboard queries at {big:,} exchanges",
                            f"{1000 * t_big['whole dashboard']:.0f} ms",
                            f"{1000 * t_small['whole dashboard']:.0f} ms at {small:,}",
                            ratio(t_big["whole dashboard"], t_small["whole dashboard"]), "10× the rows"))
        else:
            rows.append(Row(f"Exchange logging on {kind}, {top} concurrent writers", f"{rate[top]:.0f} rows/s",
                            f"{sqlite['rate'][top]:.0f} rows/s on SQLite", ratio(rate[top], sqlite["rate"][top]),
                            f"1 writer: {rate[1]:.0f} rows/s ({ratio(rate[1], sqlite['rate'][1])} SQLite); local "
                            "server, Unix socket, fsync off"))
            rows.append(Row(f"Admin dashboard queries on {kind} at {big:,} exchanges",
                            f"{1000 * t_big['whole dashboard']:.0f} ms",
                            f"{1000 * sqlite['t_big']['whole dashboard']:.0f} ms on SQLite",
                            ratio(t_big["whole dashboard"], sqlite["t_big"]["whole dashboard"]), ""))
    if "PostgreSQL" not in kinds:
        rows.append(Row("PostgreSQL", "skipped", "", "", why))
    return Result("storage", rows, tables)
