"""Benchmark: do replies carry the facts of imported knowledge? (issue 13, section 6)

Eight facts of a made-up travel agency (bench/data/travel_facts.json) are imported as a CSV would
be (not word for word), then asked in 40 other wordings, 24 Vietnamese and 16 English, none of
them imported. A reply *carries* the fact when it contains the fact's numbers (prices, times,
phone numbers; `bot.fallback.fact_keys`), compared as digits. Real model, real memory (MiniLM +
multilingual e5), greedy, as served; the baseline is the same service with `fact_check` off (the
model's reply as it comes, with the facts in its prompt) in the same run.

    python -m bench --only facts [--quick]
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from bench.common import Options, Result, Row, Table, median, ratio
from bot.engine_api import ChatEngine
from bot.fallback import carries, fact_keys
from bot.memory import Memory
from bot.services import build_memory, build_services
from feedback_db import store
from kaizen.settings import Settings

DATA = Path(__file__).parent / "data" / "travel_facts.json"


@dataclass
class Asked:
    question: str
    answer: str  # the fact's text
    english: bool
    reply: str = ""
    matched: bool = False  # the memory found this fact's item (verbatim, or among the context facts)
    seconds: float = 0.0

    @property
    def carried(self) -> bool:
        return carries(self.reply, fact_keys(self.answer, self.question))


def load_questions(quick: bool) -> tuple[list[dict], list[Asked]]:
    facts = json.loads(DATA.read_text(encoding="utf-8"))["facts"]
    asked = [Asked(q, f["answer"], english=i >= 3) for f in facts for i, q in enumerate(f["asked"])]
    return facts, asked[::4] if quick else asked


def ask_all(opts: Options, *, check: bool, facts: list[dict], asked: list[Asked], engine: ChatEngine | None,
            memory: Memory) -> ChatEngine:
    """Every question answered once by a fresh service (its own data directory) with `fact_check` on or off."""
    settings = Settings(data_dir=opts.fresh_dir(f"facts-{'on' if check else 'off'}"), model=opts.model_dir,
                        memory=True, fact_check=check)
    kaizen = build_services(settings, engine=engine, memory=memory)
    with kaizen.db.write() as s:
        for f in facts:
            store.add_knowledge(session=s, question=f["question"], answer=f["answer"])
    try:
        for a in tqdm(asked, desc=f"fact check {'on' if check else 'off'}", unit="question"):
            t0 = time.perf_counter()
            reply = kaizen.chat.start(message=a.question, client="bench")
            a.reply = reply.read()
            a.seconds = time.perf_counter() - t0
            with kaizen.db.session() as s:
                ids = store.get_exchange(session=s, exchange_id=reply.exchange_id).memory_item_ids or []
                a.matched = any(store.get_knowledge(session=s, item_id=i).answer == a.answer for i in ids)
    finally:
        kaizen.db.close()
    return kaizen.engine


def run(opts: Options) -> Result:
    facts, off = load_questions(opts.quick)
    _, on = load_questions(opts.quick)
    memory = build_memory(Settings())
    engine = ask_all(opts, check=False, facts=facts, asked=off, engine=None, memory=memory)
    ask_all(opts, check=True, facts=facts, asked=on, engine=engine, memory=Memory(memory.embedder, cross=memory.cross))

    def rate(xs: list[Asked], what: str) -> float:
        return sum(getattr(x, what) for x in xs) / max(1, len(xs))

    rows = []
    for name, pick in (("all", lambda a: True), ("Vietnamese", lambda a: not a.english),
                       ("English", lambda a: a.english)):
        a, b = [x for x in off if pick(x)], [x for x in on if pick(x)]
        matched_b = [x for x in b if x.matched]
        rows.append([name, len(a), f"{rate(a, 'matched'):.0%}", f"{rate(a, 'carried'):.0%} → {rate(b, 'carried'):.0%}",
                     f"{rate(matched_b, 'carried'):.0%}", f"{median([x.seconds for x in a]):.1f} → "
                     f"{median([x.seconds for x in b]):.1f}"])
    table = Table(f"Imported facts asked in other words ({len(off)} questions), fact check off → on",
                  ["questions", "n", "matched by the memory", "replies carrying the fact", "of those matched (on)",
                   "median s/reply"], rows)
    misses = Table("Replies without the fact (fact check on)", ["question", "matched", "reply"],
                   [[x.question, "yes" if x.matched else "no", x.reply[:100]] for x in on if not x.carried])
    a_rate, b_rate = rate(off, "carried"), rate(on, "carried")
    return Result("facts", [
        Row("Replies carrying an imported fact (40 VI+EN paraphrases, real model)", f"{b_rate:.0%} with the fact check",
            f"{a_rate:.0%} without", ratio(b_rate, a_rate) if a_rate else "",
            f"matched by the memory: {rate(on, 'matched'):.0%}; of those, "
            f"{rate([x for x in on if x.matched], 'carried'):.0%} carry the fact"),
    ], [table, misses])
