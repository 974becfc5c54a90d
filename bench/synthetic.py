"""Benchmark: what synthetic paraphrases add to generality (bot/synthetic.py).

The same N facts of a made-up travel agency (bench/data/simulate_sheet.json, alternately in
Vietnamese and English; 8, or 4 with --quick) are taught as approved knowledge into two fresh data
directories, A and B. In B only, the serving model (the embedded SmolLM2-135M-Instruct, greedy, as
the admin tab's "Write paraphrases" runs it) writes 5 paraphrases of each taught question through
`Paraphraser`, and the real retrieval memory keeps a line only if it maps back to that item alone;
kept lines are split "train" (trained beside the template variants) and "check" (never trained).
B's "check" rows are copied into A as well (a check row is never trained, trainer/dataset.py
`_synthetic`), so both rounds are measured on exactly the same model-written phrasings. Then one
real round runs in each directory (`run_round`, the default TrainConfig, same seed, routing by
scope as served) and the rounds' figures are compared:

- generality on the held-out template phrasings (`paraphrase_recall`, never trained in either),
- generality on the model-written "check" phrasings (`synthetic_recall`, never trained in either),
- reliability (`new_recall`), locality as served, steps and the round's wall time (the cost).

The baseline of each headline figure is round A, trained in the same run without synthetic rows.

    python -m bench --only synthetic [--quick]
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Options, Result, Row, Table, ratio, secs
from bot.fallback import language
from bot.memory import Memory
from feedback_db import store
from feedback_db.db import Database
from kaizen.settings import Settings, TrainConfig
from kaizen.text import question_lines

SHEET = Path(__file__).parent / "data" / "simulate_sheet.json"
PER_ITEM = 5
LANGUAGES = ("vi", "en")


def load_facts(n: int, path: Path = SHEET) -> list[tuple[str, str]]:
    """The sheet's first `n` facts as (question, answer), alternately Vietnamese and English: each
    fact in one language only, so no two items are translations of each other."""
    facts = json.loads(path.read_text(encoding="utf-8"))["facts"]
    if n > len(facts):
        raise ValueError(f"The sheet has {len(facts)} facts, not {n}.")
    out = []
    for i, f in enumerate(facts[:n]):
        lang = LANGUAGES[i % len(LANGUAGES)]
        out.append((f["ask"][lang][0], f["answer"][lang].format(k=f["key"])))
    return out


def considered_lines(outputs: list[str], per_item: int) -> tuple[int, int]:
    """(question lines the filter judged, question lines beyond `per_item` it ignored) in the model's
    outputs: `Paraphraser.write` judges the first `per_item` question lines of each output."""
    lines = [len(question_lines(text)) for text in outputs]
    judged = sum(min(n, per_item) for n in lines)
    return judged, sum(lines) - judged


@dataclass
class Written:
    """What writing the synthetic paraphrases in B did."""

    items: int = 0
    asked: int = 0  # lines asked for: items x per_item
    judged: int = 0  # question lines the filter judged
    ignored: int = 0  # question lines beyond per_item
    kept: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # taught question -> [(line, use)]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> lines
    outputs: dict[str, str] = field(default_factory=dict)  # taught question -> the model's text
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.kept.values())

    def uses(self, use: str) -> int:
        return sum(u == use for lines in self.kept.values() for _, u in lines)


def teach(data: Path, facts: list[tuple[str, str]]) -> Database:
    """A fresh database in `data` with `facts` taught as approved knowledge (as `kaizen teach` stores them)."""
    db = Database(Settings(data_dir=data).database_url)
    with db.write() as s:
        for question, answer in facts:
            store.add_knowledge(session=s, question=question, answer=answer, origin="teach", verbatim=True)
    return db


def write_paraphrases(data: Path, model_dir: str, memory: Memory, per_item: int) -> Written:
    """The serving side (real engine, real memory) in `data` writes and filters paraphrases of every
    taught item, as `AdminService.write_paraphrases` does with the serving model."""
    from bot.admin_service import PARAPHRASE_TOKENS
    from bot.engine_api import GenParams
    from bot.services import build_services
    from bot.synthetic import Paraphraser

    kz = build_services(Settings(data_dir=data, model=model_dir, memory=True), memory=memory)
    try:
        assert kz.recall is not None  # memory=True
        with kz.db.session() as s:
            items = store.list_knowledge(session=s, enabled_only=True)
            for item in items:
                s.expunge(item)
        outputs: list[str] = []

        def generate(messages: list[dict[str, str]]) -> str:
            text = kz.engine.generate(messages, GenParams(max_new_tokens=PARAPHRASE_TOKENS))
            outputs.append(text)
            return text

        t0 = time.perf_counter()
        report = Paraphraser(kz.db, generate=generate, memory=kz.recall).write(items, per_item=per_item)
        seconds = time.perf_counter() - t0
        with kz.db.session() as s:
            stored = store.list_paraphrases(session=s)
            use = {(p.item_id, p.question): p.use for p in stored}
        judged, ignored = considered_lines(outputs, per_item)
        by_id = {i.id: i.question for i in items}
        return Written(items=len(items), asked=len(items) * per_item, judged=judged, ignored=ignored,
                       kept={by_id[i]: [(q, use[(i, q)]) for q in lines] for i, lines in report.kept.items()},
                       dropped=dict(report.dropped), seconds=seconds,
                       outputs={i.question: text for i, text in zip(items, outputs, strict=True)})
    finally:
        kz.close()


def copy_checks(source: Database, target: Database) -> int:
    """Copy `source`'s "check" paraphrases to the items of `target` with the same question; returns how many."""
    with source.session() as s:
        questions = {i.id: i.question for i in store.list_knowledge(session=s)}
        checks = [(questions[p.item_id], p.question) for p in store.list_paraphrases(session=s) if p.use == "check"]
    with target.write() as s:
        ids = {i.question: i.id for i in store.list_knowledge(session=s)}
        for question, line in checks:
            store.add_paraphrase(session=s, item_id=ids[question], question=line, use="check")
    return len(checks)


def evaluated(db: Database, cfg: TrainConfig) -> dict[str, int]:
    """What a round on `db` trains and checks: rows, synthetic rows, held-out and synthetic check phrasings."""
    from kaizen.prompts import load_persona
    from trainer.dataset import build_training_set

    training = build_training_set(db=db, persona=load_persona(db), seed=cfg.seed, max_new_facts=cfg.max_new_facts,
                                  replay_facts=cfg.replay_facts, replay_ratings=cfg.replay_ratings,
                                  replay_variants=cfg.replay_variants, preference=cfg.preference)
    return {"sft_rows": training.counts["sft_rows"], "synthetic_rows": training.counts["synthetic_rows"],
            "heldout": len(training.paraphrases(training.facts)),
            "checks": len(training.synthetic_paraphrases(training.facts))}


def one_round(data: Path, db: Database, model_dir: str, memory: Memory, cfg: TrainConfig) -> dict[str, Any]:
    """One real round (force) on `db`, measured as served (routing by scope over the same memory)."""
    from bot.recall import KnowledgeRecall
    from trainer.rounds import run_round

    counts = evaluated(db, cfg)
    settings = Settings(data_dir=data, model=model_dir, memory=True, schedule=False)
    threads = int(os.environ.get("KAIZEN_TRAIN_THREADS") or 0)  # 0: torch's default, as `kaizen teach`
    t0 = time.perf_counter()
    outcome = run_round(db=db, settings=settings, cfg=cfg, trigger="bench", force=True, threads=threads,
                        scope=KnowledgeRecall(db=db, memory=memory))
    wall = time.perf_counter() - t0
    gc.collect()
    return {"metrics": outcome.metrics.to_dict(), "promoted": outcome.promoted, "reason": outcome.reason,
            "version": outcome.version, "wall": wall, **counts}


# --- rows and tables (pure) ----------------------------------------------------------------------


def fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def of(x: float | None, n: int) -> str:
    """A recall as "k of n (0.xx)"."""
    return "–" if x is None or not n else f"{round(x * n)} of {n} ({x:.2f})"


def compare(b: float | None, a: float | None) -> str:
    """In words, B against A (higher is better)."""
    if a is None or b is None:
        return "not measured"
    if abs(b - a) < 1e-9:
        return "no better: the same as without"
    return "better with synthetic paraphrases" if b > a else "WORSE with synthetic paraphrases"


def relative(b: float | None, a: float | None) -> str:
    if a is None or b is None:
        return "–"
    return ratio(b, a) if a else (f"{b - a:+.2f}" if b != a else "1.00×")


def headline(a: dict[str, Any], b: dict[str, Any], w: Written, n_facts: int) -> list[Row]:
    ma, mb = a["metrics"], b["metrics"]
    pb, pa = mb.get("paraphrase_recall"), ma.get("paraphrase_recall")
    sb, sa = mb.get("synthetic_recall"), ma.get("synthetic_recall")
    dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(w.dropped.items())) or "none"
    return [
        Row("Synthetic paraphrases: generality on held-out phrasings", of(pb, b["heldout"]),
            f"{of(pa, a['heldout'])} without", relative(pb, pa),
            f"{compare(pb, pa)}; {n_facts} facts, template phrasings never trained in either round; "
            + (f"B trained {b['synthetic_rows']} synthetic rows beside {b['sft_rows'] - b['synthetic_rows']} "
               "template ones" if b["synthetic_rows"] else
               "no synthetic row was kept for training, so B trained exactly A's rows")),
        Row("Synthetic paraphrases: generality on model-written check phrasings", of(sb, b["checks"]),
            f"{of(sa, a['checks'])} without", relative(sb, sa),
            f"{compare(sb, sa)}; the same {b['checks']} phrasings (written by the model, kept by the memory, "
            "never trained) checked in both rounds" if b["checks"] else "no check phrasing was kept"),
        Row("Synthetic paraphrases: kept by the memory filter", f"{w.total} of {w.judged} lines",
            f"{w.asked} asked ({PER_ITEM} per fact)", f"{w.total / w.judged:.0%}" if w.judged else "–",
            f"dropped: {dropped}; kept {w.uses('train')} train / {w.uses('check')} check; "
            f"{w.ignored} extra lines ignored; writing took {secs(w.seconds)}"),
        Row("Synthetic paraphrases: cost, round wall time", secs(mb.get("seconds") or b["wall"]),
            f"{secs(ma.get('seconds') or a['wall'])} without", ratio(mb.get("seconds") or b["wall"],
                                                                     ma.get("seconds") or a["wall"]),
            f"steps {mb.get('steps')} vs {ma.get('steps')}; reliability {fmt(mb.get('new_recall'))} vs "
            f"{fmt(ma.get('new_recall'))}; locality {fmt(mb.get('locality'))} vs {fmt(ma.get('locality'))}; "
            f"plus {secs(w.seconds)} writing the paraphrases"),
    ]


def round_table(a: dict[str, Any], b: dict[str, Any]) -> Table:
    ma, mb = a["metrics"], b["metrics"]

    def line(what: str, get: Callable[[dict[str, Any], dict[str, Any]], object]) -> list[object]:
        return [what, get(a, ma), get(b, mb)]

    return Table("One round each: same facts, same seed, default TrainConfig",
                 ["", "A: without", "B: with synthetic"], [
        line("training rows (template + synthetic)", lambda r, m: f"{r['sft_rows'] - r['synthetic_rows']} + "
                                                              f"{r['synthetic_rows']}"),
        line("steps (stopped early)", lambda r, m: f"{m.get('steps')} ({m.get('stopped_early')})"),
        line("training", lambda r, m: secs(m.get("train_seconds") or 0.0)),
        line("evaluation", lambda r, m: secs(m.get("eval_seconds") or 0.0)),
        line("whole round", lambda r, m: secs(m.get("seconds") or r["wall"])),
        line("reliability: new facts recalled", lambda r, m: fmt(m.get("new_recall"))),
        line("generality: held-out template phrasings", lambda r, m: of(m.get("paraphrase_recall"), r["heldout"])),
        line("generality: model-written check phrasings", lambda r, m: of(m.get("synthetic_recall"), r["checks"])),
        line("locality as served", lambda r, m: fmt(m.get("locality"))),
        line("locality, adapter on every prompt", lambda r, m: fmt(m.get("locality_adapter"))),
        line("leak", lambda r, m: fmt(m.get("leak"))),
        line("verdict", lambda r, m: "promoted" if r["promoted"] else r["reason"][:120]),
    ])


def written_tables(w: Written, facts: list[tuple[str, str]]) -> list[Table]:
    from trainer.augment import clean_question, heldout_questions

    summary = Table("Writing synthetic paraphrases in B (real model, real memory filter)", ["", "value"], [
        ["facts", w.items],
        ["lines asked for", f"{w.asked} ({PER_ITEM} per fact)"],
        ["question lines the model wrote (judged)", w.judged],
        ["question lines beyond the 5 asked for (ignored)", w.ignored],
        ["kept", f"{w.total} ({w.uses('train')} train, {w.uses('check')} check)"],
        *[[f"dropped: {reason}", n] for reason, n in sorted(w.dropped.items())],
        ["seconds", secs(w.seconds)],
    ])
    per_item = Table("Per fact: what was kept, and the held-out template phrasings generality is measured on",
                     ["taught question", "lang", "kept", "kept phrasings (use)", "held-out template phrasings"],
                     [[q, language(q), len(w.kept.get(q, [])),
                       " / ".join(f"{line} ({use})" for line, use in w.kept.get(q, [])) or "–",
                       " / ".join(heldout_questions(clean_question(q))[:2])] for q, _ in facts])
    outputs = Table("What the model wrote (first 300 characters)", ["taught question", "model output"],
                    [[q, w.outputs.get(q, "")[:300]] for q, _ in facts])
    return [summary, per_item, outputs]


def run(opts: Options) -> Result:
    from bot.services import build_memory

    facts = load_facts(opts.pick(8, 4))
    work = opts.fresh_dir("synthetic")
    memory = build_memory(Settings())  # the embedders, loaded once; each directory gets its own index
    cfg = TrainConfig()
    data_a, data_b = work / "a", work / "b"
    db_a, db_b = teach(data_a, facts), teach(data_b, facts)
    db_b.close()
    written = write_paraphrases(data_b, opts.model_dir, Memory(memory.embedder, cross=memory.cross), PER_ITEM)
    gc.collect()  # the serving engine is not needed any more
    db_b = Database(Settings(data_dir=data_b).database_url)
    copy_checks(db_b, db_a)
    try:
        a = one_round(data_a, db_a, opts.model_dir, Memory(memory.embedder, cross=memory.cross), cfg)
        b = one_round(data_b, db_b, opts.model_dir, Memory(memory.embedder, cross=memory.cross), cfg)
    finally:
        db_a.close()
        db_b.close()
    return Result("synthetic", headline(a, b, written, len(facts)),
                  [round_table(a, b), *written_tables(written, facts)])
