"""Calibration: does the model's confidence tell the questions it cannot answer? (issue "Curiosity")

Every model-written reply carries the model's confidence (`ReplyStream.confidence`, stored in
`exchanges.confidence`): the mean log-probability of its tokens under the model's raw distribution,
in nats per token (<= 0). Kaizen's "to teach" queue wants the questions it could not answer; this
measures how well "confidence below a threshold" finds them.

60 labelled questions (bench/data/confidence_labelled.json), 30 English and 30 Vietnamese: half
common knowledge ("What is the capital of France?", "Thủ đô của Việt Nam là gì?"), half facts the
model cannot know (a made-up company's hours, prices, phone numbers and staff; the user's own life).
Each is asked once through the chat service as served (the persona's system prompt and tone, the
fallbacks, greedy, at most 48 new tokens, bf16), on the base model without memory. "Could not
answer" is the label by design; a reply is flagged when its confidence is below the threshold. The
sweep reports precision and recall of the flag at each threshold and picks the best F1, compared
with flagging every question (the base rate). The threshold is chosen on the same questions it is
scored on, so the F1 is optimistic; a two-fold cross-validation (choose on half, score on the
other) says by how much. The confidence used is the model's own even where a fallback replaced
the text shown (the exchange then stores None); how many were replaced is reported.

    python -m bench --only confidence [--quick]
    python -m bench.confidence [--quick] [--model DIR]     writes bench/out/confidence.md
"""

from __future__ import annotations

import os

# Before torch is imported (bench/__init__.py does the same): OpenMP threads that spin while they
# wait collapse when the two shared cores are oversubscribed.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import datetime as dt
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from bench.common import ROOT, Options, Result, Row, Table, load_average, ratio
from bot.engine_api import ChatEngine
from bot.services import build_services
from feedback_db import store
from kaizen.settings import Settings
from kaizen.text import fold

DATA = Path(__file__).parent / "data" / "confidence_labelled.json"
MAX_NEW_TOKENS = 48


@dataclasses.dataclass
class Asked:
    """One labelled question and what the model made of it."""

    question: str
    language: str  # "en" | "vi"
    answerable: bool  # the label: common knowledge (True) or a fact the model cannot know (False)
    expect: tuple[str, ...] = ()  # words a correct answer contains (folded, lower-case)
    reply: str = ""
    confidence: float | None = None  # the model's own, even where a fallback replaced the text shown
    stored: float | None = None  # exchanges.confidence: None where the text shown is not the model's
    replaced: bool = False  # a fallback's text was shown instead of the model's
    tokens: int = 0
    seconds: float = 0.0

    @property
    def correct(self) -> bool:
        """For an answerable question: whether the reply contains one of the expected words."""
        words = " " + re.sub(r"[^0-9a-z]+", " ", fold(self.reply).casefold()) + " "
        return any(f" {w} " in words for w in self.expect)


def load_questions(quick: bool = False, path: Path = DATA) -> list[Asked]:
    """The labelled questions; quick: every fourth of each group (both languages, both labels)."""
    data = json.loads(path.read_text(encoding="utf-8"))["questions"]
    asked = [Asked(q["q"], q["lang"], bool(q["answerable"]), tuple(q.get("expect", ()))) for q in data]
    return asked[::4] if quick else asked


def ask_all(opts: Options, asked: Sequence[Asked], engine: ChatEngine | None = None) -> ChatEngine:
    """Ask each question once through a fresh chat service (its own data directory, no memory, the
    base model); fill in the replies and confidences. Returns the engine for reuse."""
    settings = Settings(data_dir=opts.fresh_dir("confidence"), model=opts.model_dir, memory=False,
                        adapter_routing="always", schedule=False, max_new_tokens=MAX_NEW_TOKENS)
    kaizen = build_services(settings, engine=engine)
    try:
        for a in tqdm(asked, desc="confidence", unit="question"):
            t0 = time.perf_counter()
            reply = kaizen.chat.start(message=a.question, client="bench")
            a.reply = reply.read()
            a.seconds = time.perf_counter() - t0
            stream = reply.stream
            a.confidence = getattr(stream, "model_confidence", stream.confidence)
            a.replaced = bool(getattr(stream, "replaced", False))
            a.tokens = stream.completion_tokens
            with kaizen.db.session() as s:
                a.stored = store.get_exchange(session=s, exchange_id=reply.exchange_id).confidence
    finally:
        kaizen.db.close()
    raw = [dataclasses.asdict(a) for a in asked]
    (settings.data_dir / "asked.json").write_text(json.dumps(raw, ensure_ascii=False, indent=1), encoding="utf-8")
    return kaizen.engine


# --- the sweep ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cut:
    """Flag "could not answer" when the confidence is below `threshold`: how well that finds them."""

    threshold: float
    flagged: int
    precision: float
    recall: float

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def cut_at(scored: Sequence[tuple[float, bool]], threshold: float) -> Cut:
    """`scored`: (confidence, could not answer) pairs."""
    flagged = [unknown for c, unknown in scored if c < threshold]
    positives = sum(unknown for _, unknown in scored)
    hits = sum(flagged)
    return Cut(threshold, len(flagged), hits / len(flagged) if flagged else 0.0,
               hits / positives if positives else 0.0)


def thresholds(values: Sequence[float]) -> list[float]:
    """Every distinct way to split `values`: the midpoints between neighbours, and one past each end."""
    xs = sorted(set(values))
    if not xs:
        return []
    return [xs[0] - 0.01, *((a + b) / 2 for a, b in zip(xs, xs[1:], strict=False)), xs[-1] + 0.01]


def sweep(scored: Sequence[tuple[float, bool]]) -> list[Cut]:
    return [cut_at(scored, t) for t in thresholds([c for c, _ in scored])]


def best(cuts: Sequence[Cut]) -> Cut:
    """The cut with the best F1 (ties: the more precise, then the lower threshold: fewer flagged)."""
    return max(cuts, key=lambda c: (round(c.f1, 12), round(c.precision, 12), -c.threshold))


def auroc(scored: Sequence[tuple[float, bool]]) -> float:
    """The chance that a question it could not answer has a lower confidence than one it could (ties: half)."""
    unknown = [c for c, u in scored if u]
    known = [c for c, u in scored if not u]
    if not unknown or not known:
        return math.nan
    wins = sum((u < k) + 0.5 * (u == k) for u in unknown for k in known)
    return wins / (len(unknown) * len(known))


def base_f1(scored: Sequence[tuple[float, bool]]) -> float:
    """F1 of flagging every question: precision is the share it could not answer, recall 1."""
    share = sum(u for _, u in scored) / len(scored) if scored else 0.0
    return 2 * share / (1 + share) if share else 0.0


def cross_validated_f1(scored: Sequence[tuple[float, bool]]) -> float:
    """Two folds, each label split alternately: the threshold chosen on one fold, F1 measured on the
    other; the mean of the two."""
    folds: list[list[tuple[float, bool]]] = [[], []]
    for label in (True, False):
        for i, pair in enumerate(p for p in scored if p[1] == label):
            folds[i % 2].append(pair)
    if not all(folds):
        return math.nan
    return statistics.fmean(cut_at(folds[1 - i], best(sweep(folds[i])).threshold).f1 for i in (0, 1))


# --- the report --------------------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> str:
    return f"{statistics.fmean(xs):.3f}" if xs else "–"


def subset_row(name: str, asked: Sequence[Asked]) -> list[object]:
    scored = [(a.confidence, not a.answerable) for a in asked if a.confidence is not None]
    if not scored:
        return [name, 0, 0, *["–"] * 7]
    chosen = best(sweep(scored))
    return [name, len(scored), sum(u for _, u in scored), f"{chosen.threshold:.3f}", f"{chosen.precision:.2f}",
            f"{chosen.recall:.2f}", f"{chosen.f1:.2f}", f"{base_f1(scored):.2f}", f"{cross_validated_f1(scored):.2f}",
            f"{auroc(scored):.2f}"]


def analyse(asked: Sequence[Asked]) -> Result:
    scored = [(a.confidence, not a.answerable) for a in asked if a.confidence is not None]
    cuts = sweep(scored)
    chosen = best(cuts)
    base = base_f1(scored)
    area, held_out = auroc(scored), cross_validated_f1(scored)
    known = [a.confidence for a in asked if a.answerable and a.confidence is not None]
    unknown = [a.confidence for a in asked if not a.answerable and a.confidence is not None]

    groups = []
    for name, pick in (("could answer", lambda a: a.answerable), ("could not answer", lambda a: not a.answerable)):
        for lang in ("all", "en", "vi"):
            xs = [a for a in asked if pick(a) and lang in ("all", a.language)]
            cs = [a.confidence for a in xs if a.confidence is not None]
            right = f"{sum(a.correct for a in xs)}/{len(xs)}" if xs and xs[0].answerable else "–"
            groups.append([name, lang, len(xs), _mean(cs), f"{statistics.median(cs):.3f}" if cs else "–",
                           f"{min(cs):.3f} … {max(cs):.3f}" if cs else "–", right,
                           sum(a.replaced for a in xs),
                           f"{statistics.fmean([a.tokens for a in xs]):.0f}" if xs else "–"])
    group_table = Table("Confidence by group (nats per token; a fallback's text stores None, its model "
                        "confidence is still counted here)",
                        ["group", "language", "n", "mean", "median", "range", "answer correct",
                         "fallback replaced", "mean tokens"], groups)

    shown = cuts if len(cuts) <= 16 else [cuts[round(i * (len(cuts) - 1) / 15)] for i in range(16)]
    shown = sorted({*shown, chosen}, key=lambda c: c.threshold)
    sweep_table = Table(f"Threshold sweep: flag \"could not answer\" when confidence < threshold "
                        f"({len(scored)} questions, {sum(u for _, u in scored)} it could not answer)",
                        ["threshold", "flagged", "precision", "recall", "F1", ""],
                        [[f"{c.threshold:.3f}", c.flagged, f"{c.precision:.2f}", f"{c.recall:.2f}", f"{c.f1:.2f}",
                          "best F1" if c == chosen else ""] for c in shown])
    correct = [a.confidence for a in asked if a.answerable and a.correct and a.confidence is not None]
    wrong = [a.confidence for a in asked if a.answerable and not a.correct and a.confidence is not None]
    summary = Table("Calibration", ["measure", "value"], [
        ["threshold (best F1)", f"{chosen.threshold:.3f} nats/token"],
        ["precision / recall / F1", f"{chosen.precision:.2f} / {chosen.recall:.2f} / {chosen.f1:.2f}"],
        ["F1 flagging every question (base rate)", f"{base:.2f}"],
        ["F1 held out (2-fold cross-validation)", f"{held_out:.2f}"],
        ["AUROC (0.5: no signal)", f"{area:.2f}"],
        ["mean confidence: could answer / could not", f"{_mean(known)} / {_mean(unknown)}"],
        ["mean confidence of answerable questions: answered right / wrong",
         f"{_mean(correct)} ({len(correct)}) / {_mean(wrong)} ({len(wrong)})"],
        ["stored confidence = the stream's (model's text) / None (fallback text)",
         f"{sum(a.stored == a.confidence for a in asked if not a.replaced)}/{sum(not a.replaced for a in asked)}"
         f" / {sum(a.stored is None for a in asked if a.replaced)}/{sum(a.replaced for a in asked)}"],
        ["median seconds per reply", f"{statistics.median([a.seconds for a in asked]):.2f}" if asked else "–"],
    ])
    every = Table("Every question", ["label", "lang", "confidence", "flagged", "question", "reply"], [
        ["could answer" if a.answerable else "could not", a.language,
         f"{a.confidence:.3f}" if a.confidence is not None else "–",
         "yes" if a.confidence is not None and a.confidence < chosen.threshold else "",
         a.question, ("[fallback] " if a.replaced else "") + a.reply[:90]] for a in asked])
    subsets = Table("The same calibration on parts of the set (each with its own best threshold)",
                    ["questions", "n", "could not answer", "threshold", "precision", "recall", "F1",
                     "F1 flagging all", "held-out F1", "AUROC"],
                    [subset_row(name, [a for a in asked if pick(a)]) for name, pick in (
                        ("all, the model's confidence", lambda a: True),
                        ("as stored: the model's text shown (fallbacks store None)", lambda a: not a.replaced),
                        ("English", lambda a: a.language == "en"),
                        ("Vietnamese", lambda a: a.language == "vi"),
                    )])
    row = Row(f"Low confidence flags what it cannot answer ({len(scored)} VI+EN questions, real model)",
              f"F1 {chosen.f1:.2f} at < {chosen.threshold:.2f} nats/token",
              f"F1 {base:.2f} flagging all", ratio(chosen.f1, base),
              f"precision {chosen.precision:.2f}, recall {chosen.recall:.2f}, held-out F1 {held_out:.2f}, "
              f"AUROC {area:.2f}; mean confidence {_mean(known)} (could answer) vs {_mean(unknown)} (could not)")
    return Result("confidence", [row], [summary, sweep_table, subsets, group_table, every])


def run(opts: Options, asked: Sequence[Asked] | None = None) -> Result:
    questions = list(asked) if asked is not None else load_questions(opts.quick)
    ask_all(opts, questions)
    return analyse(questions)


def main(argv: Sequence[str] | None = None) -> int:
    from bench.__main__ import render
    from kaizen.base_model import resolve_model

    p = argparse.ArgumentParser(prog="python -m bench.confidence", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a quarter of the questions")
    p.add_argument("--model", default=os.environ.get("KAIZEN_MODEL", "embedded"),
                   help="'embedded' or a converted model directory")
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out", help="scratch directory")
    p.add_argument("--results", type=Path, default=None,
                   help="where to write the markdown (default: OUT_DIR/confidence.md)")
    args = p.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    opts = Options(model_dir=resolve_model(args.model, args.out_dir), out_dir=args.out_dir.resolve(), quick=args.quick)
    started, load_before, t0 = dt.datetime.now(), load_average(), time.perf_counter()
    result = run(opts)
    result.seconds = time.perf_counter() - t0
    text = render([result], opts, started, load_before, result.seconds)
    print("\n" + text)
    path = args.results or args.out_dir / "confidence.md"
    path.write_text(text, encoding="utf-8")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
