"""One whole training round: lock, dataset, LoRA, evaluation, gate, publish, promote.

    outcome = run_round(db=db, settings=settings, trigger="cli")

Only one round runs at a time anywhere (a row in the `locks` table, taken over if its holder
died). The round's progress and result are written to `training_runs`, so the admin tab can
follow a round that runs in another process. The new adapter is evaluated without the retrieval
memory, as it will be served (same dtype, same system prompt), and is published atomically as
`adapters/vN` whatever the verdict; it becomes the active version only if the gate passes. A
round's size is bounded by TrainConfig's budgets (new facts from the queue, sampled replay), and
each new fact's outcome (learned by this version, one more attempt, parked) is written in the
same transaction that records the version. Any
failure (an exception, Ctrl-C, a full disk) marks the run failed and leaves the active adapter
as it was.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from feedback_db import store
from feedback_db.db import Database
from kaizen import adapters
from kaizen.adapters import PREFERENCE_DIR
from kaizen.base_model import load_model, resolve_model
from kaizen.errors import ConflictError, KaizenError
from kaizen.lr_schedule import past_rounds, plan_lr
from kaizen.metrics import RoundMetrics
from kaizen.ports import ScopeRouter
from kaizen.prompts import load_persona
from kaizen.settings import GateLimits, Settings, TrainConfig
from trainer.anchors import build_anchors
from trainer.config import lora_config
from trainer.dataset import Fact, build_training_set
from trainer.evaluate import answer_key, evaluate_adapter, has_preference, load_general_prompts
from trainer.gate import Verdict, decide, settle
from trainer.lora import Progress, carry_adapter, train_round
from trainer.preference import can_train, split_heldout, train_preference
from trainer.progress import RunReporter

LOCK = store.TRAINING_LOCK


def _count_new(db: Database) -> int:
    with db.session() as s:
        return store.count_new_since_last_round(session=s)


def _next_free_version(db: Database, adapters_dir: Path) -> str:
    """The next version name: after every recorded one, and not a folder that a round killed
    between publishing and recording left behind."""
    with db.session() as s:
        version = store.next_version(session=s)
    while adapters.version_dir(adapters_dir, version).exists():
        version = f"v{int(version[1:]) + 1}"
    return version


class NoDataError(KaizenError):
    status = 409


@dataclass
class RoundOutcome:
    run_id: int
    version: str | None
    promoted: bool
    reason: str
    metrics: RoundMetrics
    seconds: float


def _baseline(replayed: list[Fact], known: dict[str, list[Any]]) -> float | None:
    """The active version's recall of the replayed facts: its lineage's last check of each (see
    RoundMetrics.facts); a learned fact no version checked again since counts as recalled."""
    if not replayed:
        return None
    recalled = []
    for f in replayed:
        seen = known.get(str(f.item_id))
        recalled.append(bool(seen[1]) if seen is not None and seen[0] == answer_key(f.answer) else True)
    return sum(recalled) / len(recalled)


def run_round(*, db: Database, settings: Settings, cfg: TrainConfig | None = None, limits: GateLimits | None = None,
              trigger: str = "cli", force: bool = True, threads: int = 0, run_id: int | None = None,
              progress: Callable[[Progress], None] | None = None, scope: ScopeRouter | None = None) -> RoundOutcome:
    """Train, evaluate and maybe promote one adapter. Raises ConflictError if a round is running,
    NoDataError if there is nothing (or, without force, nothing new) to learn. `scope` is the serving
    side's routing by scope (None: the adapter answers everything), so the version is measured as served."""
    cfg = cfg or TrainConfig()
    limits = limits or GateLimits()
    owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # fits locks.owner, String(64)
    with db.write() as s:
        store.fail_stale_runs(session=s, exclude=run_id)
        if not store.acquire_lock(session=s, name=LOCK, owner=owner, pid=os.getpid()):
            if run_id is not None:
                store.update_run(session=s, run_id=run_id, status="failed", error="Another round was running.")
            raise ConflictError("A training round is already running; wait for it to finish.")
    try:
        if not force and _count_new(db) == 0:
            raise NoDataError("Nothing new to learn since the last round (use --force to train anyway).")
        with db.write() as s:
            round_index = store.completed_rounds(session=s)
            if run_id is None:
                run_id = store.create_run(session=s, trigger=trigger, round_index=round_index,
                                          config=cfg.model_dump()).id
            else:
                store.update_run(session=s, run_id=run_id, status="running", pid=os.getpid(), round_index=round_index,
                                 config=cfg.model_dump())
        reporter = RunReporter(db, run_id, owner, progress)
        try:
            outcome = _run(db, settings, cfg, limits, run_id, round_index, reporter, threads, scope)
            return outcome
        except BaseException as exc:
            message = "Interrupted (Ctrl-C)." if isinstance(exc, KeyboardInterrupt) else (
                exc.message if isinstance(exc, KaizenError) else f"{type(exc).__name__}: {exc}")
            with db.write() as s:
                status = "nodata" if isinstance(exc, NoDataError) else "failed"
                store.update_run(session=s, run_id=run_id, status=status, error=message, finished_at=store.utcnow())
            raise
    finally:
        adapters.clean_workdirs(settings.adapters_dir)
        with db.write() as s:
            store.release_lock(session=s, name=LOCK, owner=owner)


def _run(db: Database, settings: Settings, cfg: TrainConfig, limits: GateLimits, run_id: int, round_index: int,
         reporter: RunReporter, threads: int, scope: ScopeRouter | None) -> RoundOutcome:
    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    reporter.phase("dataset")
    persona = load_persona(db)
    with db.session() as s:
        active = store.get_active_adapter(session=s)
        active_row = store.get_adapter(session=s, version=active) if active != adapters.BASE else None
        plan = plan_lr(cfg, round_index, past_rounds(store.list_adapters(session=s)))
    with db.write() as s:  # the run row says which rates this round uses, and why
        store.update_run(session=s, run_id=run_id, config={**cfg.model_dump(), "lr_plan": plan.to_dict()})
    training = build_training_set(db=db, persona=persona, seed=cfg.seed, round_index=round_index,
                                  max_new_facts=cfg.max_new_facts, replay_facts=cfg.replay_facts,
                                  replay_ratings=cfg.replay_ratings, replay_variants=cfg.replay_variants,
                                  preference=cfg.preference)
    kto_rows, heldout_rows = split_heldout(training.ratings, cfg.heldout_ratings)
    train_kto = cfg.preference == "kto" and can_train(kto_rows, cfg.kto_min_rows)
    if not training.examples and not train_kto:
        raise NoDataError("There is nothing to train on yet: no approved knowledge or corrections, and too few "
                          f"ratings for preference learning (needs {cfg.kto_min_rows} with both 👍 and 👎).")
    training.counts.update(kto_train_rows=len(kto_rows) if train_kto else 0, kto_heldout_rows=len(heldout_rows))
    known = RoundMetrics.from_dict(active_row.metrics).facts if active_row else {}
    facts = training.facts
    baseline_retention = _baseline(training.old_facts, known)
    init_dir = None
    if active_row is not None:
        init_dir = adapters.version_dir(settings.adapters_dir, active)
        adapters.verify(init_dir)

    reporter.phase("model")
    model_path = resolve_model(settings.model, settings.data_dir)
    model, tokenizer = load_model(model_path, "float32")
    prompts = load_general_prompts()
    cache = Path(settings.data_dir) / "cache"
    reporter.phase("anchors")
    anchors = build_anchors(model, tokenizer, model_path=model_path, prompts=prompts["anchor"],
                            system_prompt=training.system_prompt, max_new_tokens=cfg.anchor_max_new_tokens,
                            facts=facts, cache_dir=cache)

    reporter.phase("train")
    workdir = adapters.new_workdir(settings.adapters_dir)
    probe = [(training.conversation(f.question), f.answer) for f in facts]
    lora = lora_config(cfg, num_layers=model.config.num_hidden_layers)
    if training.examples:
        result = train_round(model=model, tokenizer=tokenizer, examples=training.examples + anchors, lora=lora,
                             cfg=cfg, round_index=round_index, init_adapter_dir=init_dir, out_dir=workdir,
                             progress=reporter, probe=probe or None, peak_lr=plan.lr)
    else:  # a preference-only round: the knowledge adapter stays what it was
        result = carry_adapter(model, lora, init_dir, workdir)
    preference = None
    if train_kto:
        reporter.phase("preference")
        preference = train_preference(model=model, tokenizer=tokenizer, rows=kto_rows, lora=lora, cfg=cfg,
                                      out_dir=workdir / PREFERENCE_DIR, progress=reporter, lr=plan.kto_lr)
    elif init_dir is not None and has_preference(init_dir) and cfg.preference == "kto":
        shutil.copytree(init_dir / PREFERENCE_DIR, workdir / PREFERENCE_DIR)  # too few new ratings: keep it

    def judge() -> tuple[RoundMetrics, Verdict]:
        reporter.phase("evaluate")
        measured = evaluate_adapter(model, tokenizer, model_path, settings.dtype, training, facts, workdir, cache,
                                    scope=scope, heldout_ratings=heldout_rows, active_dir=init_dir,
                                    max_len=cfg.kto_max_length)
        measured = dataclasses.replace(
            measured, baseline_retention=baseline_retention, steps=result.steps,
            train_seconds=round(result.seconds, 2), train_tokens=result.train_tokens,
            tokens_per_s=round(result.train_tokens / max(result.seconds, 1e-9), 1),
            stopped_early=result.stopped_early, lr=plan.lr, kto_lr=plan.kto_lr if preference else None,
            lr_reason=plan.reason,
            kto_steps=preference.steps if preference else None,
            kto_seconds=preference.seconds if preference else None)
        verdict = decide(measured, limits)
        return dataclasses.replace(measured, failed_checks=list(verdict.failed)), verdict

    metrics, verdict = judge()
    if not verdict.promote and preference is not None and training.examples:
        # Knowledge must not wait for a preference adapter that hurts: judge the version again with the active
        # version's preference adapter (or none) in place of the new one, and say so.
        shutil.rmtree(workdir / PREFERENCE_DIR)
        if init_dir is not None and has_preference(init_dir):
            shutil.copytree(init_dir / PREFERENCE_DIR, workdir / PREFERENCE_DIR)
        dropped = verdict.reason
        metrics, verdict = judge()
        metrics.preference_dropped = dropped
        verdict = Verdict(verdict.promote, f"{verdict.reason}; the new preference adapter was left out ({dropped})",
                          failed=verdict.failed)
    with db.session() as s:
        verdict = verdict.held_by(store.get_pinned_adapter(session=s))
    outcome = settle(training.new_facts, metrics, promoted=verdict.promote, park_after=cfg.park_after)
    # The lineage's record: this round's checks over what the active version knew of facts still learned.
    lineage = {k: v for k, v in known.items() if k in training.learned_ids}
    metrics = dataclasses.replace(
        metrics, facts={**lineage, **metrics.facts}, attempted_ids=[f.item_id for f in training.new_facts],
        learned_ids=outcome.learned, parked_ids=outcome.parked, learned=len(outcome.learned),
        parked=len(outcome.parked))

    reporter.phase("save")
    meta = {"round": round_index, "run_id": run_id, "base_model": model_path, "config": cfg.model_dump(),
            "data_counts": training.counts, "loss_curve": result.loss_curve, "metrics": metrics.to_dict(),
            "preference": dataclasses.asdict(preference) if preference else None,
            "verdict": verdict.label, "reason": verdict.reason}
    version = _next_free_version(db, settings.adapters_dir)
    path = adapters.publish(workdir, settings.adapters_dir, version, meta)
    metrics.seconds = round(time.perf_counter() - started, 2)
    with db.write() as s:
        store.record_adapter(session=s, version=version, run_id=run_id, round_index=round_index,
                             verdict=verdict.label, reason=verdict.reason, metrics=metrics.to_dict(), path=str(path))
        if verdict.promote:
            store.set_active_adapter(session=s, version=version)
        # A superseded answer is never trained; parked, it no longer counts as waiting in the queue.
        store.record_fact_outcomes(session=s, attempted=outcome.attempted, learned=outcome.learned, version=version,
                                   parked=[*outcome.parked, *training.superseded_ids])
        # The run row ends with the knowledge training's figures (the preference phase's are in meta.json).
        store.update_run(session=s, run_id=run_id, status=verdict.label, adapter_version=version,
                         data_counts=training.counts, loss_curve=result.loss_curve, phase="done",
                         step=result.steps, total_steps=cfg.max_steps if result.steps else 0,
                         loss=result.loss_curve[-1] if result.loss_curve else None,
                         finished_at=store.utcnow(), error=None if verdict.promote or verdict.held else verdict.reason)
    return RoundOutcome(run_id=run_id, version=version, promoted=verdict.promote, reason=verdict.reason,
                        metrics=metrics, seconds=metrics.seconds)
