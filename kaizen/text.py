"""Text folding shared by every layer: diacritics, question keys and answer comparison.

Vietnamese users type with or without diacritics ("giờ mở cửa" / "gio mo cua"), and keyboards
differ in composed or combining accents. These functions are the one place that decides when two
texts count as the same: the retrieval memory, the emotion reader, the importer's duplicate check,
the dataset builder and the gate's exact recall all use them.
"""

from __future__ import annotations

import re
import unicodedata

_SURROUNDING = " \t\r\n\"'`“”‘’«».,;:!?¡¿…()[]{}-–—*_"
_SPACE = re.compile(r"\s+")


def fold(text: str) -> str:
    """Remove diacritics, NFC: "Xin chào, Đà Nẵng" -> "Xin chao, Da Nang".

    đ/Đ are mapped by hand: Unicode does not decompose them. Case is kept.
    """
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if unicodedata.category(c) != "Mn"))


# Words that open a question leaning on the turn before it ("And on Sunday?", "Còn chủ nhật?").
FOLLOW_UP_OPENERS = (
    "and", "what about", "how about", "also", "then", "or", "and what about",
    "còn", "vậy còn", "thế còn", "và", "thế", "vậy", "rồi", "hay", "cái đó", "nó",
)


def is_follow_up(question: str) -> bool:
    """Whether a question leans on the turn before it: it opens with a follow-up word
    (FOLLOW_UP_OPENERS, English or Vietnamese, diacritics kept: "còn" is not "con") or has at most
    two words ("Chủ nhật?", "And Sunday?"). A standalone question of three words or more without
    such an opener ("Số điện thoại?") is not one."""
    words = question_key(question).rstrip(",").split()
    if len(words) <= 2:
        return True
    text = " ".join(words)
    return any(text == o or text.startswith((o + " ", o + ",")) for o in FOLLOW_UP_OPENERS)


def question_key(question: str) -> str:
    """The form under which two questions count as duplicates: NFC, casefolded, single spaces,
    without trailing question marks or full stops (diacritics are kept: "ban" is not "bán")."""
    collapsed = " ".join(unicodedata.normalize("NFC", question).casefold().split())
    return collapsed.rstrip("?!.？！。 ")


def normalize_answer(text: str) -> str:
    """Casefold, NFC, collapse whitespace and strip surrounding punctuation and quotes; two answers
    are "exactly" the same when their normalized forms are equal."""
    text = unicodedata.normalize("NFC", text).casefold()
    text = _SPACE.sub(" ", text)
    return text.strip(_SURROUNDING)


_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d+[.)]|Q:|Câu hỏi:|Question:)?\s*", re.IGNORECASE)


def question_lines(text: str) -> list[str]:
    """The questions in a model-written list: one per line, bullets, numbers and "Q:" removed, quotes
    stripped, ending with "?", 3 to 200 characters."""
    out = []
    for raw in text.splitlines():
        line = _LIST_MARKER.sub("", raw).strip().strip('"“”')
        if line.endswith(("?", "？")) and 3 <= len(line) <= 200:
            out.append(line)
    return out
