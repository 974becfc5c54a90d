"""One whole training round: lock, dataset, LoRA, evaluation, gate, publish, promote.

    outcome = run_round(db=db, settings=settings, trigger="cli")

Only one round runs at a time anywhere (a row in the `locks` table, taken over if its holder
died). The round's progress and result are written to `training_runs`, so the admin tab can
follow a round that runs in another process. The new adapter is evaluated without the retrieval
memory, as it will be served (same dtype, same system prompt), and is published atomically as
`adapters/vN` whatever the verdict; it becomes the active version only if the gate passes. Any
failure (an exception, Ctrl-C, a full disk) marks the run failed and leaves the active adapter
as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bot.chat import load_persona
from bot.engine import load_model
from bot.model_source import resolve_model
from errors import ConflictError, KaizenError
from feedback_db import store
from feedback_db.db import Database
from settings import Settings
from trainer import adapters
from trainer.augment import strip_diacritics
from trainer.config import TrainConfig, lora_config
from trainer.dataset import Fact, TrainingSet, build_training_set
from trainer.evaluate import drift, exact_recall, generate_answers, load_general_prompts, normalize_answer, same_prefix_count
from trainer.gate import GateLimits, decide
from trainer.lora import Progress, anchor_examples, train_round

LOCK = "training"
STALE_LOCK_S = 30 * 60
EVAL_MAX_NEW_TOKENS = 64


class NoDataError(KaizenError):
    status = 409


@dataclass
class RoundOutcome:
    run_id: int
    version: str | None
    promoted: bool
    reason: str
    metrics: dict
    seconds: float


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answer_key(answer: str) -> str:
    return hashlib.sha1(answer.encode("utf-8")).hexdigest()[:12]


def _mark_new(training: TrainingSet, known: dict) -> tuple[list[Fact], float | None]:
    """Facts the active adapter was not checked on (or whose answer changed) are new.

    Returns the re-marked facts and the active adapter's recall of the old ones (None if none).
    """
    facts, recalled = [], []
    for f in training.facts:
        seen = known.get(str(f.item_id))
        old = seen is not None and seen[0] == _answer_key(f.answer)
        facts.append(dataclasses.replace(f, new=not old))
        if old:
            recalled.append(bool(seen[1]))
    return facts, (sum(recalled) / len(recalled) if recalled else None)


def _words(text: str) -> set[str]:
    return set(strip_diacritics(text).casefold().replace("?", " ").replace("!", " ").split())


def _overlaps(prompt: str, facts: list[Fact]) -> bool:
    """An anchor prompt that shares most words of a taught question ("Xin chào buổi sáng" vs the
    taught "Xin chào") would hold the old answer in place against the new one: leave it out."""
    words = _words(prompt)
    return any(len(words & q) >= max(1, len(q) / 2) for q in (_words(f.question) for f in facts))


def _cached(path: Path, key: dict, compute: Callable[[], list]) -> list:
    """Base-model answers depend only on the model, prompts and settings: compute them once."""
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    file = path / f"{digest}.json"
    if file.is_file():
        return json.loads(file.read_text(encoding="utf-8"))
    value = compute()
    path.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".part")
    tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    tmp.replace(file)
    return value


class _RunReporter:
    """Writes progress to the run row (at most every `every_s` seconds) and to the caller."""

    def __init__(self, db: Database, run_id: int, owner: str, callback: Callable[[Progress], None] | None,
                 every_s: float = 0.5):
        self.db, self.run_id, self.owner, self.callback, self.every_s = db, run_id, owner, callback, every_s
        self.curve: list[float] = []
        self._last = 0.0

    def phase(self, phase: str) -> None:
        with self.db.write() as s:
            store.update_run(session=s, run_id=self.run_id, phase=phase)
            store.heartbeat_lock(session=s, name=LOCK, owner=self.owner)

    def __call__(self, p: Progress) -> None:
        self.curve.append(round(float(p.loss), 5))
        now = time.monotonic()
        if now - self._last >= self.every_s or p.step >= p.total_steps:
            self._last = now
            with self.db.write() as s:
                store.update_run(session=s, run_id=self.run_id, step=p.step, total_steps=p.total_steps,
                                 loss=float(p.loss), lr=float(p.lr), eta_s=float(p.eta_s), loss_curve=list(self.curve))
                store.heartbeat_lock(session=s, name=LOCK, owner=self.owner)
        if self.callback:
            self.callback(p)


def count_new(*, db: Database, settings: Settings) -> int:
    """Approved items and ratings that arrived since the last finished round."""
    with db.session() as s:
        last = store.last_finished_run(session=s)
        since = last.started_at if last else None
        return store.knowledge_changed_since(session=s, since=since) + store.ratings_since(session=s, since=since)


def run_round(*, db: Database, settings: Settings, cfg: TrainConfig | None = None, limits: GateLimits | None = None,
              trigger: str = "cli", force: bool = True, threads: int = 0, run_id: int | None = None,
              progress: Callable[[Progress], None] | None = None) -> RoundOutcome:
    """Train, evaluate and maybe promote one adapter. Raises ConflictError if a round is running,
    NoDataError if there is nothing (or, without force, nothing new) to learn."""
    cfg = cfg or TrainConfig()
    limits = limits or GateLimits()
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with db.write() as s:
        store.fail_stale_runs(session=s, alive=pid_alive, exclude=run_id)
        if not store.acquire_lock(session=s, name=LOCK, owner=owner, pid=os.getpid(), stale_after_s=STALE_LOCK_S,
                                  alive=pid_alive):
            if run_id is not None:
                store.update_run(session=s, run_id=run_id, status="failed", error="Another round was running.")
            raise ConflictError("A training round is already running; wait for it to finish.")
    workdir = None
    try:
        if not force and count_new(db=db, settings=settings) == 0:
            raise NoDataError("Nothing new to learn since the last round (use --force to train anyway).")
        with db.write() as s:
            round_index = store.completed_rounds(session=s)
            if run_id is None:
                run_id = store.create_run(session=s, trigger=trigger, round_index=round_index,
                                          config=dataclasses.asdict(cfg)).id
            else:
                store.update_run(session=s, run_id=run_id, status="running", pid=os.getpid(), round_index=round_index,
                                 config=dataclasses.asdict(cfg))
        reporter = _RunReporter(db, run_id, owner, progress)
        try:
            outcome = _run(db, settings, cfg, limits, run_id, round_index, reporter, threads)
            return outcome
        except BaseException as exc:
            message = "Interrupted (Ctrl-C)." if isinstance(exc, KeyboardInterrupt) else (
                exc.message if isinstance(exc, KaizenError) else f"{type(exc).__name__}: {exc}")
            with db.write() as s:
                store.update_run(session=s, run_id=run_id, status="nodata" if isinstance(exc, NoDataError) else "failed",
                                 error=message, finished_at=store.utcnow())
            raise
    finally:
        adapters.clean_workdirs(settings.adapters_dir)
        with db.write() as s:
            store.release_lock(session=s, name=LOCK, owner=owner)


def _run(db: Database, settings: Settings, cfg: TrainConfig, limits: GateLimits, run_id: int, round_index: int,
         reporter: _RunReporter, threads: int) -> RoundOutcome:
    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    reporter.phase("dataset")
    persona = load_persona(db)
    with db.session() as s:
        active = store.get_active_adapter(session=s)
        active_row = store.get_adapter(session=s, version=active) if active != adapters.BASE else None
    training = build_training_set(db=db, persona=persona, seed=cfg.seed)
    if not training.examples:
        raise NoDataError("There is nothing to train on yet: no approved knowledge, corrections or ratings.")
    facts, baseline_retention = _mark_new(training, (active_row.metrics or {}).get("facts", {}) if active_row else {})
    init_dir = None
    if active_row is not None:
        init_dir = adapters.version_dir(settings.adapters_dir, active)
        adapters.verify(init_dir)

    model_path = resolve_model(settings.model, settings.data_dir)
    model, tokenizer = load_model(model_path, "float32")
    prompts = load_general_prompts()
    cache = Path(settings.data_dir) / "cache"
    reporter.phase("anchors")
    anchor_key = {"model": model_path, "prompts": prompts["anchor"], "system": training.system_prompt,
                  "n": cfg.anchor_max_new_tokens, "kind": "anchors"}
    anchors_json = _cached(cache, anchor_key, lambda: [list(e.messages) for e in anchor_examples(
        model, tokenizer, prompts["anchor"], training.system_prompt, cfg.anchor_max_new_tokens)])
    from trainer.lora import Example

    anchors = [Example(tuple(m), kind="anchor", source=f"anchor:{i}") for i, m in enumerate(anchors_json)
               if not _overlaps(m[-2]["content"], facts)]

    reporter.phase("train")
    workdir = adapters.new_workdir(settings.adapters_dir)
    probe = [(training.conversation(f.question), f.answer) for f in facts]
    result = train_round(model=model, tokenizer=tokenizer, examples=training.examples + anchors, lora=lora_config(cfg, num_layers=model.config.num_hidden_layers),
                         cfg=cfg, round_index=round_index, init_adapter_dir=init_dir, out_dir=workdir,
                         progress=reporter, probe=probe or None)

    reporter.phase("evaluate")
    metrics = _evaluate(model, tokenizer, model_path, settings, training, facts, workdir, cache)
    metrics["baseline_retention"] = baseline_retention
    metrics.update(steps=result.steps, train_seconds=round(result.seconds, 2), train_tokens=result.train_tokens,
                   tokens_per_s=round(result.train_tokens / max(result.seconds, 1e-9), 1),
                   stopped_early=result.stopped_early, lr=cfg.round_lr(round_index))
    verdict = decide(metrics, limits)

    reporter.phase("save")
    meta = {"round": round_index, "run_id": run_id, "base_model": model_path, "config": dataclasses.asdict(cfg),
            "data_counts": training.counts, "loss_curve": result.loss_curve, "metrics": metrics,
            "verdict": verdict.label, "reason": verdict.reason}
    with db.write() as s:
        version = store.next_version(session=s)
    while adapters.version_dir(settings.adapters_dir, version).exists():  # published by a round killed before its row
        version = f"v{int(version[1:]) + 1}"
    path = adapters.publish(workdir, settings.adapters_dir, version, meta)
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    with db.write() as s:
        store.record_adapter(session=s, version=version, run_id=run_id, round_index=round_index,
                             verdict=verdict.label, reason=verdict.reason, metrics=metrics, path=str(path))
        if verdict.promote:
            store.set_active_adapter(session=s, version=version)
        store.update_run(session=s, run_id=run_id, status=verdict.label, adapter_version=version,
                         data_counts=training.counts, loss_curve=result.loss_curve, phase="done",
                         finished_at=store.utcnow(), error=None if verdict.promote else verdict.reason)
    return RoundOutcome(run_id=run_id, version=version, promoted=verdict.promote, reason=verdict.reason,
                        metrics=metrics, seconds=metrics["seconds"])


def _evaluate(model, tokenizer, model_path: str, settings: Settings, training: TrainingSet, facts: list[Fact],
              workdir: Path, cache: Path) -> dict:
    """Recall of new and old facts, paraphrase recall and drift, as served (dtype) without memory."""
    from peft import PeftModel

    t0 = time.perf_counter()
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(settings.dtype, torch.float32)
    model.to(dtype)
    heldout = load_general_prompts()["heldout"]
    heldout_convs = [training.conversation(p) for p in heldout]
    base_key = {"model": model_path, "prompts": heldout, "system": training.system_prompt, "dtype": settings.dtype,
                "n": EVAL_MAX_NEW_TOKENS, "kind": "heldout"}
    base_answers = _cached(cache, base_key, lambda: generate_answers(model, tokenizer, heldout_convs,
                                                                     EVAL_MAX_NEW_TOKENS))
    tuned = PeftModel.from_pretrained(model, str(workdir))
    tuned.eval()
    paraphrases = training.paraphrases(facts)
    convs = [training.conversation(f.question) for f in facts] + [training.conversation(q) for q, _ in paraphrases]
    longest = max([len(tokenizer(f.answer)["input_ids"]) for f in facts] or [16]) + 8
    answers = generate_answers(tuned, tokenizer, convs, longest) if convs else []
    fact_answers, para_answers = answers[:len(facts)], answers[len(facts):]
    new_answers = generate_answers(tuned, tokenizer, heldout_convs, EVAL_MAX_NEW_TOKENS)
    tuned.unload()

    def recall(selected: list[int]) -> float | None:
        if not selected:
            return None
        return exact_recall([fact_answers[i] for i in selected], [facts[i].answer for i in selected])

    taught = [normalize_answer(f.answer) for f in facts]
    leaks = sum(any(t and t in normalize_answer(a) for t in taught) for a in new_answers)
    per_fact = {str(f.item_id): [_answer_key(f.answer), normalize_answer(a) == normalize_answer(f.answer)]
                for f, a in zip(facts, fact_answers)}
    return {
        "new_facts": sum(f.new for f in facts),
        "old_facts": sum(not f.new for f in facts),
        "new_recall": recall([i for i, f in enumerate(facts) if f.new]),
        "retention": recall([i for i, f in enumerate(facts) if not f.new]),
        "paraphrase_recall": exact_recall(para_answers, [a for _, a in paraphrases]) if paraphrases else None,
        "drift": round(drift(base_answers, new_answers, tokenizer), 4),
        "heldout_unchanged": same_prefix_count(base_answers, new_answers, tokenizer),
        "leak": round(leaks / len(heldout), 4) if heldout else 0.0,
        "heldout_total": len(heldout),
        "facts": per_fact,
        "eval_seconds": round(time.perf_counter() - t0, 2),
    }
