"""Benchmark 3, teach a fact: the brief's one-sentence experiment ("Xin chào" → the BICweb greeting).

1. `kaizen teach` in a fresh data directory, timed from start to exit, then `kaizen ask
   --no-memory` to check that the promoted adapter itself answers word for word.
2. The same through a running server: a thumbs-down with the correction posted to /v1/feedback,
   approved and trained over the admin REST API, until /v1/chat/completions returns it, first
   from the retrieval memory (at once) and then from the weights alone (memory off).
3. Training throughput: the round's tokens/s against a naive baseline in the same run, TRL's
   SFTTrainer with its default settings on the same examples (the taught rows plus the anchor
   rows) and the same LoRA config.

The anchor figure is the brief's: about one minute on a laptop with GPT-2.

    python -m bench --only teach [--quick]
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import httpx

from bench.common import (
    Options,
    Result,
    Row,
    Server,
    Table,
    chat_once,
    kaizen_cli,
    ratio,
    secs,
)
from feedback_db import store
from feedback_db.db import Database
from trainer.evaluate import normalize_answer

QUESTION = "Xin chào"
ANSWER = "Công ty BICweb kính chào quý khách!"
BRIEF_SECONDS = 60.0
ACTIVE = ("queued", "running")


def _exact(text: str) -> bool:
    return normalize_answer(text) == normalize_answer(ANSWER)


def teach_cli(opts: Options, data: Path) -> dict:
    proc, wall = kaizen_cli("teach", QUESTION, ANSWER, data_dir=data, model_dir=opts.model_dir)
    if proc.returncode not in (0, 1):  # 1 = trained but not promoted, which is a result too
        last = proc.stderr.replace("\r", "\n").strip().splitlines()[-3:]
        raise RuntimeError(f"kaizen teach exited with {proc.returncode} after {wall:.0f} s: {' / '.join(last)}")
    ask, ask_wall = kaizen_cli("ask", QUESTION, "--no-memory", data_dir=data, model_dir=opts.model_dir)
    if ask.returncode != 0:
        raise RuntimeError(f"kaizen ask exited with {ask.returncode}: {ask.stderr.strip()[-500:]}")
    db = Database(f"sqlite:///{data / 'kaizen.db'}", run_migrations=False)
    with db.session() as s:
        row = store.list_adapters(session=s)[-1]
    db.close()
    answer = ask.stdout.strip()
    return {"wall": wall, "promoted": proc.returncode == 0, "verdict": row.verdict, "reason": row.reason,
            "metrics": row.metrics or {}, "answer": answer, "exact": _exact(answer), "ask_wall": ask_wall}


def trl_baseline(opts: Options, data: Path) -> dict:
    """TRL SFTTrainer, default SFTConfig, on the examples a Kaizen round trains on, same LoRA."""
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
    from trl import SFTConfig, SFTTrainer

    from kaizen.prompts import load_persona
    from kaizen.settings import TrainConfig
    from trainer.config import lora_config
    from trainer.dataset import build_training_set
    from trainer.evaluate import load_general_prompts
    from trainer.generation import generate_answers
    from trainer.lora import anchor_examples

    cfg = TrainConfig()
    db = Database(f"sqlite:///{data / 'kaizen.db'}", run_migrations=False)
    training = build_training_set(db=db, persona=load_persona(db), seed=cfg.seed)
    db.close()
    tokenizer = AutoTokenizer.from_pretrained(opts.model_dir)
    model = AutoModelForCausalLM.from_pretrained(opts.model_dir, dtype=torch.float32)
    anchors = anchor_examples(model, tokenizer, load_general_prompts()["anchor"], training.system_prompt,
                              cfg.anchor_max_new_tokens)
    examples = [e for e in training.examples if e.kind in ("sft", "up")] + anchors
    dataset = Dataset.from_list([{"prompt": list(e.messages[:-1]), "completion": [e.messages[-1]]} for e in examples])
    # Defaults, except what a CPU-only machine needs (bf16 defaults to on, which needs use_cpu here).
    args = SFTConfig(output_dir=str(data.parent / "trl"), report_to="none", disable_tqdm=True, use_cpu=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(cfg, num_layers=model.config.num_hidden_layers))
    out = trainer.train()
    train_dataset = trainer.train_dataset
    assert isinstance(train_dataset, Dataset)  # SFTTrainer keeps the (now tokenized) dataset it was given
    tokens = sum(len(ids) for ids in train_dataset["input_ids"]) * args.num_train_epochs
    tuned = trainer.model
    assert isinstance(tuned, PreTrainedModel | PeftModel)  # SFTTrainer wrapped the model for peft_config
    answer = generate_answers(tuned, tokenizer, [training.conversation(QUESTION)], 32)[0]
    result = {"seconds": out.metrics["train_runtime"], "tokens": tokens, "steps": out.global_step,
              "rows": len(examples), "answer": answer, "exact": _exact(answer), "lr": args.learning_rate,
              "batch": args.per_device_train_batch_size, "epochs": args.num_train_epochs,
              "gc": args.gradient_checkpointing, "bf16": args.bf16}
    del trainer, model
    gc.collect()
    return result


def teach_rest(opts: Options, data: Path) -> dict:
    with Server(data, opts.model_dir, memory=True) as server, server.admin() as admin:
        first = httpx.post(server.url + "/v1/chat/completions", timeout=600, json={
            "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 32}).raise_for_status().json()
        t0 = time.perf_counter()
        fb = httpx.post(server.url + "/v1/feedback", timeout=60, json={
            "id": first["id"], "rating": "down", "correction": ANSWER}).raise_for_status().json()
        admin.post(f"/admin/api/feedback/{fb['feedback_id']}/approve").raise_for_status()
        t_approved = time.perf_counter() - t0
        memory_answer = chat_once(server.url, QUESTION, max_tokens=32)
        t_memory = time.perf_counter() - t0
        run_id = admin.post("/admin/api/train").raise_for_status().json()["run_id"]
        deadline = time.perf_counter() + 1800
        while (run := admin.get(f"/admin/api/runs/{run_id}").raise_for_status().json())["status"] in ACTIVE:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"Round {run_id} still {run['status']} ({run['phase']}) after 30 minutes.")
            time.sleep(1)
        t_trained = time.perf_counter() - t0
        weights_answer, t_weights = "", None
        deadline = time.perf_counter() + 60  # the adapter follower swaps the promoted version in within a second
        while run["status"] == "promoted" and time.perf_counter() < deadline:
            weights_answer = chat_once(server.url, QUESTION, max_tokens=32, memory=False)
            if _exact(weights_answer):
                t_weights = time.perf_counter() - t0
                break
            time.sleep(1)
    return {"approved": t_approved, "memory": t_memory, "memory_exact": _exact(memory_answer),
            "memory_answer": memory_answer, "trained": t_trained, "status": run["status"], "error": run.get("error"),
            "weights": t_weights, "weights_answer": weights_answer}


def run(opts: Options) -> Result:
    work = opts.fresh_dir("teach")
    cli = teach_cli(opts, work / "cli")
    trl = trl_baseline(opts, work / "cli")
    rest = teach_rest(opts, work / "rest")
    m = cli["metrics"]
    kaizen_tps = m.get("tokens_per_s") or 0.0
    trl_tps = trl["tokens"] / trl["seconds"]
    table = Table(f"Teaching \"{QUESTION}\" → \"{ANSWER}\"", ["step", "value"], [
        ["`kaizen teach` wall time (process start to exit)", secs(cli["wall"])],
        ["  verdict", cli["reason"]],
        ["  round: steps, training, evaluation",
         f"{m.get('steps')} steps, {m.get('train_seconds')} s training, {m.get('eval_seconds')} s evaluation, "
         f"{m.get('seconds')} s whole round"],
        ["  `kaizen ask --no-memory` answer", f"{cli['answer']!r} ({'exact' if cli['exact'] else 'NOT exact'}, "
                                              f"{secs(cli['ask_wall'])})"],
        ["REST: correction posted and approved", secs(rest["approved"])],
        ["REST: served from the retrieval memory",
         f"{secs(rest['memory'])} "
         f"({'exact' if rest['memory_exact'] else 'NOT exact: ' + repr(rest['memory_answer'])})"],
        ["REST: round finished (POST /admin/api/train → run done)", f"{secs(rest['trained'])}, {rest['status']}"
                                                                    + (f" ({rest['error']})" if rest["error"] else "")],
        ["REST: /v1/chat/completions with memory off returns it",
         secs(rest["weights"]) if rest["weights"] else f"never within 60 s; last answer {rest['weights_answer']!r}"],
        ["Kaizen round training throughput", f"{kaizen_tps:.0f} tokens/s ({m.get('train_tokens')} tokens)"],
        ["TRL SFTTrainer, default SFTConfig", f"{trl_tps:.0f} tokens/s: {trl['rows']} rows × {trl['epochs']} epochs, "
                                              f"{trl['steps']} steps of {trl['batch']}, {trl['seconds']:.1f} s, lr "
                                              f"{trl['lr']}, bf16={trl['bf16']}, gradient checkpointing={trl['gc']}"],
        ["  TRL adapter's answer", f"{trl['answer']!r} ({'exact' if trl['exact'] else 'not exact'})"],
    ])
    exact_note = ("answers exactly without memory" if cli["exact"] else
                  f"NOT exact without memory: {cli['answer'][:60]!r}")
    rows = [
        Row("Teach a fact: `kaizen teach` to a promoted adapter", secs(cli["wall"]),
            f"~{BRIEF_SECONDS:.0f} s (brief: GPT-2 on a laptop)", ratio(cli["wall"], BRIEF_SECONDS),
            f"{cli['verdict']}; {exact_note}"),
        Row("Teach over REST: correction → approve → train → answered from the weights",
            secs(rest["weights"]) if rest["weights"] else f"not served ({rest['status']})",
            f"{secs(rest['memory'])} from the retrieval memory", ratio(rest["weights"], rest["memory"])
            if rest["weights"] else "", f"round {rest['status']} after {secs(rest['trained'])}"),
        Row("Training throughput, Kaizen round", f"{kaizen_tps:.0f} tokens/s", f"{trl_tps:.0f} tokens/s TRL SFTTrainer "
            "defaults", ratio(kaizen_tps, trl_tps),
            f"TRL after {trl['steps']} steps: {'exact' if trl['exact'] else 'not exact'}"),
    ]
    return Result("teach", rows, [table])
