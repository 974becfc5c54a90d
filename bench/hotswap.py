"""Benchmark 5, hot-swap: the time to swap a promoted adapter, and chat latency during swaps.

Two promoted adapters with the recipe's LoRA config (so peft's in-place hotswap applies) are
published into a fresh data directory. A real `kaizen serve` then answers 8 concurrent streaming
users in waves, first without swaps (the baseline), then while the admin API activates v1, v2,
v1, ... back to back. Reported: the swap itself (seconds under the engine lock, from the API's
`swap_seconds`), the wall time of each activate call (it also waits for the reply in progress),
p95 chat latency with and without swaps, and failed requests (which must be zero).

    python -m bench --only hotswap [--quick]
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM

from bench.common import (
    Options,
    Result,
    Row,
    Server,
    Table,
    median,
    ms,
    p95,
    ratio,
    secs,
    wave,
)
from feedback_db import store
from feedback_db.db import Database
from kaizen import adapters
from kaizen.settings import TrainConfig
from trainer.config import lora_config

USERS = 8
MESSAGES = ["What is machine learning?", "Give me three tips for better sleep.", "How do I make a cup of tea?",
            "What is a black hole?"]


def publish_adapters(model_dir: str, data_dir: Path, versions: list[str]) -> None:
    """Random small LoRA weights in the recipe's shape, published and recorded as promoted."""
    cfg = TrainConfig()
    db = Database(f"sqlite:///{data_dir / 'kaizen.db'}")
    torch.manual_seed(0)
    for i, version in enumerate(versions):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        peft_model = get_peft_model(model, lora_config(cfg, num_layers=model.config.num_hidden_layers))
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=1e-3)  # peft starts B at zero, which would change nothing
        work = adapters.new_workdir(data_dir / "adapters")
        peft_model.save_pretrained(str(work), safe_serialization=True)
        path = adapters.publish(work, data_dir / "adapters", version, {"round": i, "bench": "hotswap"})
        with db.write() as s:
            store.record_adapter(session=s, version=version, run_id=None, round_index=i, verdict="promoted",
                                 reason="benchmark adapter", metrics={}, path=str(path))
    db.close()


def run(opts: Options) -> Result:
    waves = opts.pick(3, 1)
    max_tokens = opts.pick(48, 32)
    data = opts.fresh_dir("hotswap") / "data"
    data.mkdir(parents=True)
    Database(f"sqlite:///{data / 'kaizen.db'}").close()  # migrate before publishing
    publish_adapters(opts.model_dir, data, ["v1", "v2"])
    swaps: list[dict] = []
    with Server(data, opts.model_dir) as server, server.admin() as admin:
        wave(server.url, 1, MESSAGES, 4)  # warm-up
        t0 = time.perf_counter()
        first = admin.post("/admin/api/adapters/v1/activate").raise_for_status().json()  # base -> v1: attach
        first_wall = time.perf_counter() - t0
        calm = [wave(server.url, USERS, MESSAGES, max_tokens) for _ in range(waves)]
        stop = threading.Event()

        def swapper() -> None:
            target = "v2"
            while not stop.is_set():
                t = time.perf_counter()
                r = admin.post(f"/admin/api/adapters/{target}/activate")
                swaps.append({"ok": r.status_code == 200, "wall": time.perf_counter() - t,
                              "swap": r.json().get("swap_seconds") if r.status_code == 200 else None,
                              "error": "" if r.status_code == 200 else r.text[:200]})
                target = "v1" if target == "v2" else "v2"
                stop.wait(0.5)

        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        busy = [wave(server.url, USERS, MESSAGES, max_tokens) for _ in range(waves)]
        stop.set()
        thread.join()
        served = admin.get("/admin/api/adapters").json()["serving"]
    calm_t = [t for w in calm for t in w.timings]
    busy_t = [t for w in busy for t in w.timings]
    failed = sum(not t.ok for t in calm_t + busy_t) + sum(not s["ok"] for s in swaps)
    done = [s for s in swaps if s["ok"]]
    if not done:
        raise RuntimeError(f"No swap succeeded: {swaps[:1]}")
    calm95, busy95 = p95([t.total for t in calm_t if t.ok]), p95([t.total for t in busy_t if t.ok])
    swap_s = median([s["swap"] for s in done])
    table = Table(f"{USERS} streaming users × {waves} waves, {max_tokens} tokens max; {len(done)} swaps between v1 and "
                  f"v2 (peft hotswap, same rank and modules); serving {served} at the end",
                  ["", "value"],
                  [["first load (base → v1, attaches the LoRA layers)", f"{ms(first['swap_seconds'])} "
                                                                          f"(call {secs(first_wall)})"],
                   ["swap v1 ↔ v2 under the engine lock, median / max",
                    f"{ms(swap_s)} / {ms(max(s['swap'] for s in done))}"],
                   ["activate call wall time (waits for the reply in progress), median / max",
                    f"{secs(median([s['wall'] for s in done]))} / {secs(max(s['wall'] for s in done))}"],
                   ["chat latency p50 / p95 without swaps", f"{secs(median([t.total for t in calm_t if t.ok]))} / "
                                                            f"{secs(calm95)}"],
                   ["chat latency p50 / p95 during swaps", f"{secs(median([t.total for t in busy_t if t.ok]))} / "
                                                           f"{secs(busy95)}"],
                   ["failed chat requests + failed swaps", failed]])
    rows = [
        Row("Adapter hot-swap (v1 ↔ v2, in place)", ms(swap_s), f"{ms(first['swap_seconds'])} first load from base",
            ratio(swap_s, first["swap_seconds"]), f"activate call median {secs(median([s['wall'] for s in done]))}"),
        Row(f"Chat p95 latency during swaps, {USERS} users", secs(busy95), f"{secs(calm95)} without swaps",
            ratio(busy95, calm95), f"{failed} failed requests"),
    ]
    return Result("hotswap", rows, [table])
