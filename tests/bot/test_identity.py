"""Identity questions are answered from the persona, word for word and at once (issue 13), on the
real retrieval memory (MiniLM + multilingual e5): held-out phrasings in both languages, questions
that share the words but are not about the bot, and a persona change."""

import pytest

from bot.memory import Memory, load_embedders
from bot.recall import KnowledgeRecall
from feedback_db import store
from feedback_db.db import Database
from kaizen.identity import QUESTIONS, addresses_bot, identity_answers, identity_facts
from kaizen.prompts import SETTING_KEY, Persona

MAI = Persona(agent_name="Mai", creator="BICweb", company="BICweb là công ty phần mềm ở Hà Nội.")

# Phrasings that are not in kaizen.identity.QUESTIONS.
HELD_OUT = [
    ("what's ur name", ("name", "en")), ("Who are you exactly?", ("name", "en")),
    ("Bạn tên gì vậy?", ("name", "vi")), ("Cho mình hỏi bạn tên gì?", ("name", "vi")),
    ("Tên của bạn là gì?", ("name", "vi")), ("ban ten gi", ("name", "vi")),
    ("Who created you exactly?", ("creator", "en")), ("Ai đã làm ra bạn?", ("creator", "vi")),
    ("Bạn được ai tạo ra?", ("creator", "vi")),
    ("What company are you from?", ("company", "en")), ("Bạn là của công ty nào?", ("company", "vi")),
    ("What are you able to do?", ("abilities", "en")), ("Bạn có thể giúp gì cho mình?", ("abilities", "vi")),
    ("Bạn làm được những gì?", ("abilities", "vi")),
]
NOT_ABOUT_THE_BOT = [
    "What is my name?", "Tên tôi là gì?", "My name is John.", "Tôi tên là An.", "Em tên là An.",
    "Ai tạo ra Facebook?", "Who created Python?", "Who are they?", "How old are you?", "How are you?",
    "What is your company's address?", "Số điện thoại của công ty là gì?", "Bạn có khỏe không?",
    "Can you help me book a ticket?", "What is the capital of France?",
]


@pytest.fixture(scope="module")
def embedders():
    return load_embedders()


@pytest.fixture
def recall(tmp_path, embedders):
    db = Database(f"sqlite:///{tmp_path / 'k.db'}")
    with db.write() as s:
        store.set_setting(session=s, key=SETTING_KEY, value=MAI.to_dict())
    embedder, cross = embedders
    yield KnowledgeRecall(db=db, memory=Memory(embedder, cross=cross))
    db.close()


@pytest.mark.parametrize(("question", "topic"), HELD_OUT)
def test_identity_questions_are_answered_from_the_persona_word_for_word(recall, question, topic):
    found = recall.recall(question)
    assert found.source == "memory", (question, found)
    assert found.hits[0].item.answer == identity_answers(MAI)[topic]


@pytest.mark.parametrize("question", NOT_ABOUT_THE_BOT)
def test_questions_not_about_the_bot_get_no_identity_answer(recall, question):
    assert all(h.item.id > 0 for h in recall.recall(question).hits), question


def test_the_answers_follow_the_persona_and_a_taught_answer_wins(recall):
    assert recall.recall("Who created you?").hits[0].item.answer == "I was created by BICweb."
    with recall.db.write() as s:
        lan = Persona(agent_name="Lan", creator="Sương Mai Travel")
        store.set_setting(session=s, key=SETTING_KEY, value=lan.to_dict())
    assert recall.recall("Who created you?").hits[0].item.answer == "I was created by Sương Mai Travel."
    assert recall.recall("Bạn tên gì?").hits[0].item.answer == "Mình là Lan, trợ lý ảo do Sương Mai Travel tạo ra."
    with recall.db.write() as s:
        store.add_knowledge(session=s, question="Who created you?", answer="A team of two in Hà Nội.", verbatim=True)
    assert recall.recall("Who created you?").hits[0].item.answer == "A team of two in Hà Nội."
    assert len(recall) == 1  # identity answers are not knowledge items


def test_every_topic_has_phrasings_and_an_answer_in_both_languages():
    assert set(QUESTIONS) == set(identity_answers(MAI))
    assert {lang for _, lang in QUESTIONS} == {"en", "vi"}
    facts = identity_facts(MAI)
    assert len(facts) == sum(map(len, QUESTIONS.values())) and all("Mai" in a or "BICweb" in a for _, a in facts)


def test_addressed_to_the_bot():
    assert addresses_bot("What is your name?") and addresses_bot("Bạn tên gì?") and addresses_bot("ban ten gi")
    assert not addresses_bot("What is my name?") and not addresses_bot("Ai tạo ra Facebook?")
