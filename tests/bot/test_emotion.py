"""Tests for bot/emotion.py: labels on real English and Vietnamese sentences, negation and
intensifiers, folding without diacritics, collisions with English, and the tone sentences."""

from __future__ import annotations

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from bot import emotion
from bot.emotion import Emotion, EmotionAnalyzer
from kaizen.prompts import tone_instruction
from kaizen.text import fold

P, N, U = "positive", "negative", "neutral"

ENGLISH = [
    ("Thank you so much, this was really helpful!", P),
    ("I love how fast the new version is.", P),
    ("Great job, the answer was perfect.", P),
    ("I'm happy with the result, thanks!", P),
    ("Not bad at all, I'm impressed.", P),
    ("You are awesome 😍", P),
    ("This is the worst support I have ever had.", N),
    ("The app keeps crashing and I'm really frustrated.", N),
    ("I'm disappointed, the package arrived broken.", N),
    ("The service was not good at all.", N),
    ("I don't like this update.", N),
    ("Ugh, this is so annoying 😡", N),
    ("The food was good, but the service was terrible.", N),
    ("What time does the office open?", U),
    ("How do I reset my password?", U),
    ("The meeting is on Tuesday at 10am.", U),
    ("Can you explain how LoRA works?", U),
    ("My tot is asleep in the next room.", U),
]

VIETNAMESE = [
    # positive
    ("Cảm ơn bạn nhiều!", P),
    ("cam on ban nhieu nha", P),
    ("Dịch vụ rất tốt, tôi rất hài lòng", P),
    ("Sản phẩm tuyệt vời quá!", P),
    ("san pham tuyet voi, minh rat hai long", P),
    ("Nhân viên tư vấn nhiệt tình và thân thiện", P),
    ("Tôi thích ứng dụng này lắm", P),
    ("toi rat thich san pham nay", P),
    ("dich vu tot lam", P),
    ("Không tệ lắm", P),
    ("khong te lam", P),
    ("Giao hàng chậm nhưng sản phẩm rất tốt", P),
    ("Sản phẩm không những tốt mà còn rẻ", P),
    # negative
    ("Sản phẩm này không tốt", N),
    ("san pham nay khong tot", N),
    ("dich vu khong tot chut nao", N),
    ("Tôi rất thất vọng vì giao hàng chậm quá", N),
    ("toi rat that vong vi giao hang cham qua", N),
    ("Tôi chưa hài lòng với câu trả lời", N),
    ("Không hài lòng với dịch vụ", N),
    ("khong hai long voi dich vu", N),
    ("Ứng dụng bị lỗi liên tục, bực mình thật", N),
    ("app bi loi hoai, buc minh ghe", N),
    ("Nhân viên thô lỗ và mất lịch sự", N),
    ("Chán quá, chờ lâu mà không ai trả lời", N),
    ("Sản phẩm không đáng tiền chút nào", N),
    ("giao hang cham qua, te qua", N),
    ("san pham do qua", N),
    # neutral
    ("Công ty mở cửa lúc mấy giờ?", U),
    ("cong ty mo cua luc may gio?", U),
    ("Xin lỗi, cho tôi hỏi giá của sản phẩm này", U),
    ("Tôi vừa tốt nghiệp đại học năm ngoái", U),
    ("Vui lòng gửi hóa đơn cho tôi", U),
    ("Bạn tên là gì?", U),
    ("ban ten la gi?", U),
    ("hom nay troi mua", U),
    ("Làm sao để đổi mật khẩu?", U),
    ("Toi den muon do ket xe", U),  # "do" is "because" here, not "dở" (bad)
]

MIXED = [
    ("The app is tuyệt vời 😍", P),
    ("thanks, dich vu tot lam", P),
    ("Sản phẩm ok nhưng giao hàng chậm quá", N),
    ("Service tệ quá 😡", N),
]


@pytest.fixture(scope="module")
def analyzer() -> EmotionAnalyzer:
    return EmotionAnalyzer()


def score(analyzer: EmotionAnalyzer, text: str) -> float:
    return analyzer.analyze(text).score


@pytest.mark.parametrize(("text", "label"), ENGLISH + VIETNAMESE + MIXED)
def test_labels_real_sentences(analyzer, text, label):
    result = analyzer.analyze(text)
    assert isinstance(result, Emotion)
    assert -1.0 <= result.score <= 1.0
    assert result.label == label, f"{text!r} scored {result.score}"


@pytest.mark.parametrize("text", [t for t, _ in ENGLISH if not set(t) & set(emotion._EMOJI)] + [
    "The city will ban plastic bags next year.",
    "I have no idea what to do with it.",
    "Top quality, true story.",
    "Kind of good, but not great!!",
])
def test_english_scores_exactly_as_vader(analyzer, text):
    """Apart from the few emoji we add, English goes through VADER untouched."""
    assert score(analyzer, text) == SentimentIntensityAnalyzer().polarity_scores(text)["compound"]


@pytest.mark.parametrize(("with_marks", "without"), [
    ("Tôi rất thất vọng", "toi rat that vong"),
    ("tuyệt vời", "tuyet voi"),
    ("Không hài lòng chút nào", "khong hai long chut nao"),
    ("Dịch vụ tệ quá", "dich vu te qua"),
    ("Cảm ơn bạn nhiều", "cam on ban nhieu"),
])
def test_diacritics_do_not_change_the_score(analyzer, with_marks, without):
    assert score(analyzer, with_marks) == score(analyzer, without) != 0.0


@pytest.mark.parametrize("ordered", [
    ["rất tốt", "tốt", "hơi tốt"],
    ["Không tệ", "Không tệ lắm"],
    ["hơi tệ", "tệ", "rất tệ"],
    ["không tốt lắm", "không tốt", "không tốt chút nào"],
    ["Dịch vụ tệ", "Dịch vụ TỆ"],
])
def test_intensifiers_and_negation_order_scores(analyzer, ordered):
    scores = [score(analyzer, text) for text in ordered]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores), scores


@pytest.mark.parametrize(("text", "label"), [
    ("không tốt", N), ("không tệ", P), ("chưa hài lòng", N), ("chẳng vui", N), ("chả thích", N),
    ("ko thich", N), ("k tot", N), ("không hề tệ", P), ("đừng buồn", P),
    ("không được tốt", N),  # the negator reaches over "được"
    ("Không, sản phẩm tốt", P),  # ... but not over the end of a clause
])
def test_vietnamese_negators(analyzer, text, label):
    assert analyzer.analyze(text).label == label


@pytest.mark.parametrize(("text", "label"), [
    ("Nhân viên mất lịch sự", N),  # "mất lịch sự" (rude) wins over "lịch sự" (polite)
    ("Xin lỗi", U),  # an apology, not "lỗi" (error)
    ("Tôi có một yêu cầu", U),  # "yêu cầu" (request), not "yêu" (love)
    ("lam on tra loi giup minh", U),  # "làm ơn" (please), not "ổn" (fine) boosted by "lắm"
])
def test_longest_phrase_wins(analyzer, text, label):
    assert analyzer.analyze(text).label == label


@pytest.mark.parametrize("text", ["tot", "te", "cham", "do"])
def test_folded_single_syllables_need_a_vietnamese_message_or_a_modifier(analyzer, text):
    """Alone, "tot" is also English, and "te", "cham", "do" are several Vietnamese words."""
    assert analyzer.analyze(text).label == U


def test_folded_lookups_are_unambiguous():
    vocabulary = {*emotion._LEXICON, *emotion._NEGATORS, *emotion._NEGATION_EMPHASIS,
                  *emotion._BOOSTERS_BEFORE, *emotion._BOOSTERS_AFTER}
    for key in emotion._FOLDED_ALONE | emotion._FOLDED_NEXT_TO_MODIFIER:
        assert [p for p in vocabulary if fold(p) == key].__len__() == 1, key
    folded_multi: dict[str, set[float]] = {}
    for phrase, valence in emotion._LEXICON.items():
        if " " in phrase:
            folded_multi.setdefault(fold(phrase), set()).add(valence)
    assert all(len(v) == 1 for v in folded_multi.values())
    assert not set(emotion._LEXICON) & (vocabulary - set(emotion._LEXICON))
    assert all(-4.0 <= v <= 4.0 for v in emotion._LEXICON.values())


@pytest.mark.parametrize(("text", "label"), [
    ("😡😡", N), ("Giao hàng 👍", P), ("ok 👎", N), ("😍", P), ("", U), ("   ", U)])
def test_emoji_and_empty_messages(analyzer, text, label):
    assert analyzer.analyze(text).label == label


def test_decomposed_unicode_input_is_normalized(analyzer):
    import unicodedata
    text = "Tôi rất thất vọng"
    assert score(analyzer, unicodedata.normalize("NFD", text)) == score(analyzer, text) < 0


@pytest.mark.parametrize(("label", "words"), [
    ("negative", ("calm", "empathy", "brief")),
    ("positive", ("warm",)),
    ("neutral", ("plain", "professional")),
])
def test_tone_instruction_is_one_short_sentence(label, words):
    tone = tone_instruction(label)
    assert all(w in tone.lower() for w in words)
    assert tone.endswith(".") and tone.count(".") == 1 and len(tone) <= 80


def test_tone_instructions_differ():
    assert len({tone_instruction(label) for label in (P, N, U)}) == 3


@pytest.mark.parametrize("label", ["angry", "", "Positive"])
def test_tone_instruction_rejects_unknown_labels(label):
    with pytest.raises(ValueError, match="Unknown emotion label"):
        tone_instruction(label)


def test_the_labelled_set_reads_the_writers_emotion_not_the_topics():
    """bot/data/emotion_eval.json: 58 hand-labelled VI/EN messages. Questions that name something good
    ("What can you help me with?", "Đà Lạt có gì vui?") are neutral (issue 13); without the question
    rule 18 of them were read as positive (0.69), with it one message is wrong (0.98)."""
    import json
    from importlib import resources

    data = json.loads(resources.files("bot.data").joinpath("emotion_eval.json").read_text(encoding="utf-8"))
    analyzer = EmotionAnalyzer()
    cases = [(label, text) for label in ("positive", "negative", "neutral") for text in data[label]]
    wrong = [(label, text) for label, text in cases if analyzer.analyze(text).label != label]
    assert len(cases) >= 50 and len(wrong) / len(cases) <= 0.05, wrong
    for text in ("What can you help me with?", "Đà Lạt có gì vui?"):
        assert analyzer.analyze(text).label == "neutral"
    assert analyzer.analyze("Sao giao hàng chậm thế?").label == "negative"  # a complaint asked as a question
