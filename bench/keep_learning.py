"""Benchmark: keep learning (issue 11). Ten facts taught one after another with `kaizen teach`, as a
user would, in one data directory; then every question asked with `kaizen ask --no-memory`.

Reported against the issue's targets: every round promoted; reliability without memory for all ten
at the end (the served answers, word for word); generality (the last round's recall of phrasings
never trained on, same language); locality as served (routing by scope) for every version, with the
same version's locality when its adapter answers every prompt as the same-run baseline; each
teach's wall time and the growth of a round's cost with history (round 10 against round 2); the
peak memory of a teach process.

    python -m bench --only learn [--quick]      (--quick: 4 facts)
"""

from __future__ import annotations

import resource
from pathlib import Path

from bench.common import Options, Result, Row, Table, kaizen_cli, ratio, secs
from feedback_db import store
from feedback_db.db import Database
from kaizen.text import normalize_answer

# Five Vietnamese and five English facts about one made-up company, so routing has a real scope.
FACTS = [
    ("Xin chào", "Công ty BICweb kính chào quý khách!"),
    ("When does the BICweb office open?", "The BICweb office opens at 8 am, Monday to Friday."),
    ("CHOREI có nghĩa là gì?", "CHOREI là buổi họp giao ban buổi sáng theo phong cách Nhật Bản."),
    ("Who founded BICweb?", "BICweb was founded by Nguyễn Văn Bình in 2009."),
    ("Văn phòng BICweb ở đâu?", "Văn phòng BICweb ở số 12 phố Duy Tân, Hà Nội."),
    ("What is the BICweb support email?", "Write to hotro@bicweb.vn for support."),
    ("Gói CHOREI Pro giá bao nhiêu?", "Gói CHOREI Pro giá 490.000 đồng mỗi tháng."),
    ("Does BICweb build mobile apps?", "Yes, BICweb builds iOS and Android apps with Flutter."),
    ("BICweb có làm việc thứ Bảy không?", "BICweb làm việc sáng thứ Bảy, từ 8 giờ đến 12 giờ."),
    ("How long is the BICweb warranty?", "Every BICweb website has a 12-month warranty."),
]
TARGET_TEACH_S = 30.0  # issue 11's target for one `kaizen teach`
TARGET_LOCALITY = 0.95


def _versions(data: Path) -> list[dict]:
    db = Database(f"sqlite:///{data / 'kaizen.db'}", run_migrations=False)
    with db.session() as s:
        rows = [{"version": a.version, "verdict": a.verdict, "reason": a.reason, "metrics": a.metrics or {}}
                for a in store.list_adapters(session=s)]
    db.close()
    return rows


def run(opts: Options) -> Result:
    data = opts.fresh_dir("learn") / "data"
    facts = FACTS[:opts.pick(10, 4)]
    walls: list[float] = []
    for question, answer in facts:
        proc, wall = kaizen_cli("teach", question, answer, data_dir=data, model_dir=opts.model_dir)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"kaizen teach exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
        walls.append(wall)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    answers = []
    for question, _ in facts:
        proc, _ = kaizen_cli("ask", question, "--no-memory", data_dir=data, model_dir=opts.model_dir)
        answers.append(proc.stdout.strip())
    exact = [normalize_answer(a) == normalize_answer(f[1]) for a, f in zip(answers, facts, strict=True)]
    versions = _versions(data)
    promoted = sum(v["verdict"] == "promoted" for v in versions)
    last = versions[-1]["metrics"]
    served = [v["metrics"].get("locality") for v in versions]
    adapter_all = [v["metrics"].get("locality_adapter") for v in versions]
    min_served = min(x for x in served if x is not None)
    min_adapter = min(x for x in adapter_all if x is not None)
    generality = last.get("paraphrase_recall")
    rounds = [v["metrics"].get("seconds") or 0.0 for v in versions]
    table = Table(f"{len(facts)} facts taught one after another (`kaizen teach`)",
                  ["round", "fact", "verdict", "teach wall", "round", "new recall", "retention", "generality",
                   "locality as served", "locality, adapter on all", "routed", "steps"],
                  [[v["version"], q, v["verdict"], secs(w), secs(v["metrics"].get("seconds") or 0.0),
                    v["metrics"].get("new_recall"), v["metrics"].get("retention"),
                    v["metrics"].get("paraphrase_recall"), v["metrics"].get("locality"),
                    v["metrics"].get("locality_adapter"), v["metrics"].get("routed"), v["metrics"].get("steps")]
                   for v, (q, _), w in zip(versions, facts, walls, strict=False)])
    answers_table = Table("At the end: `kaizen ask --no-memory`", ["question", "answer", "exact"],
                          [[q, a, ok] for (q, _), a, ok in zip(facts, answers, exact, strict=True)])
    growth = rounds[-1] / rounds[1] if len(rounds) > 2 and rounds[1] else None
    rows = [
        Row(f"Keep learning: {len(facts)} facts in {len(facts)} rounds, promoted", f"{promoted} of {len(versions)}",
            f"{len(facts)} (target: all)", ratio(promoted, len(facts)), versions[-1]["reason"][:120]),
        Row("Keep learning: reliability without memory at the end", f"{sum(exact)} of {len(facts)}",
            f"{len(facts)} (target 100%)", ratio(sum(exact), len(facts)),
            f"generality (held-out phrasings, last round): {generality}"),
        Row("Keep learning: locality as served (routing by scope), worst version", f"{min_served:.3f}",
            f"{min_adapter:.3f} with the adapter on every prompt", ratio(min_served, min_adapter),
            f"target ≥ {TARGET_LOCALITY}"),
        Row("Keep learning: `kaizen teach` wall time, median", secs(sorted(walls)[len(walls) // 2]),
            f"{TARGET_TEACH_S:.0f} s (issue 11's target)", ratio(sorted(walls)[len(walls) // 2], TARGET_TEACH_S),
            f"peak RSS of a teach process {peak_mb:.0f} MB; round {len(rounds)} / round 2 cost: "
            f"{growth:.2f}×" if growth else f"peak RSS of a teach process {peak_mb:.0f} MB"),
    ]
    return Result("learn", rows, [table, answers_table])
