"""The real embedded model behind the real server and command line (slow)."""

import re
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from feedback_db import store
from feedback_db.db import Database
from tests.harness import ProcessServer, kaizen_cli

pytestmark = pytest.mark.slow


def _englishish(text: str) -> bool:
    letters = re.findall(r"[A-Za-z]", text)
    return len(text.strip()) > 0 and len(letters) / max(1, len(re.sub(r"\s", "", text))) > 0.7


def test_serve_chats_with_the_real_model_and_stores_exchanges(tmp_path, embedded_model_dir):
    data = tmp_path / "data"
    with ProcessServer(data, "--model", str(embedded_model_dir), "--no-schedule",
                       env={"KAIZEN_MEMORY": "false"}) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
        resp = client.chat.completions.create(model="kaizen", max_tokens=40,
                                              messages=[{"role": "user", "content": "What is the capital of France?"}])
        text = resp.choices[0].message.content
        assert _englishish(text), text
        assert "Paris" in text
        stream = client.chat.completions.create(model="kaizen", max_tokens=30, stream=True,
                                                messages=[{"role": "user", "content": "Say hello to me."}])
        pieces = [c.choices[0].delta.content or "" for c in stream]
        assert sum(1 for p in pieces if p) > 2 and _englishish("".join(pieces))
        # Repetition the user asked for streams as it comes, a whole character at a time (issue 14, kind 2).
        stream = client.chat.completions.create(model="kaizen", max_tokens=40, stream=True,
                                                messages=[{"role": "user", "content": "Copy this: 🎉🎉🎉🎉🎉🎉"}])
        pieces = [p for c in stream if (p := c.choices[0].delta.content)]
        assert sum(1 for p in pieces if "🎉" in p) >= 3 and "\ufffd" not in "".join(pieces), pieces
        # Requests that arrive together are answered together (continuous batching), each in full.
        questions = ["What is the capital of France?", "What is the capital of Japan?", "Name a red fruit.",
                     "What is two plus two?"]
        with ThreadPoolExecutor(len(questions)) as pool:
            answers = list(pool.map(lambda q: client.chat.completions.create(
                model="kaizen", max_tokens=24, messages=[{"role": "user", "content": q}]), questions))
        assert all(a.choices[0].message.content.strip() for a in answers)
        assert "Paris" in answers[0].choices[0].message.content and "Tokyo" in answers[1].choices[0].message.content
    db = Database(f"sqlite:///{data / 'kaizen.db'}")
    with db.session() as s:
        ex = store.get_exchange(session=s, exchange_id=resp.id)
        assert ex.bot_text == text and ex.user_text == "What is the capital of France?"
        assert ex.adapter_version == "base" and ex.completion_tokens > 0
        assert store.totals(session=s)["exchanges"] == 7
    db.close()


def test_kaizen_ask_prints_an_answer_and_stores_it(tmp_path, embedded_model_dir):
    data = tmp_path / "data"
    proc = kaizen_cli("ask", "What is the capital of France?", "--model", str(embedded_model_dir), "--no-memory",
                      data_dir=data)
    assert "Paris" in proc.stdout
    db = Database(f"sqlite:///{data / 'kaizen.db'}")
    with db.session() as s:
        [ex] = store.list_exchanges(session=s)
        assert ex.bot_text.strip() == proc.stdout.strip()
    db.close()


def test_a_missing_model_directory_gives_a_clear_error(tmp_path):
    proc = kaizen_cli("ask", "hi", "--model", str(tmp_path / "no-model"), "--no-memory", data_dir=tmp_path / "d",
                      check=False)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "--model" in proc.stderr
