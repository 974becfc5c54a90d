"""The study (issue 12, part 1): a seeded population of simulated users drives a real `kaizen serve`
for a number of simulated days, and each adapter version is measured on questions nobody rated.

    python -m bench.simulate [--days 5] [--users-per-day 8] [--questions-per-user 6] [--seed 0]
                             [--model DIR] [--data-dir bench/out/simulate] [--max-tokens 96]
                             [--trigger schedule|api] [--repeat 2] [--env KAIZEN_X=Y ...]
    python -m bench --only simulate [--quick]       (through the bench framework: bench/results.md)

**What the users know and the bot does not.** A hidden fact sheet (bench/data/simulate_sheet.json):
40 facts of a made-up Hanoi tour company, "Hoa Sen Travel", each with a Vietnamese and an English
answer that holds a checkable key (a price, a name, a phone number), and six phrasings per fact:
four are asked during the days, two (one per language) are held out for the evaluation. Beside it,
30 general prompts asked during the days and 10 held out, in both languages.

**The hidden style preference: short answers.** A reply of 3 to N words (N = 25 by default, counted on
whitespace) that ended cleanly (the model stopped by itself, not at the max_tokens budget) and is an
answer: in the question's language, not a loop, not "I don't know" or the fallback (`meets_style`;
before 2026-12-04 only the length and the clean end counted, and the base model's broken Vietnamese and
its fallback passed). The trainer is never told. Why this one: a 135M model's replies often run to the
token limit (the looping issue), and length is one decision made at every token (emit end-of-turn or
not), which KTO on 👍 short / 👎 long replies can plausibly teach. A preference such as "greet me by my
name" would need the model to copy a span from the context, which is harder to learn at 135M.

**The rating rules.** A fact question gets 👍 iff the reply contains the fact's key (compared
casefolded, without diacritics, with thousands separators dropped, at word boundaries: "1.250.000"
= "1,250,000", "Lê Thị Thu Hà" = "le thi thu ha"). A general question gets 👍 iff the reply meets the
style preference. Otherwise 👎, and on a fact question an honest user attaches a correction (the
sheet's answer in the question's language) with probability `--correction-p`. A 👎 on a general
question never carries a correction: the style is to be learned from ratings alone (a short
"ideal reply" as a correction would teach the memory one answer verbatim instead, and the admin
could not check it against a sheet). Adversarial users (`--adversarial-share` of each day's users,
at least one when the share is above 0) rate fact questions 👎 with a wrong correction (the answer
with the fact's wrong key) with probability `--adversarial-wrong-p`, else 👍 whatever the reply
says, and invert the style rule (👍 to long or cut-off replies, 👎 to good ones).

**The admin** reviews the pending corrections at the end of each day through the admin REST API,
as a careful admin would: a correction is approved iff its question is one of the sheet's and it
contains that fact's key; every other correction is rejected.

**Rounds.** With `--trigger schedule` (the default) the server's own scheduler runs them
(`KAIZEN_SCHEDULE_MINUTES`, `KAIZEN_SCHEDULE_MIN_ITEMS`), also in the middle of a day, as it would
in production. After each day the driver waits until a round that started after the day's review
has finished (or until no round starts for a schedule interval and a half) and the active version
is being served (hot-swapped). `--trigger api` starts exactly one round per day with
`POST /admin/api/train` instead (short tests). The scheduler is paused during an evaluation, so
that one version answers all of it, and resumed after.

**The evaluation**, before day 1 (the base model) and after each day: the held-out fact phrasings
(`--eval-facts` facts, alternating languages) and held-out general prompts (`--eval-general`), asked
once with the memory on and once with it off, judged by the same rules by a held-out (honest) user
and never sent as feedback. Generation is fixed for reproducibility: temperature 0 (greedy) for
every request, days included, and a `--max-tokens` budget. While nothing has been taught (no
knowledge item and no adapter) the memory cannot change an answer, so the memory-on figures of
such a point are the memory-off ones.

Mind the routing when reading the style figures: under routing by scope (the server's default) a
question the memory finds no taught question for, such as a general one, gets no knowledge adapter;
the preference adapter learned from the ratings (KTO, `trainer/preference.py`) is applied to every
reply, so that is where a learned style shows (`--env KAIZEN_TRAIN_PREFERENCE=unlikelihood` runs the
older way, inside the knowledge adapter, for a side-by-side run).

Recorded per evaluated version: the 👍 rate memory on and off (fact / style split), the version's
reliability, generality and locality (and `preference`, when the trainer reports it) from
`/admin/api/adapters`, the rounds run, promoted and rejected, the KTO rows of the day's rounds
(`data_counts` "kto_desirable" / "kto_undesirable", when the trainer reports them), the day's
ratings and corrections, and wall time. At the end the knowledge base (`/admin/api/knowledge`) is
checked for any adversarial wrong key: there must be none. Written: a markdown table and a PNG
plot of the 👍 rate per version (memory on and off) in bench/out/; through `python -m bench` the
table goes to bench/results.md.

Cost: every reply of the days and of the evaluations is one generation, so at the defaults (5 days,
48 questions a day, 30 held-out questions asked twice per point) expect about an hour and a half on
two cores (a 1-day smoke run with the real model measured 6-10 s per 96-token reply and 7 minutes for
a round on a shared machine); `python -m bench --only simulate --quick` runs 2 smaller days.

Determinism: every choice is drawn from `random.Random` seeded with `--seed` and the user, day and
question, so the questions never depend on the replies; generation is greedy. `--repeat 2` runs the
whole study twice in fresh data directories and reports how many ratings differ.

The API's `finish_reason` is always "stop" today, also when a reply was cut at max_tokens, so a
model reply counts as ended cleanly only if it also used fewer than max_tokens tokens (a memory
reply is a stored answer and always ends cleanly).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import string
import sys
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import ADMIN, ROOT, Options, Result, Row, Table, kaizen_env, ratio
from bot.curiosity import says_unsure
from bot.fallback import language
from kaizen.repetition import is_degenerate
from kaizen.text import fold
from tests.harness import ProcessServer, wait_until

SHEET = Path(__file__).resolve().parent / "data" / "simulate_sheet.json"
OUT = ROOT / "bench" / "out"
LANGS = ("vi", "en")
UNFINISHED = ("queued", "running")
MIN_WORDS = 3  # the style rule's shortest answer: "Đác khiều," is not one


# --- the sheet ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    id: str
    key: str
    wrong_key: str
    answers: dict[str, str]  # lang -> template with {k}
    ask: dict[str, list[str]]  # lang -> phrasings asked during the days
    heldout: dict[str, list[str]]  # lang -> phrasings asked only by the evaluation

    def answer(self, lang: str) -> str:
        return self.answers[lang].format(k=self.key)

    def wrong_answer(self, lang: str) -> str:
        return self.answers[lang].format(k=self.wrong_key)


@dataclass(frozen=True)
class Sheet:
    business: str
    facts: list[Fact]
    general_ask: dict[str, list[str]]
    general_heldout: dict[str, list[str]]

    def fact_of(self, question: str) -> Fact | None:
        """The fact a question asks about (any phrasing, asked or held out), or None."""
        wanted = " ".join(question.split())
        for f in self.facts:
            for lang in LANGS:
                if wanted in f.ask[lang] or wanted in f.heldout[lang]:
                    return f
        return None


def load_sheet(path: Path = SHEET) -> Sheet:
    data = json.loads(path.read_text(encoding="utf-8"))
    facts = [Fact(id=f["id"], key=f["key"], wrong_key=f["wrong_key"], answers=f["answer"], ask=f["ask"],
                  heldout=f["heldout"]) for f in data["facts"]]
    return Sheet(business=data["business"], facts=facts, general_ask=data["general"]["ask"],
                 general_heldout=data["general"]["heldout"])


# --- the rating rules ---------------------------------------------------------------------------

_THOUSANDS = re.compile(r"(?<=\d)[ .,](?=\d{3}(?!\d))")


def normalize(text: str) -> str:
    """Casefolded, without diacritics (đ -> d), single spaces, and thousands separators between digits
    dropped ("1.250.000" and "1,250,000" -> "1250000", "0912 345 678" -> "0912345678")."""
    text = " ".join(fold(text).casefold().split())
    previous = None
    while previous != text:  # "1.250.000": each pass drops the separators it can see
        previous, text = text, _THOUSANDS.sub("", text)
    return text


def contains_key(reply: str, key: str) -> bool:
    """Whether `reply` states `key` (normalized both, at word boundaries: "86" is not in "1986" nor in
    "8:86", "6" is not in "6:45")."""
    k = normalize(key)
    if not k:
        return False
    pattern = r"(?<![0-9a-z])(?<!\d[:.,])" + re.escape(k) + r"(?![0-9a-z])(?![:.,]\d)"
    return re.search(pattern, normalize(reply)) is not None


def word_count(text: str) -> int:
    return len(text.split())


def ended_cleanly(finish_reason: str | None, completion_tokens: int, max_tokens: int, source: str) -> bool:
    """The reply stopped by itself. The API says "stop" even when max_tokens cut a reply, so a model reply
    must also have used fewer tokens than the budget; a memory reply (a stored answer) always ends."""
    if finish_reason not in (None, "stop"):
        return False
    return source == "memory" or completion_tokens < max_tokens


_TONES = ("", "\u0300", "\u0301", "\u0309", "\u0303", "\u0323")  # none, huyền, sắc, hỏi, ngã, nặng
_VI_LETTERS = frozenset(
    ch for vowel in "aăâeêioôơuưy" for tone in _TONES
    for ch in (unicodedata.normalize("NFC", vowel + tone), unicodedata.normalize("NFC", vowel.upper() + tone))
) | frozenset("đĐ") | frozenset(string.ascii_letters)


def in_language(reply: str, lang: str) -> bool:
    """Whether `reply` is written in `lang`: Vietnamese ("vi") has diacritics and only letters of the
    Vietnamese alphabet ("Kiẁm" is not Vietnamese: ẁ is not one of its letters); English has none."""
    if lang == "en":
        return language(reply) == "en"
    return language(reply) == "vi" and all(ch in _VI_LETTERS for ch in reply if ch.isalpha())


def meets_style(reply: str, *, clean: bool, max_words: int, lang: str | None = None,
                min_words: int = MIN_WORDS) -> bool:
    """The hidden style preference: a short answer. `min_words` to `max_words` words, the reply ended
    cleanly, and it is an answer: not the fallback or any "I don't know" (`says_unsure`), not a loop
    (`is_degenerate`), and in the question's language `lang` (`in_language`; None: not checked).
    Without the last three, the base model's broken Vietnamese ("Đác khiều,", "Kiẁm, Tại lời,") and its
    fallback "Xin lỗi, mình chưa có câu trả lời tốt…" met the preference: 3 of its 5 Vietnamese
    replies in the study's held-out set."""
    if not clean or not min_words <= word_count(reply) <= max_words:
        return False
    if says_unsure(reply) or is_degenerate(reply):
        return False
    return lang is None or in_language(reply, lang)


# --- users and questions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    text: str
    kind: str  # fact | general
    lang: str
    fact_id: str | None = None


@dataclass(frozen=True)
class Answer:
    text: str
    exchange_id: str
    source: str
    adapter: str
    adapter_applied: bool
    completion_tokens: int
    clean: bool


@dataclass(frozen=True)
class Verdict:
    """How a user rates one reply: `up`, and a correction (or None)."""

    up: bool
    correction: str | None = None


@dataclass(frozen=True)
class User:
    name: str
    lang: str  # vi | en | both
    adversarial: bool


def honest_verdict(q: Question, a: Answer, sheet: Sheet, *, max_words: int) -> bool:
    """The rule every honest user (and the evaluation) applies: 👍 iff the fact's key is in the reply
    (fact questions), iff the style preference holds (general questions)."""
    if q.kind == "fact":
        fact = next(f for f in sheet.facts if f.id == q.fact_id)
        return contains_key(a.text, fact.key)
    return meets_style(a.text, clean=a.clean, max_words=max_words, lang=q.lang)


def rate(user: User, q: Question, a: Answer, sheet: Sheet, rng: random.Random, *, max_words: int,
         correction_p: float, adversarial_wrong_p: float) -> Verdict:
    """`user`'s rating of one reply (see the module docstring). `rng` is this question's own generator."""
    roll = rng.random()  # always drawn, so a user's later draws do not depend on the verdict
    fact = next((f for f in sheet.facts if f.id == q.fact_id), None) if q.kind == "fact" else None
    good = honest_verdict(q, a, sheet, max_words=max_words)
    if not user.adversarial:
        if good:
            return Verdict(True)
        return Verdict(False, fact.answer(q.lang) if fact is not None and roll < correction_p else None)
    if fact is not None:
        if roll < adversarial_wrong_p:
            return Verdict(False, fact.wrong_answer(q.lang))
        return Verdict(True)  # 👍 whatever the reply says
    return Verdict(not good)


def seeded(seed: int, *parts: object) -> random.Random:
    """A generator for one purpose: string seeds are hashed with SHA-512, stable across runs and processes."""
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def population(seed: int, day: int, users: int, adversarial_share: float) -> list[User]:
    """The day's users: new people each day, some of them adversarial (at least one if the share > 0)."""
    n_adv = 0 if adversarial_share <= 0 or users == 0 else min(users, max(1, round(adversarial_share * users)))
    adversarial = set(seeded(seed, day, "adversarial").sample(range(users), n_adv))
    out = []
    for i in range(users):
        lang = seeded(seed, day, i, "lang").choices(["vi", "en", "both"], weights=[0.45, 0.35, 0.2])[0]
        out.append(User(name=f"d{day}u{i}", lang=lang, adversarial=i in adversarial))
    return out


def questions_for(user: User, sheet: Sheet, n: int, seed: int, fact_share: float) -> list[Question]:
    """What `user` asks, drawn from the sheet's asked phrasings and general prompts."""
    rng = seeded(seed, user.name, "questions")
    out = []
    for _ in range(n):
        lang = rng.choice(LANGS) if user.lang == "both" else user.lang
        if rng.random() < fact_share:
            fact = rng.choice(sheet.facts)
            out.append(Question(rng.choice(fact.ask[lang]), "fact", lang, fact.id))
        else:
            out.append(Question(rng.choice(sheet.general_ask[lang]), "general", lang))
    return out


def eval_set(sheet: Sheet, seed: int, n_facts: int, n_general: int) -> list[Question]:
    """Held-out fact phrasings (facts drawn once with the seed, languages alternating) and held-out
    general prompts (alternating languages)."""
    rng = seeded(seed, "eval")
    facts = rng.sample(sheet.facts, min(n_facts, len(sheet.facts)))
    out = []
    for i, fact in enumerate(facts):
        lang = LANGS[i % 2]
        out.append(Question(rng.choice(fact.heldout[lang]), "fact", lang, fact.id))
    pools = {lang: list(sheet.general_heldout[lang]) for lang in LANGS}
    for i in range(min(n_general, sum(len(p) for p in pools.values()))):
        lang = LANGS[i % 2] if pools[LANGS[i % 2]] else LANGS[(i + 1) % 2]
        out.append(Question(pools[lang].pop(0), "general", lang))
    return out


# --- talking to the server ----------------------------------------------------------------------


class Kaizen:
    """The public API through the `openai` client, ratings and the admin REST API through httpx."""

    def __init__(self, url: str, *, max_tokens: int, timeout: float = 600) -> None:
        import openai

        self.url = url
        self.max_tokens = max_tokens
        self.chat = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=3, timeout=timeout)
        self.http = httpx.Client(base_url=url, timeout=timeout)
        self.admin = httpx.Client(base_url=url + "/admin/api", auth=ADMIN, timeout=timeout)

    def close(self) -> None:
        self.chat.close()
        self.http.close()
        self.admin.close()

    def ask(self, text: str, *, memory: bool, conversation: str) -> Answer:
        r = self.chat.chat.completions.create(
            model="kaizen", messages=[{"role": "user", "content": text}], max_tokens=self.max_tokens, temperature=0,
            extra_body={"memory": memory, "conversation_id": conversation[:32]})
        extra = (r.model_extra or {}).get("kaizen") or {}
        choice = r.choices[0]
        tokens = r.usage.completion_tokens if r.usage is not None else 0
        source = str(extra.get("source", "model"))
        clean = ended_cleanly(choice.finish_reason, tokens, self.max_tokens, source)
        return Answer(text=choice.message.content or "", exchange_id=r.id, source=source,
                      adapter=str(extra.get("adapter", "")), adapter_applied=bool(extra.get("adapter_applied")),
                      completion_tokens=tokens, clean=clean)

    def feedback(self, exchange_id: str, verdict: Verdict) -> dict[str, Any]:
        body: dict[str, Any] = {"id": exchange_id, "rating": "up" if verdict.up else "down"}
        if verdict.correction:
            body["correction"] = verdict.correction
        return self.http.post("/v1/feedback", json=body).raise_for_status().json()

    def get(self, path: str, **params: Any) -> Any:
        return self.admin.get(path, params=params).raise_for_status().json()

    def runs(self) -> list[dict[str, Any]]:
        return list(self.get("/runs", limit=500)["runs"])

    def adapters(self) -> dict[str, Any]:
        return dict(self.get("/adapters"))

    def knowledge(self) -> list[dict[str, Any]]:
        return list(self.get("/knowledge", limit=5000)["items"])

    def set_schedule(self, enabled: bool) -> None:
        self.admin.put("/settings", json={"schedule": {"enabled": enabled}}).raise_for_status()


def review(kz: Kaizen, sheet: Sheet) -> tuple[int, int]:
    """The careful admin: approve each pending correction that states its fact's key, reject the
    others. Returns (approved, rejected)."""
    approved = rejected = 0
    for fb in kz.get("/feedback", status="pending", limit=1000)["feedback"]:
        fact = sheet.fact_of(fb["question"])
        ok = fact is not None and contains_key(fb["correction"] or "", fact.key)
        kz.admin.post(f"/feedback/{fb['id']}/{'approve' if ok else 'reject'}", json={}).raise_for_status()
        approved, rejected = approved + ok, rejected + (not ok)
    return approved, rejected


def wait_idle(kz: Kaizen, timeout: float) -> None:
    """Until no round is queued or running, and the active version is the one served (hot-swapped)."""
    wait_until(lambda: not any(r["status"] in UNFINISHED for r in kz.runs()), timeout, "the running round to finish", 2)
    wait_until(lambda: (lambda a: a["active"] == a["serving"])(kz.adapters()), 120,
               "the hot-swap of the active version", 1)


def last_run_id(kz: Kaizen) -> int:
    return max((r["id"] for r in kz.runs()), default=0)


def train_api(kz: Kaizen, timeout: float) -> None:
    """One round through POST /admin/api/train (waiting out a round that is already running)."""
    while True:
        r = kz.admin.post("/train")
        if r.status_code != 409:
            break
        wait_idle(kz, timeout)
    run_id = r.raise_for_status().json()["run_id"]
    wait_until(lambda: kz.get(f"/runs/{run_id}")["status"] not in UNFINISHED, timeout, f"round {run_id}", 2)
    wait_idle(kz, timeout)


def await_scheduled_round(kz: Kaizen, after: int, minutes: int, timeout: float) -> None:
    """Until a round the scheduler started after run `after` has finished, or no round has started for
    1.5 schedule intervals while none ran (nothing new to learn), then until the active version is served."""
    deadline = time.monotonic() + timeout
    idle_since = time.monotonic()
    while time.monotonic() < deadline:
        runs = kz.runs()
        if any(r["id"] > after and r["status"] not in UNFINISHED for r in runs):
            break
        if any(r["status"] in UNFINISHED for r in runs):
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > 90 * minutes:
            break
        time.sleep(2)
    else:
        raise TimeoutError(f"no scheduled round finished within {timeout:g} s")
    wait_idle(kz, timeout)


# --- the study ----------------------------------------------------------------------------------


@dataclass
class Config:
    days: int = 5
    users_per_day: int = 8
    questions_per_user: int = 6
    seed: int = 0
    model: str = ""  # a converted model directory
    data_dir: Path = OUT / "simulate"
    out_dir: Path = OUT
    max_tokens: int = 96
    max_words: int = 25
    trigger: str = "schedule"  # schedule | api
    schedule_minutes: int = 1
    schedule_min_items: int = 1
    fact_share: float = 0.6
    correction_p: float = 0.5
    adversarial_share: float = 0.15
    adversarial_wrong_p: float = 0.7
    eval_facts: int = 20
    eval_general: int = 10
    round_timeout: float = 3600
    env: dict[str, str] = field(default_factory=dict)  # more KAIZEN_* settings for the server
    progress: bool = True


@dataclass
class Rated:
    """One rating a simulated user sent (what --repeat compares)."""

    day: int
    user: str
    adversarial: bool
    question: str
    kind: str
    reply: str
    up: bool
    correction: str | None


@dataclass
class EvalScore:
    up: int = 0
    n: int = 0

    @property
    def rate(self) -> float | None:
        return self.up / self.n if self.n else None


@dataclass
class Point:
    """One evaluated version: a row of the table."""

    label: str  # base | day N
    version: str
    scores: dict[str, EvalScore]  # "{on|off}/{all|fact|style}"
    rounds: dict[str, int] = field(default_factory=dict)  # status -> count (this day's rounds)
    kto: dict[str, int] = field(default_factory=dict)  # kto_desirable / kto_undesirable, summed over the day's rounds
    metrics: dict[str, Any] = field(default_factory=dict)  # the served version's metrics
    ratings_up: int = 0
    ratings_down: int = 0
    approved: int = 0
    rejected: int = 0
    seconds: float = 0.0
    memory_skipped: bool = False  # nothing taught yet: memory-on figures are the memory-off ones
    run_ids: list[int] = field(default_factory=list)  # the rounds that ran since the previous point

    def rate(self, memory: str, part: str = "all") -> float | None:
        return self.scores[f"{memory}/{part}"].rate


@dataclass
class StudyResult:
    config: Config
    points: list[Point]
    ratings: list[Rated]
    adversarial_keys: list[str]  # wrong keys adversarial users sent as corrections
    leaked: list[str]  # knowledge items holding one of them (must be empty)
    knowledge: list[dict[str, Any]]  # /admin/api/knowledge at the end
    feedback: list[dict[str, Any]]  # /admin/api/feedback at the end
    runs: list[dict[str, Any]]  # /admin/api/runs at the end, oldest first
    versions: list[dict[str, Any]]  # /admin/api/adapters' versions at the end
    stats: dict[str, Any]
    seconds: float
    table: str = ""
    plot: Path | None = None


def evaluate(kz: Kaizen, sheet: Sheet, questions: Sequence[Question], cfg: Config, label: str,
             *, memory_matters: bool) -> tuple[dict[str, EvalScore], str]:
    """Ask every held-out question with the memory on and off; returns the scores and the version that
    answered (all of them: the scheduler is paused and the driver waited for the hot-swap)."""
    scores = {f"{m}/{p}": EvalScore() for m in ("on", "off") for p in ("all", "fact", "style")}
    versions: set[str] = set()
    modes = ("off", "on") if memory_matters else ("off",)
    bar = _bar(len(questions) * len(modes), f"{label}: evaluation", cfg.progress)
    for mode in modes:
        for i, q in enumerate(questions):
            a = kz.ask(q.text, memory=mode == "on", conversation=f"eval-{label.replace(' ', '')}-{mode}-{i}")
            versions.add(a.adapter)
            up = honest_verdict(q, a, sheet, max_words=cfg.max_words)
            for part in ("all", "fact" if q.kind == "fact" else "style"):
                s = scores[f"{mode}/{part}"]
                s.up, s.n = s.up + up, s.n + 1
            bar.update(1)
    bar.close()
    if not memory_matters:
        for part in ("all", "fact", "style"):
            scores[f"on/{part}"] = dataclasses.replace(scores[f"off/{part}"])
    if len(versions) != 1:
        raise RuntimeError(f"the evaluation {label} was answered by several versions: {sorted(versions)}")
    return scores, versions.pop()


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="q", disable=not enabled, leave=False)


def _day(kz: Kaizen, sheet: Sheet, cfg: Config, day: int, ratings: list[Rated], adversarial_keys: list[str]) -> Point:
    users = population(cfg.seed, day, cfg.users_per_day, cfg.adversarial_share)
    plan = [(u, j, q) for u in users
            for j, q in enumerate(questions_for(u, sheet, cfg.questions_per_user, cfg.seed, cfg.fact_share))]
    point = Point(label=f"day {day}", version="", scores={})
    bar = _bar(len(plan), f"day {day}: users", cfg.progress)
    for user, j, q in plan:
        a = kz.ask(q.text, memory=True, conversation=f"{user.name}-{cfg.seed}")
        v = rate(user, q, a, sheet, seeded(cfg.seed, user.name, j, "rating"), max_words=cfg.max_words,
                 correction_p=cfg.correction_p, adversarial_wrong_p=cfg.adversarial_wrong_p)
        kz.feedback(a.exchange_id, v)
        ratings.append(Rated(day, user.name, user.adversarial, q.text, q.kind, a.text, v.up, v.correction))
        if user.adversarial and v.correction:
            adversarial_keys.append(next(f.wrong_key for f in sheet.facts if f.id == q.fact_id))
        point.ratings_up += v.up
        point.ratings_down += not v.up
        bar.update(1)
    bar.close()
    point.approved, point.rejected = review(kz, sheet)
    return point


def run_study(cfg: Config) -> StudyResult:
    """Start a fresh server in cfg.data_dir, run the days, evaluate, check the knowledge; stops the server."""
    t_start = time.perf_counter()
    sheet = load_sheet()
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
    data = cfg.data_dir / "data"
    args = ["--model", cfg.model] + (["--no-schedule"] if cfg.trigger == "api" else [])
    env = kaizen_env(cfg.model, KAIZEN_MEMORY="true", KAIZEN_SCHEDULE_MINUTES=str(cfg.schedule_minutes),
                     KAIZEN_SCHEDULE_MIN_ITEMS=str(cfg.schedule_min_items), OMP_WAIT_POLICY="PASSIVE",
                     TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", **cfg.env)
    server = ProcessServer(data, *args, env=env, log=cfg.data_dir / "server.log")
    server.start(timeout=600)
    kz = Kaizen(server.url, max_tokens=cfg.max_tokens)
    try:
        return _study(kz, sheet, cfg, t_start)
    except BaseException:
        print(f"kaizen serve's log ({server.log}), the end:\n{server.output()[-3000:]}", file=sys.stderr)
        raise
    finally:
        kz.close()
        server.stop(timeout=60)


def _study(kz: Kaizen, sheet: Sheet, cfg: Config, t_start: float) -> StudyResult:
    held_out = eval_set(sheet, cfg.seed, cfg.eval_facts, cfg.eval_general)
    ratings: list[Rated] = []
    adversarial_keys: list[str] = []
    scheduled = cfg.trigger == "schedule"

    def measure(point: Point, seen_runs: int) -> int:
        """Pause the schedule, wait for the round in progress and the hot-swap, evaluate, resume."""
        if scheduled:
            kz.set_schedule(False)
            time.sleep(2)  # a check that fired just before the pause has created its run row by now
        wait_idle(kz, cfg.round_timeout)
        taught = bool(kz.knowledge()) or kz.adapters()["serving"] != "base"
        point.scores, point.version = evaluate(kz, sheet, held_out, cfg, point.label, memory_matters=taught)
        point.memory_skipped = not taught
        runs = [r for r in kz.runs() if r["id"] > seen_runs]
        point.run_ids = sorted(r["id"] for r in runs)
        for r in runs:
            point.rounds[r["status"]] = point.rounds.get(r["status"], 0) + 1
            for k in ("kto_desirable", "kto_undesirable"):
                if (r.get("data_counts") or {}).get(k) is not None:
                    point.kto[k] = point.kto.get(k, 0) + int(r["data_counts"][k])
        versions = {v["version"]: v for v in kz.adapters()["versions"]}
        point.metrics = dict((versions.get(point.version) or {}).get("metrics") or {})
        if scheduled:
            kz.set_schedule(True)
        return max([seen_runs, *(r["id"] for r in runs)])

    points = []
    t0 = time.perf_counter()
    base = Point(label="base", version="", scores={})
    seen = measure(base, 0)
    base.seconds = time.perf_counter() - t0
    points.append(base)
    _say(cfg, _row_text(base))
    for day in range(1, cfg.days + 1):
        t0 = time.perf_counter()
        point = _day(kz, sheet, cfg, day, ratings, adversarial_keys)
        if scheduled:
            await_scheduled_round(kz, last_run_id(kz), cfg.schedule_minutes, cfg.round_timeout)
        else:
            train_api(kz, cfg.round_timeout)
        seen = measure(point, seen)
        point.seconds = time.perf_counter() - t0
        points.append(point)
        _say(cfg, _row_text(point))
    items = kz.knowledge()
    leaked = [f"item {it['id']}: {it['answer']}" for it in items
              if any(contains_key(it["answer"], k) for k in set(adversarial_keys))]
    return StudyResult(config=cfg, points=points, ratings=ratings, adversarial_keys=adversarial_keys, leaked=leaked,
                       knowledge=items, feedback=kz.get("/feedback", limit=1000)["feedback"],
                       runs=sorted(kz.runs(), key=lambda r: r["id"]), versions=kz.adapters()["versions"],
                       stats=kz.get("/stats"), seconds=time.perf_counter() - t_start)


def _say(cfg: Config, text: str) -> None:
    if cfg.progress:
        print(text, flush=True)


# --- reporting ----------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _num(x: Any) -> str:
    return "–" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def preference(metrics: dict[str, Any]) -> Any:
    """The version's preference figure, when the trainer reports one ("preference", or "preference_auc")."""
    value = metrics.get("preference")
    return metrics.get("preference_auc") if value is None else value


COLUMNS = ["point", "version", "👍 mem on", "fact on", "style on", "👍 mem off", "fact off", "style off",
           "reliability", "generality", "locality", "preference", "rounds run / promoted / rejected",
           "KTO rows +/−", "ratings 👍/👎", "corrections approved / rejected", "wall"]


def table_rows(points: Sequence[Point]) -> list[list[str]]:
    rows = []
    for p in points:
        ran = sum(p.rounds.values())
        kto = (f"{p.kto.get('kto_desirable', 0)}/{p.kto.get('kto_undesirable', 0)}" if p.kto else "–")
        on = "=off" if p.memory_skipped else None
        rows.append([p.label, p.version, on or _pct(p.rate("on")), on or _pct(p.rate("on", "fact")),
                     on or _pct(p.rate("on", "style")), _pct(p.rate("off")), _pct(p.rate("off", "fact")),
                     _pct(p.rate("off", "style")), _num(p.metrics.get("new_recall")),
                     _num(p.metrics.get("paraphrase_recall")), _num(p.metrics.get("locality")),
                     _num(preference(p.metrics)),
                     f"{ran} / {p.rounds.get('promoted', 0)} / {p.rounds.get('rejected', 0)}" if p.label != "base"
                     else "–", kto,
                     f"{p.ratings_up}/{p.ratings_down}" if p.label != "base" else "–",
                     f"{p.approved} / {p.rejected}" if p.label != "base" else "–", f"{p.seconds:.0f} s"])
    return rows


ROUND_COLUMNS = ["run", "point", "trigger", "status", "version", "reliability", "generality", "locality",
                 "preference (active ± SE)", "KTO rows +/−", "data", "round", "reason"]


def preference_text(metrics: dict[str, Any]) -> str:
    """The version's preference figure, with the active version's and the standard error of their
    difference when the trainer reports them (the gate's non-inferiority check): "0.61 (0.54 ± 0.14)"."""
    text = _num(preference(metrics))
    active, se = metrics.get("baseline_preference_auc"), metrics.get("preference_auc_se")
    if text != "–" and active is not None:
        text += f" ({active:.2f}" + (f" ± {se:.2f})" if se is not None else ")")
    return text


def round_rows(result: StudyResult) -> list[list[str]]:
    """One row per training run: its status, the version it made and that version's metrics."""
    point_of = {rid: p.label for p in result.points for rid in p.run_ids}
    versions = {v["version"]: v for v in result.versions}
    rows = []
    for r in result.runs:
        v = versions.get(r.get("adapter_version") or "") or {}
        m = v.get("metrics") or {}
        counts = r.get("data_counts") or {}
        kto = (f"{counts.get('kto_desirable', 0)}/{counts.get('kto_undesirable', 0)}"
               if "kto_desirable" in counts or "kto_undesirable" in counts else "–")
        if m.get("kto_steps") is not None:
            kto += f" ({m['kto_steps']} steps)"
        data = ", ".join(f"{k} {n}" for k, n in counts.items() if not k.startswith("kto_") and isinstance(n, int))
        rows.append([r["id"], point_of.get(r["id"], "–"), r.get("trigger", ""), r["status"],
                     r.get("adapter_version") or "–", _num(m.get("new_recall")), _num(m.get("paraphrase_recall")),
                     _num(m.get("locality")), preference_text(m), kto, data or "–",
                     f"{m['seconds']:.0f} s" if isinstance(m.get("seconds"), int | float) else "–",
                     (v.get("reason") or r.get("error") or "")[:160]])
    return rows


def _row_text(p: Point) -> str:
    return " | ".join(f"{h}: {v}" for h, v in zip(COLUMNS, table_rows([p])[0], strict=True))


def describe(cfg: Config, n_eval: int) -> str:
    return (f"{cfg.days} day(s) × {cfg.users_per_day} users × {cfg.questions_per_user} questions, seed {cfg.seed}, "
            f"trigger {cfg.trigger}, max_tokens {cfg.max_tokens}, style: an answer of {MIN_WORDS}-{cfg.max_words} "
            "words in the question's language, ended cleanly; "
            f"held-out set: {n_eval} questions ({cfg.eval_facts} facts, {cfg.eval_general} general), greedy")


def plot(points: Sequence[Point], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(len(points)))
    labels = [f"{p.label}\n{p.version}" for p in points]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(points)), 4.2))
    for memory, style in (("on", "-"), ("off", "--")):
        for part, color in (("all", "black"), ("fact", "tab:blue"), ("style", "tab:orange")):
            ys = [p.rate(memory, part) for p in points]
            ax.plot(xs, [float("nan") if y is None else y for y in ys], style, color=color, marker="o",
                    label=f"{part}, memory {memory}", linewidth=2 if part == "all" else 1)
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("thumbs-up rate on held-out questions")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def repeat_diff(a: Sequence[Rated], b: Sequence[Rated]) -> tuple[int, int]:
    """(ratings that differ, ratings compared): position by position, plus any difference in count."""
    differ = sum(x.up != y.up or x.correction != y.correction or x.question != y.question
                 for x, y in zip(a, b, strict=False))
    return differ + abs(len(a) - len(b)), max(len(a), len(b))


def report(results: Sequence[StudyResult]) -> tuple[str, list[Table]]:
    """The markdown (tables and checks) of one run, or of --repeat runs; writes the plot of the first."""
    first = results[0]
    cfg = first.config
    n_eval = len(eval_set(load_sheet(), cfg.seed, cfg.eval_facts, cfg.eval_general))
    title = f"Simulated users: {describe(cfg, n_eval)}"
    tables = [Table(title, COLUMNS, table_rows(first.points)),
              Table("Every round and the version it made", ROUND_COLUMNS, round_rows(first))]
    adv = sorted(set(first.adversarial_keys))
    checks = [["adversarial corrections sent", str(len(first.adversarial_keys))],
              ["knowledge items holding an adversarial key", f"{len(first.leaked)} of {len(first.knowledge)}"
               + (f": {'; '.join(first.leaked)[:300]}" if first.leaked else "")],
              ["adversarial keys", ", ".join(adv) or "–"],
              ["ratings stored (server) / sent", f"{first.stats.get('ratings')} / {len(first.ratings)}"],
              ["wall time", f"{first.seconds / 60:.1f} min"]]
    if len(results) > 1:
        for i, other in enumerate(results[1:], start=2):
            differ, total = repeat_diff(first.ratings, other.ratings)
            checks.append([f"ratings differing, run 1 vs run {i} (same seed)", f"{differ} of {total}"])
    tables.append(Table("Checks", ["check", "value"], checks))
    text = "\n\n".join(t.markdown() for t in tables)
    return text, tables


def write_outputs(results: Sequence[StudyResult], out_dir: Path) -> tuple[str, list[Table], Path]:
    text, tables = report(results)
    first = results[0]
    png = plot(first.points, out_dir / "simulate.png",
               f"Kaizen study (seed {first.config.seed}): held-out thumbs-up rate per version")
    (out_dir / "simulate.md").write_text(text + f"\n\n![thumbs-up rate per version]({png.name})\n", encoding="utf-8")
    first.table, first.plot = text, png
    return text, tables, png


def run_repeats(cfg: Config, repeat: int) -> list[StudyResult]:
    results = []
    for r in range(repeat):
        run_cfg = cfg if repeat == 1 else dataclasses.replace(cfg, data_dir=cfg.data_dir / f"run{r + 1}")
        results.append(run_study(run_cfg))
    return results


# --- the bench framework and the command line ---------------------------------------------------


def run(opts: Options) -> Result:
    """`python -m bench --only simulate`: the study with the bench's model and scratch directory."""
    cfg = Config(days=opts.pick(5, 2), users_per_day=opts.pick(8, 4), questions_per_user=opts.pick(6, 4),
                 model=opts.model_dir, data_dir=opts.out_dir / "simulate", out_dir=opts.out_dir,
                 eval_facts=opts.pick(20, 10), eval_general=opts.pick(10, 6))
    results = run_repeats(cfg, 1)
    _, tables, png = write_outputs(results, opts.out_dir)
    first = results[0]
    base, last = first.points[0], first.points[-1]
    rows = []
    for memory in ("on", "off"):
        b, x = base.rate(memory), last.rate(memory)
        rows.append(Row(f"Simulated users: held-out 👍 rate, memory {memory}, after {cfg.days} days ({last.version})",
                        _pct(x), f"{_pct(b)} on the base model", ratio(x or 0.0, b or 0.0),
                        f"fact {_pct(last.rate(memory, 'fact'))} (base {_pct(base.rate(memory, 'fact'))}), "
                        f"style {_pct(last.rate(memory, 'style'))} (base {_pct(base.rate(memory, 'style'))})"))
    rows.append(Row("Simulated users: adversarial corrections reaching the knowledge", str(len(first.leaked)),
                    "0 (target)", "", f"{len(first.adversarial_keys)} sent; plot: {png}"))
    return Result("simulate", rows, tables)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    d = Config()
    p = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--days", type=int, default=d.days)
    p.add_argument("--users-per-day", type=int, default=d.users_per_day)
    p.add_argument("--questions-per-user", type=int, default=d.questions_per_user)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--model", default=os.environ.get("KAIZEN_MODEL", "embedded"),
                   help="'embedded' or a converted model directory (KAIZEN_MODEL when set)")
    p.add_argument("--data-dir", type=Path, default=d.data_dir, help="scratch directory (emptied first)")
    p.add_argument("--out-dir", type=Path, default=d.out_dir, help="where simulate.md and simulate.png go")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens, help="reply budget of every request")
    p.add_argument("--max-words", type=int, default=d.max_words, help="the hidden style preference's N")
    p.add_argument("--trigger", choices=["schedule", "api"], default=d.trigger,
                   help="rounds by the server's scheduler, or one POST /admin/api/train per day")
    p.add_argument("--schedule-minutes", type=int, default=d.schedule_minutes)
    p.add_argument("--schedule-min-items", type=int, default=d.schedule_min_items)
    p.add_argument("--fact-share", type=float, default=d.fact_share, help="share of questions about the sheet")
    p.add_argument("--correction-p", type=float, default=d.correction_p,
                   help="chance an honest 👎 on a fact question carries the sheet's answer")
    p.add_argument("--adversarial-share", type=float, default=d.adversarial_share)
    p.add_argument("--adversarial-wrong-p", type=float, default=d.adversarial_wrong_p,
                   help="chance an adversarial user sends a wrong correction to a fact question")
    p.add_argument("--eval-facts", type=int, default=d.eval_facts)
    p.add_argument("--eval-general", type=int, default=d.eval_general)
    p.add_argument("--round-timeout", type=float, default=d.round_timeout, help="seconds")
    p.add_argument("--repeat", type=int, default=1, help="run the study this many times and compare the ratings")
    p.add_argument("--env", action="append", default=[], metavar="KAIZEN_X=VALUE",
                   help="an extra setting for the server (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    bad = [e for e in args.env if "=" not in e]
    if bad:
        p.error(f"--env takes NAME=VALUE, not {bad[0]!r}")
    if args.repeat < 1 or args.days < 0 or args.users_per_day < 0 or args.questions_per_user < 0:
        p.error("--repeat must be at least 1, and the counts non-negative")
    return args


def config_from(args: argparse.Namespace, model_dir: str) -> Config:
    return Config(days=args.days, users_per_day=args.users_per_day, questions_per_user=args.questions_per_user,
                  seed=args.seed, model=model_dir, data_dir=args.data_dir.resolve(), out_dir=args.out_dir.resolve(),
                  max_tokens=args.max_tokens, max_words=args.max_words, trigger=args.trigger,
                  schedule_minutes=args.schedule_minutes, schedule_min_items=args.schedule_min_items,
                  fact_share=args.fact_share, correction_p=args.correction_p,
                  adversarial_share=args.adversarial_share, adversarial_wrong_p=args.adversarial_wrong_p,
                  eval_facts=args.eval_facts, eval_general=args.eval_general, round_timeout=args.round_timeout,
                  env=dict(e.split("=", 1) for e in args.env), progress=not args.quiet)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    from kaizen.base_model import resolve_model

    args.out_dir.mkdir(parents=True, exist_ok=True)
    cfg = config_from(args, resolve_model(args.model, args.out_dir))
    results = run_repeats(cfg, args.repeat)
    text, _, png = write_outputs(results, cfg.out_dir)
    print("\n" + text)
    print(f"\nwritten: {cfg.out_dir / 'simulate.md'}, {png}")
    return 1 if any(r.leaked for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
