"""Curiosity: the "to teach" queue of questions Kaizen could not answer well, ranked by how often
they were asked, and follow-up questions it proposes itself from what it was taught.

A user's question becomes a candidate when Kaizen answered it itself (not from memory) and
- it was rated 👎 without a correction (a correction goes through review instead), or
- the model's confidence was low: the mean log-probability per reply token (`exchanges.confidence`,
  nats) is below `Settings.curiosity_min_confidence`, calibrated on a labelled set (bench/confidence.py), or
- the reply says it does not know (`says_unsure`: "I don't know", "mình không biết", the fallback's
  "Xin lỗi, mình chưa có câu trả lời tốt…").

Candidates are grouped: the same question up to case, spacing and diacritics (`kaizen.text.fold` of
`question_key`) is one group; beyond that, a question joins the group of the most asked question whose
multilingual-e5 embedding (the memory's cross-lingual embedder) is at least `GROUP_COSINE` close, never
by a chain of pairs. A merge hides a question, a split only shows two rows, so the bar is high. A group
the memory now answers with confidence (`known`: a verbatim match, or a hit at the memory's verbatim
threshold; a weak context match to some other item does not count) leaves the queue; so does one the
admin dismissed. Groups are ranked by how many times they were asked, then by how recently.

Proposed questions: for a taught item, the serving model is asked what else someone would ask about
it (`FOLLOW_UP_PROMPT`, greedy); each line that is a question, not known yet and not a duplicate is
stored as a proposed question (`curious_questions`, origin "proposed") and joins the queue after
the asked ones.

Answering a group stores the answer as approved knowledge (origin "curiosity"): the memory serves it
at once and the next round learns it, and its question leaves the queue because the memory now knows
it; any other phrasing of the group the memory does not match stays.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bot.fallback import NO_ANSWER
from bot.memory import Embedder
from bot.recall import KnowledgeRecall
from feedback_db import store
from feedback_db.db import Database
from feedback_db.models import Exchange, Feedback, KnowledgeItem
from kaizen.errors import InputError, NotFoundError
from kaizen.text import fold, question_key, question_lines

log = logging.getLogger(__name__)

# Cosine (multilingual-e5-small, "query: " on both sides) at which a question joins a group's leader.
# Measured on a made-up bakery's questions (a trial merged them at 0.94): different questions sharing
# the shop's name score up to 0.970 ("When does Hoa Mai bakery open?" / "Where is Hoa Mai bakery
# located?"), while close paraphrases score 0.986-0.994 ("Tiệm bánh Hoa Mai mở cửa lúc mấy giờ?" /
# "Mấy giờ thì tiệm bánh Hoa Mai mở cửa?" 0.986). Looser paraphrases (0.956, "What is the warranty
# period?" / "How long is the warranty?") stay apart: a split shows two rows, a merge hides a question.
GROUP_COSINE = 0.98
MAX_PHRASINGS = 5  # phrasings shown per group
LOOKED_UP = "looked_up"  # curious_questions.origin of a question looked up on Wikipedia (open: still queued)
# Distinct questions (folded keys) grouped per call, the most asked (then newest) first: embedding one
# costs ~26 ms the first time (cached after), so the first look at a long history stays ~10 s at most.
MAX_KEYS = 400

REASONS = {"down": "👎 without a correction", "low_confidence": "low confidence", "unsure": "said it did not know"}


def known_by(recall: KnowledgeRecall) -> Callable[[str], bool]:
    """`known` for a `KnowledgeRecall`: the memory answers verbatim, or its best hit reaches the verbatim
    threshold (bot/memory.py: the strongest untaught questions score about 0.75). A weak context match,
    often to another item about the same shop, is not an answer."""
    def known(question: str) -> bool:
        found = recall.recall(question)
        bar = recall.memory.thresholds.verbatim
        return found.source == "memory" or bool(found.hits and found.hits[0].score >= bar)
    return known

# Replies that say the model does not know, in English and Vietnamese (folded, lower-case).
_UNSURE = re.compile("|".join([
    r"\bi (?:do not|don't|dont) (?:know|have (?:any |enough )?(?:information|details|data))",
    r"\bi(?:'m| am) not (?:sure|certain|aware)", r"\bi (?:cannot|can't|can not) (?:answer|say|tell|find)",
    r"\bi have no (?:information|idea|details|data)", r"\bno information (?:about|on)",
    r"\b(?:minh|toi|em) (?:khong|chua) (?:biet|ro|chac|co thong tin|co cau tra loi)",
    r"\bkhong co thong tin", r"\bchua co thong tin", r"\bxin loi,? (?:minh|toi|em) khong",
    *[re.escape(fold(text).casefold().rstrip(".")) for text in NO_ANSWER.values()],
]))

FOLLOW_UP_PROMPT = (
    "A customer learned this:\nQ: {question}\nA: {answer}\n\n"
    "Write {n} different short questions the same customer is likely to ask next about this topic, "
    "in the language of the question above, one per line, each ending with a question mark."
)


def says_unsure(reply: str) -> bool:
    """Whether a reply says it does not know ("I'm not sure…", "Mình không biết…", the fallback)."""
    return bool(_UNSURE.search(fold(reply).casefold()))


def group_key(question: str) -> str:
    """The key two questions share when they are the same up to case, spacing and diacritics."""
    return fold(question_key(question))


@dataclass
class ToTeach:
    """One group of the "to teach" queue. `keys` are its members' `group_key`s (what dismissing or
    answering marks), `count` the times it was asked (0 for a proposed question)."""

    question: str  # the most asked phrasing
    count: int
    origin: str  # asked | proposed
    keys: list[str]
    phrasings: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)  # REASONS key -> exchanges
    last_asked: dt.datetime | None = None
    from_item_id: int | None = None  # the taught item a proposed question follows

    @property
    def key(self) -> str:
        """The group's identity in the admin tab and the REST API: its first member's key."""
        return self.keys[0]


@dataclass
class _Candidate:
    question: str
    key: str
    reasons: set[str]
    at: dt.datetime | None
    origin: str = "asked"
    item_id: int | None = None


class Curiosity:
    """The queue over the database. `known(question)` says whether the memory answers a question with
    confidence (None: nothing is known), `embedder` the cross-lingual embedder for grouping (None: group
    by key only), `generate` the serving model's greedy completion of a chat (None: no proposals)."""

    def __init__(self, db: Database, *, min_confidence: float, known: Callable[[str], bool] | None = None,
                 embedder: Embedder | None = None,
                 generate: Callable[[list[dict[str, str]]], str] | None = None, scan_limit: int = 5000) -> None:
        self.db, self.min_confidence, self.known = db, min_confidence, known
        self.embedder, self.generate, self.scan_limit = embedder, generate, scan_limit

    # --- the queue --------------------------------------------------------------------------------

    def reasons(self, ex: Exchange, fb: Feedback | None) -> set[str]:
        """Why an exchange makes its question a candidate (empty: it does not)."""
        if fb is not None and fb.correction:
            return set()  # a correction is on its way through review
        why = set()
        if fb is not None and fb.rating == "down":
            why.add("down")
        if ex.confidence is not None and ex.confidence < self.min_confidence:
            why.add("low_confidence")
        if says_unsure(ex.bot_text):
            why.add("unsure")
        return why

    def queue(self, limit: int = 50) -> list[ToTeach]:
        """The ranked "to teach" queue: asked groups by count, then by last asked; then proposed ones."""
        out: list[ToTeach] = []
        for group in self._ranked():  # the memory is asked only until the page is full
            if len(out) == limit:
                break
            if not self._known(group.question):
                out.append(group)
        return out

    def _ranked(self) -> list[ToTeach]:
        """Every open group, ranked, known or not (the memory is not asked here)."""
        with self.db.session() as s:
            rows = store.curiosity_exchanges(session=s, limit=self.scan_limit)
            stored = store.list_curious_questions(session=s)
            candidates = [_Candidate(ex.user_text, group_key(ex.user_text), why, ex.created_at)
                          for ex, fb in rows if (why := self.reasons(ex, fb))]
        closed = {q.key for q in stored if q.status != "open"}
        candidates += [_Candidate(q.question, q.key, set(), q.created_at, "proposed", q.item_id)
                       for q in stored if q.status == "open" and q.origin == "proposed"]
        candidates = _most_asked([c for c in candidates if c.key not in closed], MAX_KEYS)
        groups = self._group(candidates)
        groups.sort(key=lambda g: (g.origin != "asked", -g.count,
                                   -(g.last_asked.timestamp() if g.last_asked else 0.0)))
        return groups

    def _known(self, question: str) -> bool:
        return self.known is not None and self.known(question)

    def _group(self, candidates: Sequence[_Candidate]) -> list[ToTeach]:
        """Group by key, then join each key (most asked first) to the closest leader at GROUP_COSINE or
        more (leader clustering: no chains), comparing the phrasings that name them."""
        by_key: dict[str, list[_Candidate]] = {}
        for c in candidates:
            by_key.setdefault(c.key, []).append(c)
        keys = sorted(by_key, key=lambda k: -sum(c.origin == "asked" for c in by_key[k]))
        leaders: list[int] = []
        members: dict[int, list[str]] = {}
        vectors = (self.embedder.encode([_name(by_key[k]) for k in keys])
                   if self.embedder is not None and len(keys) > 1 else None)
        for i, key in enumerate(keys):
            best = -1
            if vectors is not None and leaders:
                sims = vectors[leaders] @ vectors[i]
                j = int(np.argmax(sims))
                best = leaders[j] if sims[j] >= GROUP_COSINE else -1
            if best < 0:
                leaders.append(i)
                members[i] = [key]
            else:
                members[best].append(key)
        return [self._summarize([by_key[k] for k in ks]) for ks in members.values()]

    @staticmethod
    def _summarize(parts: list[list[_Candidate]]) -> ToTeach:
        flat = [c for part in parts for c in part]
        asked = [c for c in flat if c.origin == "asked"]
        reasons: dict[str, int] = {}
        for c in asked:
            for r in c.reasons:
                reasons[r] = reasons.get(r, 0) + 1
        times = [c.at for c in asked if c.at is not None]
        proposed = next((c for c in flat if c.origin == "proposed"), None)
        return ToTeach(question=_name(flat), count=len(asked), origin="asked" if asked else "proposed",
                       keys=[part[0].key for part in parts], phrasings=_phrasings(flat)[:MAX_PHRASINGS],
                       reasons=reasons, last_asked=max(times) if times else None,
                       from_item_id=proposed.item_id if proposed else None)

    def find(self, key: str) -> ToTeach:
        """The queue's group with `key` among its members. Raises NotFoundError (also when the memory
        now answers it). Only that group is checked against the memory."""
        group = next((g for g in self._ranked() if key in g.keys), None)
        if group is not None and not self._known(group.question):
            return group
        raise NotFoundError(f"No question with key {key!r} is waiting to be taught.")

    # --- actions ----------------------------------------------------------------------------------

    def answer(self, key: str, answer: str, *, question: str | None = None) -> KnowledgeItem:
        """Teach the group `key`: its question (or `question`) with `answer` becomes approved knowledge,
        served by the memory at once and learned by the next round. Raises NotFoundError, InputError."""
        group = self.find(key)
        answer = answer.strip()
        if not answer:
            raise InputError("Write the answer first.")
        with self.db.write() as s:
            return store.add_knowledge(session=s, question=(question or group.question).strip(), answer=answer,
                                       origin="curiosity")

    def looked_up(self) -> set[str]:
        """Keys of questions already looked up on Wikipedia (whatever came of it)."""
        with self.db.session() as s:
            return {q.key for q in store.list_curious_questions(session=s, origin=LOOKED_UP)}

    def mark_looked_up(self, group: ToTeach, item_id: int | None) -> None:
        """Remember that `group` was looked up (item_id: the pending item it gave, None: nothing found).
        The group stays in the queue: the answer is not approved yet."""
        with self.db.write() as s:
            for key in group.keys:
                store.add_curious_question(session=s, question=group.question, key=key, origin=LOOKED_UP,
                                           item_id=item_id)

    def dismiss(self, key: str) -> ToTeach:
        """Take the group `key` off the queue for good (its phrasings stay off). Raises NotFoundError."""
        group = self.find(key)
        with self.db.write() as s:
            store.set_curious_status(session=s, keys=group.keys, status="dismissed", question=group.question)
        return group

    def propose(self, items: Iterable[KnowledgeItem], *, per_item: int = 3,
                progress: Callable[[int, int], None] | None = None) -> tuple[list[str], dict[str, int]]:
        """Ask the model for follow-up questions to each of `items`; store the new ones (a question, not
        known, not already waiting or dismissed). Returns them and why the other lines were dropped.
        Raises InputError without a model."""
        if self.generate is None:
            raise InputError("No model is loaded in this process to propose questions.")
        items = list(items)
        with self.db.session() as s:
            seen = {q.key for q in store.list_curious_questions(session=s)}
            seen |= {group_key(i.question) for i in store.list_knowledge(session=s)}
        added: list[tuple[str, str, int]] = []
        dropped: dict[str, int] = {}

        def drop(reason: str) -> None:
            dropped[reason] = dropped.get(reason, 0) + 1

        for n, item in enumerate(items, start=1):
            prompt = FOLLOW_UP_PROMPT.format(question=item.question, answer=item.answer, n=per_item)
            lines = question_lines(self.generate([{"role": "user", "content": prompt}]))[:per_item]
            if not lines:
                drop("the model wrote no question")
            for line in lines:
                key = group_key(line)
                if key in seen:
                    drop("taught, waiting or dismissed already")
                elif self._known(line):
                    drop("the memory answers it")
                else:
                    seen.add(key)
                    added.append((line, key, item.id))
            if progress is not None:
                progress(n, len(items))
        with self.db.write() as s:
            for line, key, item_id in added:
                store.add_curious_question(session=s, question=line, key=key, origin="proposed", item_id=item_id)
        return [line for line, _, _ in added], dropped


def _most_asked(candidates: Sequence[_Candidate], n: int) -> list[_Candidate]:
    """The candidates of the `n` keys asked most often (then most recently); proposed ones count 0."""
    by_key: dict[str, list[_Candidate]] = {}
    for c in candidates:
        by_key.setdefault(c.key, []).append(c)

    def rank(key: str) -> tuple[int, float]:
        asked = [c for c in by_key[key] if c.origin == "asked"]
        newest = max((c.at.timestamp() for c in by_key[key] if c.at is not None), default=0.0)
        return -len(asked), -newest

    keep = set(sorted(by_key, key=rank)[:n])
    return [c for c in candidates if c.key in keep]


def _phrasings(candidates: Sequence[_Candidate]) -> list[str]:
    """The distinct phrasings (up to surrounding spaces), most asked first, then the oldest."""
    counts: dict[str, int] = {}
    for c in sorted(candidates, key=lambda c: c.at or dt.datetime.min):
        text = " ".join(c.question.split())
        counts[text] = counts.get(text, 0) + 1
    return sorted(counts, key=lambda t: -counts[t])


def _name(candidates: Sequence[_Candidate]) -> str:
    """The phrasing that names a group: the most asked one, preferring one written with diacritics and
    not in capitals (what an admin would write), then the oldest."""
    phrasings = _phrasings(candidates)
    order = {t: i for i, t in enumerate(phrasings)}
    return min(phrasings, key=lambda t: (fold(t) == t, t.isupper(), order[t]))


class PeriodicJob:
    """Calls `job()` every `interval_s` seconds on a daemon thread until `stop()` (the first call after
    one interval). An exception is logged and the next call still comes: a failed lookup must not stop
    the next one."""

    def __init__(self, job: Callable[[], object], interval_s: float, name: str = "kaizen-job") -> None:
        self.job, self.interval_s = job, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> PeriodicJob:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.job()
            except Exception:  # a background job reports and carries on
                log.exception("%s failed", self._thread.name)
