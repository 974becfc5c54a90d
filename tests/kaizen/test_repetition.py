"""Loop detection (kaizen.repetition): the examples of issue 13 and the text it must leave alone."""

import pytest

from kaizen.repetition import (
    TOKENS,
    WORDS,
    Loop,
    LoopRule,
    canonical_tokens,
    echo_of,
    end_of_copy,
    find_loop,
    held_back,
    is_degenerate,
    text_units,
    trim_loop,
)

LOOPED = [
    ("Xin chào, bạn là ai, bạn là ai, bạn là ai, bạn là ai, bạn là ai", "Xin chào, bạn là ai"),
    ("Đà Lạt có gì vui? " * 12, "Đà Lạt có gì vui?"),
    ("I'm sorry. " * 60, "I'm sorry."),
    ("Mai, a lễn. I am a lễn. I am a lễn. I am a lễn. I am a lễn.", "Mai, a lễn."),
    # the bench's one loop left (period starting mid-sentence): cut at the sentence inside the first copy
    ("Bien sûr, it's a beautiful day, and I'm happy to help. It's a beautiful day, and I'm happy to help. It's a "
     "beautiful day, and I'm happy to help.", "Bien sûr, it's a beautiful day, and I'm happy to help."),
    ("BICweb, I am a professional, a professional, a professional, a professional, a professional",
     "BICweb, I am a professional"),
    ("Wow!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", "Wow!"),
    ("Bạn làm, bạn làm, bạn làm, bạn làm, bạn làm, bạn làm", "Bạn làm"),
    ("Here is the list: one, two, three, four, five. Here is the list: one, two, three, four, five.",
     "Here is the list: one, two, three, four, five."),
]

CLEAN = [
    "Công ty BICweb kính chào quý khách!",
    "The office opens at 8 am, Monday to Friday, and closes at 5 pm, Monday to Friday.",
    "Very, very good. Thank you, thank you!",
    "Giá thuê xe máy là 150.000 VND một ngày, 150.000 VND cho cả xe số và xe ga.",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
    "ha ha ha",
]


@pytest.mark.parametrize(("text", "kept"), LOOPED)
def test_a_looped_reply_is_cut_after_its_first_copy(text, kept):
    assert is_degenerate(text)
    assert trim_loop(text) == kept
    assert not is_degenerate(trim_loop(text))


@pytest.mark.parametrize("text", CLEAN)
def test_ordinary_text_is_no_loop(text):
    assert not is_degenerate(text)
    assert trim_loop(text) == text


def test_a_loop_in_the_middle_of_a_text_is_degenerate_too():
    assert is_degenerate("Hello. " + "I'm sorry. " * 5 + "Goodbye, have a nice day.")


def test_token_rule_short_and_long_periods():
    assert find_loop([7] * 11) is None and find_loop([7] * 12) == (1, 12, 1)  # min_span for period 1
    unit = [1, 2, 3, 4]
    assert find_loop([9] + unit * 2) is None
    assert find_loop([9] + unit * 3) == (4, 12, 5)  # three copies of four tokens
    assert find_loop([9] + [1, 2, 3, 4, 5] * 2) is None  # five tokens twice: not yet
    assert find_loop([9] + [1, 2, 3, 4, 5, 6] * 2) == (6, 12, 7)  # "[Your Company's Name]\n" twice
    sentence = list(range(10, 20))  # ten tokens, said twice in a row
    assert find_loop([5, 6] + sentence + sentence) == (10, 20, 12)
    assert find_loop([5, 6] + sentence + sentence[:9]) is None  # not yet twice


def test_the_run_counts_a_partial_last_copy_and_the_shortest_period_wins():
    seq = [0] + [1, 2, 3] * 4 + [1]
    loop = find_loop(seq)
    assert loop.period == 3 and loop.run == 13 and seq[:loop.keep] == [0, 1, 2, 3]


def test_held_back_is_what_would_be_cut():
    assert held_back([1, 2, 3, 4, 5]) == 0
    assert held_back([1, 2, 3, 1, 2]) == 2  # may be the start of a second copy
    assert held_back([1, 2, 3, 1, 2, 9]) == 0  # it broke off: ordinary text again
    seq = [0] + [1, 2, 3] * 4
    loop = find_loop(seq)
    assert len(seq) - held_back(seq) <= loop.keep  # nothing past the first copy was given out


def test_rules_and_units():
    assert text_units("Bạn tên gì?") == ["bạn", "tên", "gì", "?"]
    assert WORDS.min_span < TOKENS.min_span
    strict = LoopRule(min_copies=5, min_span=5, long_period=100)
    assert find_loop(list("abababab"), strict) is None and find_loop(list("ababababab"), strict) is not None


def test_a_cut_never_ends_inside_a_word():
    """The token loop "[ạn][ làm][,][ b]" has its first copy end inside "bạn" (bench, issue 13)."""
    assert end_of_copy("Bạn làm, bạn làm, bạn", len("Bạn làm, b")) == "Bạn làm"
    assert end_of_copy("Yes. Yes. Yes.", len("Yes.")) == "Yes."
    assert end_of_copy("Hi. It is fine. It", len("Hi. It is fine. It"), start=len("Hi. ")) == "Hi. It is fine."


def test_canonical_tokens_ignore_case_and_the_leading_space_marker():
    vocab = ["It", "Ġit", "ĠIt", "'s", "Ġhelp", ".", "Ċ", "ĠĊ", None, "Ġ", "▁Bạn", "bạn"]
    canon = canonical_tokens(vocab)
    assert canon[0] == canon[1] == canon[2] == 0
    assert canon[10] == canon[11] == 10
    assert canon[7] == canon[6]  # a space before a newline is the newline
    assert len(set(canon[3:10])) == 6  # punctuation, newline, a lone space and a hole keep their own ids
    # "… it's … happy to help. It's … happy to help.": one unit once a sentence start capitalizes it
    first, second = [1, 3, 4, 5, 9, 4, 5], [2, 3, 4, 5, 9, 4, 5]
    assert find_loop([7] + first + second) is None
    assert find_loop([canon[i] for i in [7] + first + second]) == (7, 14, 8)


def test_repetition_the_prompt_asked_for_is_no_loop_until_it_goes_past_it():
    # Issue 14, kind 2: "Repeat exactly: 🎉🎉🎉🎉🎉🎉" was cut to one 🎉, and held back to the end.
    party, word = 7, 3
    prompt = [word, 9, 11, *[party] * 6, 2]
    echo = echo_of(prompt)
    for n in range(1, 7):
        assert find_loop([party] * n, TOKENS, echo) is None and held_back([party] * n, TOKENS, echo) == 0
    assert find_loop([party] * 12, TOKENS, echo) == Loop(period=1, run=12, keep=6)  # the six asked for
    assert held_back([party] * 7, TOKENS, echo) == 6  # past the prompt's run: held as any repeat
    assert find_loop([party] * 12, TOKENS) == Loop(period=1, run=12, keep=1)  # without the prompt: a loop
    # A unit the prompt says once is no licence to repeat it.
    unit = [20, 21, 22, 23]
    assert find_loop(unit * 4, TOKENS, echo_of([1, *unit, 2])) == Loop(period=4, run=16, keep=4)
