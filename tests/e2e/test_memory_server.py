"""Two-speed learning in the real server: a correction is served at once, with no training run."""

import httpx
import openai
import pytest

from feedback_db import store
from feedback_db.db import Database
from tests.harness import ProcessServer, kaizen_cli

pytestmark = pytest.mark.slow

PASSWORD = "memory-server-admin"
FIX = "Công ty mở cửa lúc 8 giờ sáng, từ thứ Hai đến thứ Sáu."


def test_correction_and_import_are_served_at_once_without_training(tmp_path, embedded_model_dir):
    data = tmp_path / "data"
    with ProcessServer(data, "--model", str(embedded_model_dir), "--no-schedule",
                       env={"KAIZEN_AUTO_APPROVE": "true", "KAIZEN_ADMIN_PASSWORD": PASSWORD}) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)

        def ask(text, **kw):
            kw.setdefault("max_tokens", 40)
            r = client.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": text}], **kw)
            return r, r.model_extra["kaizen"]

        first, meta = ask("Công ty mở cửa lúc mấy giờ?")
        assert meta["source"] == "model" and first.choices[0].message.content != FIX
        r = httpx.post(server.url + "/v1/feedback", json={"id": first.id, "rating": "down", "correction": FIX})
        assert r.json()["status"] == "approved"
        for question in ("Công ty mở cửa lúc mấy giờ?", "cong ty mo cua luc may gio",
                         "Cho mình hỏi công ty mở cửa lúc mấy giờ?"):
            again, meta = ask(question, max_tokens=openai.NOT_GIVEN)
            assert again.choices[0].message.content == FIX, question
            assert meta["source"] == "memory" and len(meta["memory_item_ids"]) == 1
        # A limit the client asks for holds on a taught answer too, counted in the real tokenizer's tokens.
        cut, meta = ask("Công ty mở cửa lúc mấy giờ?", max_tokens=8)
        text = cut.choices[0].message.content
        assert meta["source"] == "memory" and cut.choices[0].finish_reason == "length"
        assert FIX.startswith(text) and 0 < cut.usage.completion_tokens <= 8 and len(text) < len(FIX)
        asked = [{"role": "user", "content": "xin hỏi, công ty mở cửa lúc mấy giờ"}]
        stream = client.chat.completions.create(model="kaizen", stream=True, messages=asked)
        pieces = [c.choices[0].delta.content or "" for c in stream]
        assert "".join(pieces) == FIX and sum(1 for p in pieces if p) > 3  # streamed like any reply

        facts = tmp_path / "facts.txt"
        facts.write_text("What is CHOREI? -> CHOREI is a Japanese-style morning meeting where the team shares plans.\n",
                         encoding="utf-8")
        kaizen_cli("import", str(facts), data_dir=data)  # another process writes; the server must follow
        rag, meta = ask("What is CHOREI?")
        assert meta["source"] == "rag" and len(meta["memory_item_ids"]) == 1
        assert "meeting" in rag.choices[0].message.content.lower()
        _, meta = ask("What is the capital of France?")
        assert meta["source"] == "model"
        _, meta = ask("Công ty mở cửa lúc mấy giờ?", extra_body={"memory": False})
        assert meta["source"] == "model"

        # The persona answers who the bot is, word for word, in both languages (issue 13), and follows edits.
        persona = {"agent_name": "Mai", "creator": "BICweb", "company": "BICweb là công ty phần mềm ở Hà Nội."}
        assert httpx.put(server.url + "/admin/api/settings", json={"persona": persona},
                         auth=("admin", PASSWORD)).status_code == 200
        for question, answer in (("What is your name?", "I'm Mai, an assistant created by BICweb."),
                                 ("Bạn tên gì vậy?", "Mình là Mai, trợ lý ảo do BICweb tạo ra."),
                                 ("Ai đã tạo ra bạn?", "Mình được BICweb tạo ra.")):
            reply, meta = ask(question)
            assert (reply.choices[0].message.content, meta["source"]) == (answer, "memory"), question
    db = Database(f"sqlite:///{data / 'kaizen.db'}")
    with db.session() as s:
        assert store.list_runs(session=s) == []  # no training happened
        sources = [e.source for e in reversed(store.list_exchanges(session=s))]
        assert sources == ["model", *["memory"] * 5, "rag", "model", "model", *["memory"] * 3]
        [fix_item] = [k for k in store.list_knowledge(session=s) if k.origin == "correction"]
        assert fix_item.hit_count == 5 and fix_item.verbatim
    db.close()


def test_ask_with_and_without_memory(tmp_path, embedded_model_dir):
    data = tmp_path / "data"
    facts = tmp_path / "facts.csv"
    facts.write_text("question,answer\nXin chào,Công ty BICweb kính chào quý khách!\n", encoding="utf-8")
    kaizen_cli("import", str(facts), "--verbatim", data_dir=data)
    with_memory = kaizen_cli("ask", "xin chao", "--model", str(embedded_model_dir), data_dir=data)
    assert with_memory.stdout.strip() == "Công ty BICweb kính chào quý khách!"
    without = kaizen_cli("ask", "xin chao", "--no-memory", "--model", str(embedded_model_dir), data_dir=data)
    assert without.stdout.strip() != "Công ty BICweb kính chào quý khách!"
