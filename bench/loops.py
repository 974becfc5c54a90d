"""Benchmark: looping replies (issue 13), with Kaizen's loop guard off and on, on the real model.

The same chat service as served (persona "Mai" by BICweb with one Vietnamese sentence of company
information, the tone from the message's emotion, greedy decoding, the default 256-token limit),
memory off so that every reply comes from the model, over a fixed set of 60 prompts (30 Vietnamese,
30 English: greetings, identity questions, travel, angry and happy messages, how-to questions).
The baseline is the same service with `loop_guard` off in the same run.

A reply *loops* when a span of its words repeats in a row as a loop would
(`kaizen.repetition.is_degenerate`, on words: a different unit and rule from the guard's, which
watches model tokens); "at the token limit" counts replies that ran to max_new_tokens.

    python -m bench --only loops [--quick]
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tqdm import tqdm

from bench.common import Options, Result, Row, Table, median, ratio
from bot.engine_api import ChatEngine
from bot.fallback import NO_ANSWER
from bot.services import build_services
from feedback_db import store
from kaizen.prompts import SETTING_KEY, Persona
from kaizen.repetition import is_degenerate
from kaizen.settings import Settings

PERSONA = Persona(agent_name="Mai", creator="BICweb",
                  company="BICweb là công ty phần mềm ở Hà Nội, chuyên làm website và chatbot cho doanh nghiệp.")

PROMPTS_VI = [
    "Xin chào, bạn là ai?", "Bạn tên gì?", "Ai đã tạo ra bạn?", "Bạn làm được những gì?", "Đà Lạt có gì vui?",
    "Hà Nội có món ăn nào ngon?", "Tôi rất bực vì đơn hàng giao chậm quá!", "Cảm ơn bạn nhiều nhé, tuyệt vời!",
    "Làm sao để ngủ ngon hơn?", "Giải thích trí tuệ nhân tạo là gì.", "Thủ đô của Pháp là gì?",
    "Viết một câu chúc mừng sinh nhật.", "Tôi nên học lập trình bằng ngôn ngữ nào?", "Hôm nay trời đẹp quá.",
    "Công ty BICweb làm gì?", "Gợi ý cho tôi ba điểm du lịch ở Việt Nam.", "Cách nấu phở bò như thế nào?",
    "Tại sao bầu trời màu xanh?", "Bạn có khỏe không?", "Tôi buồn quá, không ai hiểu tôi.",
    "Kể cho tôi một câu chuyện cười.", "Làm thế nào để tiết kiệm tiền?",
    "Máy tính của tôi chạy rất chậm, phải làm sao?",
    "Sài Gòn và Hà Nội khác nhau thế nào?", "Dịch 'good morning' sang tiếng Việt.", "Mấy giờ rồi?",
    "Bạn có thể giúp tôi viết email xin nghỉ phép không?", "Uống cà phê có tốt không?",
    "Chào buổi sáng!", "Tạm biệt nhé.",
]
PROMPTS_EN = [
    "Hello, who are you?", "What is your name?", "Who created you?", "What can you help me with?",
    "What is fun to do in Da Lat?", "This is terrible, I am really angry and disappointed with your service!",
    "Thank you so much, this is wonderful!", "How can I sleep better?", "Explain artificial intelligence simply.",
    "What is the capital of France?", "Write a birthday wish for my friend.",
    "Which programming language should I learn?",
    "The weather is nice today.", "What does BICweb do?", "Suggest three places to visit in Vietnam.",
    "How do I cook pho?", "Why is the sky blue?", "How are you?", "I feel sad and nobody understands me.",
    "Tell me a joke.", "How can I save money?", "My computer is very slow, what should I do?",
    "What is the difference between Hanoi and Saigon?", "Translate 'xin chào' into English.", "What time is it?",
    "Can you help me write an email asking for a day off?", "Is coffee good for you?", "Good morning!",
    "Goodbye.", "Are you a robot?",
]
PROMPTS = PROMPTS_VI + PROMPTS_EN


@dataclass
class Reply:
    prompt: str
    text: str
    tokens: int
    seconds: float

    @property
    def looped(self) -> bool:
        return is_degenerate(self.text)

    @property
    def words(self) -> int:
        return len(self.text.split())


def answer_all(opts: Options, *, guard: bool, prompts: list[str],
               engine: ChatEngine | None = None) -> tuple[list[Reply], ChatEngine]:
    """Each prompt answered once by a fresh chat service (its own data directory) with the loop
    guard on or off; returns the replies and the engine, to share with the next service."""
    settings = Settings(data_dir=opts.fresh_dir(f"loops-{'on' if guard else 'off'}"), model=opts.model_dir,
                        memory=False, adapter_routing="always", loop_guard=guard)
    kaizen = build_services(settings, engine=engine)
    with kaizen.db.write() as s:
        store.set_setting(session=s, key=SETTING_KEY, value=PERSONA.to_dict())
    replies = []
    try:
        for prompt in tqdm(prompts, desc=f"loop guard {'on' if guard else 'off'}", unit="prompt"):
            t0 = time.perf_counter()
            reply = kaizen.chat.start(message=prompt, client="bench")
            text = reply.read()
            replies.append(Reply(prompt, text, reply.stream.completion_tokens, time.perf_counter() - t0))
    finally:
        kaizen.db.close()
    return replies, kaizen.engine


def summary(replies: list[Reply], limit: int) -> dict[str, float]:
    n = len(replies)
    return {
        "loop_rate": sum(r.looped for r in replies) / n,
        "at_limit": sum(r.tokens >= limit for r in replies) / n,
        "no_answer": sum(r.text in NO_ANSWER.values() for r in replies) / n,
        "words": median([r.words for r in replies]),
        "seconds": median([r.seconds for r in replies]),
        "total_seconds": sum(r.seconds for r in replies),
    }


def run(opts: Options) -> Result:
    prompts = opts.pick(PROMPTS, PROMPTS_VI[:6] + PROMPTS_EN[:6])
    limit = Settings().max_new_tokens
    off, engine = answer_all(opts, guard=False, prompts=prompts)
    on, _ = answer_all(opts, guard=True, prompts=prompts, engine=engine)
    a, b = summary(off, limit), summary(on, limit)
    vi = slice(0, opts.pick(len(PROMPTS_VI), 6))
    en = slice(vi.stop, None)
    rows = []
    for name, part in (("all", slice(None)), ("Vietnamese", vi), ("English", en)):
        sa, sb = summary(off[part], limit), summary(on[part], limit)
        rows.append([name, len(off[part]), f"{sa['loop_rate']:.0%} → {sb['loop_rate']:.0%}",
                     f"{sa['at_limit']:.0%} → {sb['at_limit']:.0%}", f"{sa['words']:.0f} → {sb['words']:.0f}",
                     f"{sa['seconds']:.1f} → {sb['seconds']:.1f}", f"{sb['no_answer']:.0%}"])
    table = Table(f"Loops on {len(prompts)} prompts, guard off → on (greedy, {limit}-token limit, memory off)",
                  ["prompts", "n", "replies that loop", "at the token limit", "median words", "median s/reply",
                   "\"no good answer\" (guard on)"], rows)
    examples = Table("Some replies, guard off → on", ["prompt", "off", "on"],
                     [[o.prompt, o.text[:90] + ("…" if len(o.text) > 90 else ""), n.text[:90]]
                      for o, n in zip(off, on, strict=True) if o.looped][:12])
    return Result("loops", [
        Row("Replies that loop (60 VI+EN prompts, real model)", f"{b['loop_rate']:.0%} with the loop guard",
            f"{a['loop_rate']:.0%} without", ratio(b["loop_rate"], a["loop_rate"]) if a["loop_rate"] else "",
            f"at the token limit {a['at_limit']:.0%} → {b['at_limit']:.0%}; median words {a['words']:.0f} → "
            f"{b['words']:.0f}"),
        Row("Time for the whole set (loops)", f"{b['total_seconds']:.0f} s with the guard",
            f"{a['total_seconds']:.0f} s without", ratio(b["total_seconds"], a["total_seconds"]),
            f"median {a['seconds']:.1f} → {b['seconds']:.1f} s per reply"),
    ], [table, examples])
