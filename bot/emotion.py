"""Tags each user message with an emotion, and turns the label into a tone for the system prompt.

English is scored by VADER (vaderSentiment 3.3.2), emoji included. VADER knows no Vietnamese,
so this module adds a phrase lexicon of Vietnamese sentiment expressions with valences on
VADER's -4..+4 scale, Vietnamese negators ("không tốt"), and intensifiers ("rất", "quá", "lắm").
Both feed one list of per-token valences that VADER's own "but" rule and compound score finish,
so mixed English/Vietnamese messages get a single score. That uses VADER's per-word methods
(`sentiment_valence`, `_but_check`, `score_valence`), so it is tied to vaderSentiment 3.3.2.
A few emoji that VADER's descriptions leave at 0 (👍, 😡) get valences of their own.

Vietnamese phrases match with and without diacritics. Folded syllables collide with English
words and with other Vietnamese words ("do" is both "dở" (bad) and "do" (because); "toi" is
"tôi" (I) and "tồi" (lousy)), so without diacritics multi-syllable phrases always match, a few
unambiguous single syllables match in a Vietnamese message, and a few more only right next to
an intensifier or negator ("te qua" = "tệ quá"). The reverse collision exists too: folded
Vietnamese words that are in VADER's lexicon ("ban" = "bạn", "ty" in "công ty") are not given
to VADER when the message is Vietnamese.

Try it: `.venv/bin/python -c "from bot.emotion import EmotionAnalyzer as E; print(E().analyze('tuyet voi'))"`
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass
from types import MappingProxyType

from vaderSentiment.vaderSentiment import (
    B_DECR,
    B_INCR,
    BOOSTER_DICT,
    C_INCR,
    N_SCALAR,
    SentimentIntensityAnalyzer,
    SentiText,
)

from kaizen.text import fold

POSITIVE_THRESHOLD = 0.05  # VADER's recommended cut-offs on the compound score
NEGATIVE_THRESHOLD = -0.05

# Valences on VADER's scale (its "good" is 1.9, "great" 3.1, "bad" -2.5, "disappointed" -2.1).
# The 0.0 entries are compounds that contain a sentiment word but carry none; as longer matches
# they win over the word inside them ("xin lỗi" is an apology, not an error).
_LEXICON = MappingProxyType({
    # positive
    "tốt": 1.9, "tốt đẹp": 2.3, "tuyệt": 2.8, "tuyệt vời": 3.2, "tuyệt hảo": 3.1,
    "xuất sắc": 3.0, "hoàn hảo": 3.0, "cảm ơn": 1.9, "cám ơn": 1.9, "hài lòng": 2.0,
    "thích": 2.0, "yêu thích": 2.6, "yêu": 2.6, "vui": 2.0, "vui vẻ": 2.2, "vui mừng": 2.4,
    "mừng": 1.8, "chúc mừng": 2.4, "hạnh phúc": 2.8, "đẹp": 2.0, "đẹp trai": 2.0,
    "hay quá": 2.2, "hay lắm": 2.2, "thú vị": 2.0, "hấp dẫn": 2.0, "ổn": 1.0, "ổn áp": 1.8,
    "nhanh": 0.9, "nhanh chóng": 1.0, "hữu ích": 1.9, "có ích": 1.5, "tiện lợi": 1.8,
    "dễ thương": 2.2, "dễ chịu": 1.8, "dễ dàng": 1.2, "dễ sử dụng": 1.6, "tận tình": 2.0,
    "chu đáo": 2.0, "nhiệt tình": 2.0, "thân thiện": 2.0, "lịch sự": 1.5, "chuyên nghiệp": 1.8,
    "giỏi": 2.0, "xịn": 2.0, "đỉnh": 2.5, "ngon": 2.0, "yên tâm": 1.5, "an tâm": 1.5,
    "ấn tượng": 1.8, "đáng tiền": 2.0, "uy tín": 1.8, "tin tưởng": 1.6, "ủng hộ": 1.5,
    "mượt": 1.5, "rẻ": 1.0, "sạch sẽ": 1.5, "may mắn": 2.0, "tự hào": 2.2, "thoải mái": 1.8,
    "buồn cười": 1.0,
    # negative
    "tệ": -2.5, "tệ hại": -2.8, "tồi": -2.3, "tồi tệ": -2.8, "dở": -2.0, "dở tệ": -2.8,
    "chán": -1.9, "chán nản": -2.2, "nhàm chán": -1.8, "chán ngấy": -2.2, "chán đời": -2.5,
    "bực": -2.0, "bực mình": -2.2, "bực bội": -2.2, "khó chịu": -2.0, "thất vọng": -2.4,
    "lỗi": -1.5, "bị lỗi": -1.8, "chậm": -1.5, "chậm chạp": -1.8, "chậm trễ": -1.9,
    "chờ lâu": -1.6, "đợi lâu": -1.6, "buồn": -2.0, "buồn bã": -2.2, "giận": -2.2,
    "tức giận": -2.5, "ghét": -2.5, "kém": -1.8, "kém chất lượng": -2.3, "chất lượng kém": -2.3, "yếu": -1.5,
    "hỏng": -1.8, "lừa đảo": -3.0, "kinh khủng": -3.0, "khủng khiếp": -3.0, "phiền": -1.5,
    "phiền phức": -1.8, "mệt": -1.5, "mệt mỏi": -1.8, "đau": -1.8, "sợ": -1.8,
    "lo lắng": -1.8, "vô dụng": -2.5, "rác": -2.0, "hối hận": -2.0, "đắt": -1.2,
    "thô lỗ": -2.3, "mất lịch sự": -2.0, "vô lý": -1.8, "cẩu thả": -2.0, "rắc rối": -1.6,
    "thảm họa": -2.8, "lãng phí": -1.8, "khó hiểu": -1.2, "không ổn": -1.5,
    "không ra gì": -2.2, "chẳng ra gì": -2.2, "chả ra gì": -2.2, "không thể chấp nhận": -2.8,
    # no sentiment
    "xin lỗi": 0.0, "sửa lỗi": 0.0, "yêu cầu": 0.0, "vui lòng": 0.0, "làm ơn": 0.0, "tốt nghiệp": 0.0,
    "buồn ngủ": 0.0, "thùng rác": 0.0, "không những": 0.0, "không chỉ": 0.0,
})

# Negators and the factor they multiply the following phrase's valence by.
_STRONG_NEGATION = -1.0
_NEGATORS = MappingProxyType({
    "không": N_SCALAR, "chẳng": N_SCALAR, "chả": N_SCALAR, "chưa": N_SCALAR, "đừng": N_SCALAR,
    "ko": N_SCALAR, "k": N_SCALAR, "hông": N_SCALAR, "hok": N_SCALAR,
    "không hề": _STRONG_NEGATION, "chẳng hề": _STRONG_NEGATION, "chả hề": _STRONG_NEGATION,
    "chưa hề": _STRONG_NEGATION, "không bao giờ": _STRONG_NEGATION,
    "hoàn toàn không": _STRONG_NEGATION,
})
# A negator reaches this many tokens ahead, as in VADER ("không được tốt", "chưa thật sự hài lòng").
_NEGATION_WINDOW = 3
# "không tốt lắm" (not that good) is milder than "không tốt": an intensifier after a negated
# phrase softens the negation instead of boosting it.
_SOFT_NEGATION = N_SCALAR / 2
# After a negated phrase these make the negation total: "không tốt chút nào" (not good at all).
_NEGATION_EMPHASIS = frozenset({"chút nào", "tí nào", "gì cả", "nào cả"})

_BOOSTERS_BEFORE = MappingProxyType({
    "rất": B_INCR, "quá": B_INCR, "cực": B_INCR, "cực kỳ": B_INCR, "cực kì": B_INCR,
    "siêu": B_INCR, "vô cùng": B_INCR, "thật": B_INCR, "thật sự": B_INCR, "thực sự": B_INCR,
    "hết sức": B_INCR, "rất là": B_INCR, "quá là": B_INCR, "hơi": B_DECR, "khá": B_DECR,
})
_BOOSTERS_AFTER = MappingProxyType({
    "lắm": B_INCR, "quá": B_INCR, "vô cùng": B_INCR, "cực kỳ": B_INCR, "cực kì": B_INCR,
    "nhất": B_INCR, "quá trời": B_INCR, "ghê": B_INCR, "cho lắm": B_INCR,
    "một chút": B_DECR, "một tí": B_DECR,
})

# Single syllables that may match without diacritics. Every other single syllable needs its
# diacritics; multi-syllable phrases always match folded.
# In a Vietnamese message these mean one thing only:
_FOLDED_ALONE = frozenset({
    "tot", "vui", "thich", "buon", "ghet", "tuyet", "ngon",
    "khong", "chua", "rat", "qua", "lam", "cuc", "sieu", "nhat", "kha",
})
# These have other common readings ("do" because, "te" numb, "chan" leg, "on" English), but
# next to an intensifier or negator ("te qua", "rat dep", "khong on") they are the sentiment word.
_FOLDED_NEXT_TO_MODIFIER = frozenset({"te", "do", "chan", "dep", "cham", "on", "gioi", "xin", "met", "buc"})

# Frequent Vietnamese words that are not English words. Two tokens that are such words or part
# of a Vietnamese phrase make a message without diacritics Vietnamese.
_VI_MARKERS = frozenset(
    "toi minh khong ko cua nay duoc dc voi nhung nhieu rat roi chua vay nhe nha oi gi thi cung "
    "nao gio cong giao pham dich vu hoi biet lam qua sao ban la".split()
)
# Folded Vietnamese words that VADER's lexicon scores as English ("ban" -2.6 is "bạn", you;
# "ty" 1.6, "thank you", is in "công ty", company). Ignored by VADER in a Vietnamese message.
_VADER_COLLISIONS = frozenset({"ban", "doa", "ha", "kia", "ly", "mia", "no", "po", "pu", "tia", "ty"})
# Emoji that VADER's English descriptions leave at 0 ("pouting face", "thumbs up").
_EMOJI = MappingProxyType({"👍": 1.8, "👎": -1.8, "😡": -2.5, "🤬": -2.8, "😤": -1.5, "🙏": 1.5, "💯": 2.0})
_CONTRAST = frozenset({"nhưng", "nhung"})  # "but", for VADER's but-rule
_PUNCTUATION = string.punctuation + "…“”‘’«»–—"
_CLAUSE_END = tuple(",.;:!?…")
# A clause that asks: it ends with "?", or (Vietnamese often drops the "?") with one of these words.
# Its positive words name what is asked about, not how the user feels ("What can you help me with?",
# "Đà Lạt có gì vui?", "Is it safe?" read as positive before, issue 13), so they do not count; its
# negative words still do ("Sao giao hàng chậm thế?" is a complaint).
_QUESTION_END = frozenset({"không", "chưa", "gì", "nào", "sao", "đâu", "nhỉ", "hả", "khong", "gi", "nao", "dau"})


@dataclass(frozen=True)
class Emotion:
    """The emotion read from one message."""

    label: str  # "positive" | "negative" | "neutral"
    score: float  # VADER compound score in [-1, 1]


@dataclass(frozen=True)
class _Span:
    """A Vietnamese vocabulary phrase found at tokens [start, end)."""

    start: int
    end: int
    phrase: str  # the canonical form, with diacritics
    folded_single: bool = False  # one syllable matched without diacritics
    needs_modifier: bool = False  # ... from _FOLDED_NEXT_TO_MODIFIER


class EmotionAnalyzer:
    """Scores messages in English, Vietnamese (with or without diacritics), or a mix of both."""

    def __init__(self) -> None:
        self._vader = SentimentIntensityAnalyzer()
        vocabulary = {*_LEXICON, *_NEGATORS, *_NEGATION_EMPHASIS, *_BOOSTERS_BEFORE, *_BOOSTERS_AFTER}
        self._max_len = max(len(p.split()) for p in vocabulary)
        self._phrases = frozenset(vocabulary)
        folded: dict[str, str] = {}
        for phrase in sorted(vocabulary):
            key = fold(phrase)
            if " " in key or key in _FOLDED_ALONE or key in _FOLDED_NEXT_TO_MODIFIER:
                folded.setdefault(key, phrase)
        self._folded = MappingProxyType(folded)
        # Most tokens start no phrase; checking the first syllable skips the n-gram joins.
        self._first_syllables = frozenset(p.split()[0] for p in [*self._phrases, *self._folded])
        # VADER scores emoji through their English descriptions; ours stay whole tokens.
        spelled = {ord(c): f" {d} " for c, d in self._vader.emojis.items() if len(c) == 1}
        self._emoji_table = spelled | {ord(c): f" {c} " for c in _EMOJI}

    def analyze(self, text: str) -> Emotion:
        text = unicodedata.normalize("NFC", text)
        text = text.translate(self._emoji_table)
        sentitext = SentiText(text)
        words = sentitext.words_and_emoticons
        keys = [w.lower().strip(_PUNCTUATION) for w in words]
        folded = [fold(k) for k in keys]
        spans = self._find_spans(keys, folded)
        vietnamese = self._is_vietnamese(keys, folded, spans)
        spans = self._keep_plausible(spans, vietnamese)

        span_at: list[_Span | None] = [None] * len(words)
        for found in spans:
            span_at[found.start:found.end] = [found] * (found.end - found.start)
        # VADER strips the punctuation off its words; the raw tokens still show where clauses end.
        clause_end = [t.endswith(_CLAUSE_END) or k in _CONTRAST for t, k in zip(text.split(), keys, strict=True)]

        sentiments: list[float] = []
        for i, word in enumerate(words):
            span = span_at[i]
            lower = word.lower()
            if span is not None:
                is_head = i == span.start and span.phrase in _LEXICON
                sentiments.append(self._phrase_valence(span, span_at, clause_end, sentitext) if is_head else 0.0)
            elif word in _EMOJI:
                sentiments.append(_EMOJI[word])
            elif (vietnamese and keys[i] in _VADER_COLLISIONS) or lower in BOOSTER_DICT or (
                    lower == "kind" and i + 1 < len(words) and words[i + 1].lower() == "of"):
                # Boosters and "kind of" only modify their neighbours (as in VADER's polarity_scores).
                sentiments.append(0.0)
            else:
                self._vader.sentiment_valence(0.0, sentitext, word, i, sentiments)

        asking = self._question_clauses(text.split(), keys, clause_end)
        sentiments = [0.0 if asks and v > 0 else v for v, asks in zip(sentiments, asking, strict=True)]
        marked = ["but" if k in _CONTRAST else w for w, k in zip(words, keys, strict=True)]
        sentiments = self._vader._but_check(marked, sentiments)
        score = self._vader.score_valence(sentiments, text)["compound"]
        if score >= POSITIVE_THRESHOLD:
            label = "positive"
        elif score <= NEGATIVE_THRESHOLD:
            label = "negative"
        else:
            label = "neutral"
        return Emotion(label=label, score=score)

    @staticmethod
    def _question_clauses(tokens: list[str], keys: list[str], clause_end: list[bool]) -> list[bool]:
        """For each word, whether its clause asks a question (`_QUESTION_END`)."""
        asking: list[bool] = []
        start = 0
        for i, end in enumerate(clause_end):
            if end or i == len(tokens) - 1:
                asks = tokens[i].endswith("?") or keys[i] in _QUESTION_END
                asking += [asks] * (i + 1 - start)
                start = i + 1
        return asking

    def _find_spans(self, keys: list[str], folded: list[str]) -> list[_Span]:
        """Greedy left-to-right longest match of the Vietnamese vocabulary, exact before folded."""
        spans: list[_Span] = []
        i = 0
        while i < len(keys):
            span = self._longest_match(keys, folded, i)
            if span is None:
                i += 1
            else:
                spans.append(span)
                i = span.end
        return spans

    def _longest_match(self, keys: list[str], folded: list[str], i: int) -> _Span | None:
        if keys[i] not in self._first_syllables and folded[i] not in self._first_syllables:
            return None
        for n in range(min(self._max_len, len(keys) - i), 0, -1):
            exact = " ".join(keys[i:i + n])
            if exact in self._phrases:
                return _Span(i, i + n, exact)
            phrase = self._folded.get(" ".join(folded[i:i + n]))
            if phrase is not None:
                single = n == 1
                return _Span(i, i + n, phrase, folded_single=single,
                             needs_modifier=single and folded[i] in _FOLDED_NEXT_TO_MODIFIER)
        return None

    @staticmethod
    def _is_vietnamese(keys: list[str], folded: list[str], spans: list[_Span]) -> bool:
        if any(k != f for k, f in zip(keys, folded, strict=True)):
            return True
        evidence = {i for i, f in enumerate(folded) if f in _VI_MARKERS}
        evidence.update(i for s in spans for i in range(s.start, s.end))
        return len(evidence) >= 2

    @staticmethod
    def _keep_plausible(spans: list[_Span], vietnamese: bool) -> list[_Span]:
        """Drop folded single syllables outside Vietnamese messages, and ambiguous ones with no modifier beside them."""
        spans = [s for s in spans if vietnamese or not s.folded_single]
        modifiers = [s for s in spans if s.phrase in _NEGATORS or s.phrase in _BOOSTERS_BEFORE
                     or s.phrase in _BOOSTERS_AFTER]
        edges = {m.start for m in modifiers} | {m.end for m in modifiers}
        return [s for s in spans if not s.needs_modifier or s.start in edges or s.end in edges]

    @staticmethod
    def _phrase_valence(span: _Span, span_at: list[_Span | None], clause_end: list[bool],
                        sentitext: SentiText) -> float:
        valence = _LEXICON[span.phrase]
        if valence == 0.0:
            return 0.0
        boost = 0.0
        negation = None
        # Look back for a negator and intensifiers, within the window and the clause, and
        # never past another sentiment phrase.
        for k in range(span.start - 1, max(span.start - 1 - _NEGATION_WINDOW, -1), -1):
            before = span_at[k]
            if clause_end[k] or (before is not None and before.phrase in _LEXICON):
                break
            if before is None or k != before.end - 1:  # count a multi-token span once
                continue
            if before.phrase in _NEGATORS and negation is None:
                negation = _NEGATORS[before.phrase]
            elif before.phrase in _BOOSTERS_BEFORE:
                boost += _BOOSTERS_BEFORE[before.phrase]
        # Intensifiers and negation emphasis directly after the phrase.
        emphasis = softened = False
        k = span.end
        while k < len(span_at) and not clause_end[k - 1]:
            after = span_at[k]
            if after is None:
                break
            if after.phrase in _NEGATION_EMPHASIS:
                emphasis = True
            elif after.phrase in _BOOSTERS_AFTER:
                boost += _BOOSTERS_AFTER[after.phrase]
                softened = softened or _BOOSTERS_AFTER[after.phrase] > 0
            else:
                break
            k = after.end

        words = sentitext.words_and_emoticons
        if sentitext.is_cap_diff and any(w.isupper() for w in words[span.start:span.end]):
            boost += C_INCR
        if negation is not None:
            if emphasis:
                negation = _STRONG_NEGATION
            elif softened and negation != _STRONG_NEGATION:
                negation = _SOFT_NEGATION
            return valence * negation
        return valence + boost if valence >= 0 else valence - boost
