"""Whole rounds on the tiny random model: versions, gate verdicts, decay, locks and failures."""

import os

import pytest

import trainer.rounds
from feedback_db import store
from feedback_db.db import Database
from kaizen import adapters
from kaizen.errors import ConflictError
from kaizen.settings import Settings, TrainConfig
from tests.trainer.scripted import scripted_evaluation
from trainer.rounds import LOCK, NoDataError, run_round

FAST = TrainConfig(max_steps=3, batch_size=4, anchors_per_step=2, early_stop_exact=False, anchor_max_new_tokens=8)


@pytest.fixture
def learns(monkeypatch):
    """Script which facts the tiny model's weights "recall" (it cannot learn a sentence for real)."""
    def script(recalls=lambda fact: True):
        monkeypatch.setattr(trainer.rounds, "evaluate_adapter", scripted_evaluation(recalls))
    return script


@pytest.fixture
def env(tmp_path, tiny_model_dir):
    s = Settings(data_dir=tmp_path / "data", model=str(tiny_model_dir), dtype="float32")
    s.data_dir.mkdir(parents=True)
    db = Database(s.database_url)
    yield s, db
    db.close()


def _teach(db, q="Xin chào", a="Công ty BICweb kính chào quý khách!"):
    with db.write() as s:
        store.add_knowledge(session=s, question=q, answer=a, origin="teach", verbatim=True)


def _state(db):
    with db.session() as s:
        versions = [(a.version, a.verdict) for a in store.list_adapters(session=s)]
        runs = [(r.status, r.adapter_version) for r in store.list_runs(session=s)]
        return store.get_active_adapter(session=s), versions, runs, store.get_lock(session=s, name=LOCK)


def test_a_failing_gate_keeps_the_version_as_rejected(env):
    settings, db = env
    _teach(db)
    out = run_round(db=db, settings=settings, cfg=FAST)  # a random tiny model cannot recall the sentence
    assert not out.promoted and "new-fact recall 0%" in out.reason
    active, versions, runs, lock = _state(db)
    assert active == "base" and versions == [("v1", "rejected")] and runs == [("rejected", "v1")] and lock is None
    meta = adapters.verify(settings.adapters_dir / "v1")
    assert meta["verdict"] == "rejected" and len(meta["loss_curve"]) == 3 and meta["data_counts"]["sft_rows"] == 10
    assert meta["metrics"]["new_facts"] == 1 and meta["metrics"]["drift"] is not None
    assert 0.0 <= meta["metrics"]["locality"] <= 1.0 and meta["metrics"]["attempted_ids"] == [1]
    with db.session() as s:  # a rejected round counts the attempt
        item = store.get_knowledge(session=s, item_id=1)
        assert (item.train_attempts, item.learned_version, item.parked) == (1, None, False)


def test_promotion_then_a_second_round_continues_with_a_lower_lr(env, learns):
    settings, db = env
    learns()
    _teach(db)
    seen = []
    first = run_round(db=db, settings=settings, cfg=FAST, progress=seen.append)
    assert first.promoted and _state(db)[0] == "v1"
    assert [p.step for p in seen] == [1, 2, 3]
    _teach(db, "CHOREI có nghĩa là gì?", "Buổi họp giao ban buổi sáng kiểu Nhật.")
    second = run_round(db=db, settings=settings, cfg=FAST)
    assert second.promoted and _state(db)[0] == "v2"
    assert second.metrics.lr < first.metrics.lr
    assert second.metrics.new_facts == 1 and second.metrics.old_facts == 1  # fact 1 was replayed and checked
    assert second.metrics.baseline_retention == 1.0 and second.metrics.learned_ids == [2]
    with db.session() as s:
        assert [i.learned_version for i in store.list_knowledge(session=s)] == ["v1", "v2"]
    with db.session() as s:
        assert [r.round_index for r in store.list_runs(session=s)] == [1, 0]


def test_a_version_pinned_by_the_admin_is_not_replaced_by_a_round_that_passes(env, learns):
    """Issue 13: a scheduled round promoted v2 over the version the admin had just activated by hand."""
    settings, db = env
    learns()
    _teach(db)
    assert run_round(db=db, settings=settings, cfg=FAST).promoted
    with db.write() as s:
        store.set_active_adapter(session=s, version="base")  # a rollback by hand
        store.set_pinned_adapter(session=s, version="base")
    _teach(db, "CHOREI có nghĩa là gì?", "Buổi họp giao ban buổi sáng kiểu Nhật.")
    held = run_round(db=db, settings=settings, cfg=FAST, force=False)  # the fact is new: the round runs
    assert not held.promoted and "not activated: the admin pinned base" in held.reason
    active, versions, runs, _ = _state(db)
    assert active == "base" and versions == [("v1", "promoted"), ("v2", "passed")] and runs[0] == ("passed", "v2")
    with db.session() as s:  # not served, so not learned: trained again after the pin is released
        assert [i.learned_version for i in store.list_knowledge(session=s)] == ["v1", None]
        assert store.count_new_since_last_round(session=s) == 0  # and no reason for a round on its own
    with db.write() as s:
        store.set_pinned_adapter(session=s, version=None)
    assert run_round(db=db, settings=settings, cfg=FAST).promoted and _state(db)[0] == "v3"


def test_no_data_says_so_and_creates_no_version(env):
    settings, db = env
    with pytest.raises(NoDataError, match="nothing to train"):
        run_round(db=db, settings=settings, cfg=FAST)
    active, versions, runs, lock = _state(db)
    assert versions == [] and runs == [("nodata", None)] and lock is None
    assert not settings.adapters_dir.exists() or not list(settings.adapters_dir.iterdir())


def test_nothing_new_without_force(env, learns):
    settings, db = env
    learns()
    _teach(db)
    run_round(db=db, settings=settings, cfg=FAST)
    with pytest.raises(NoDataError, match="Nothing new"):
        run_round(db=db, settings=settings, cfg=FAST, force=False)


def test_a_second_round_while_one_runs_is_refused(env):
    settings, db = env
    _teach(db)
    with db.write() as s:
        assert store.acquire_lock(session=s, name=LOCK, owner="other", pid=os.getpid(), stale_after_s=600,
                                  alive=lambda pid: True)
    with pytest.raises(ConflictError):
        run_round(db=db, settings=settings, cfg=FAST)
    assert _state(db)[1] == []


def test_a_crash_mid_training_marks_the_run_failed_and_changes_nothing(env, learns):
    settings, db = env
    learns()
    _teach(db)
    run_round(db=db, settings=settings, cfg=FAST)

    def crash(progress):
        if progress.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_round(db=db, settings=settings, cfg=FAST, progress=crash)
    active, versions, runs, lock = _state(db)
    assert active == "v1" and versions == [("v1", "promoted")] and lock is None
    assert runs[0] == ("failed", None)
    with db.session() as s:
        assert store.list_runs(session=s)[0].error == "Interrupted (Ctrl-C)."
    assert [p.name for p in settings.adapters_dir.iterdir()] == ["v1"]


def test_a_fact_that_never_learns_is_parked_and_the_next_queued_fact_is_trained(env, learns):
    settings, db = env
    learns(lambda fact: fact.item_id != 1)  # the first fact never comes out exact
    _teach(db)
    _teach(db, "CHOREI có nghĩa là gì?", "Buổi họp giao ban buổi sáng kiểu Nhật.")
    cfg = FAST.replace(max_new_facts=1, park_after=2)
    verdicts = []
    for _ in range(2):
        out = run_round(db=db, settings=settings, cfg=cfg, force=False)
        verdicts.append(out.promoted)
        assert out.metrics.attempted_ids == [1] and "0 of 1 learned" in out.reason
    assert verdicts == [False, False] and out.metrics.parked_ids == [1]
    with db.session() as s:
        assert [i.id for i in store.list_parked(session=s)] == [1]
        assert store.get_knowledge(session=s, item_id=1).enabled  # still served by the memory
    third = run_round(db=db, settings=settings, cfg=cfg, force=False)  # the queue moved on
    assert third.promoted and third.metrics.attempted_ids == [2] and third.metrics.learned_ids == [2]
    with db.session() as s:
        assert store.get_active_adapter(session=s) == third.version
        assert [(i.train_attempts, i.learned_version, i.parked) for i in store.list_knowledge(session=s)] == [
            (2, None, True), (0, third.version, False)]
    with pytest.raises(NoDataError, match="Nothing new"):  # nothing left to learn: parked facts do not count
        run_round(db=db, settings=settings, cfg=cfg, force=False)


class _Scope:
    """A scripted scope router (kaizen.ports.ScopeRouter): in scope iff the text contains `word`."""

    def __init__(self, word: str) -> None:
        self.word = word
        self.asked: list[str] = []

    def in_scope(self, text: str) -> bool:
        self.asked.append(text)
        return self.word in text


def test_locality_and_leak_are_measured_as_served_by_routing_by_scope(env, learns):
    settings, db = env
    learns()
    _teach(db)
    nothing = _Scope("\x00")  # routes every held-out prompt to the base model
    out = run_round(db=db, settings=settings, cfg=FAST, scope=nothing)
    m = out.metrics
    assert nothing.asked and m.routed == 0.0 and m.locality == 1.0 and m.leak == 0.0
    assert m.locality_adapter is not None and m.locality_adapter < 1.0  # the random adapter changes answers
    everything = _Scope("")
    m = run_round(db=db, settings=settings, cfg=FAST, scope=everything).metrics
    assert m.routed == 1.0 and m.locality == m.locality_adapter < 1.0
    some = _Scope("?")  # the questions among the held-out prompts
    m = run_round(db=db, settings=settings, cfg=FAST, scope=some).metrics
    assert 0.0 < m.routed < 1.0 and m.locality_adapter <= m.locality <= 1.0


KTO = FAST.model_copy(update={"kto_batch_size": 4, "kto_max_steps": 2, "kto_min_rows": 4, "heldout_ratings": 0.3})


def _rate(db, n, start=0):
    """n rated replies: short ones 👍, long ones 👎."""
    for i in range(start, start + n):
        good = i % 2 == 0
        with db.write() as s:
            ex = store.create_exchange(session=s, conversation_id=None, user_text=f"hello {i}",
                                       bot_text="hi" if good else "hello " * 12, emotion_label="neutral",
                                       emotion_score=0.0)
            store.rate_exchange(session=s, exchange_id=ex.id, rating="up" if good else "down")


def test_thumbs_alone_train_a_kto_preference_adapter_checked_on_heldout_ratings(env):
    settings, db = env
    _rate(db, 14)
    out = run_round(db=db, settings=settings, cfg=KTO)
    meta = adapters.verify(settings.adapters_dir / out.version)
    assert {"preference/adapter_config.json", "preference/adapter_model.safetensors"} <= set(meta["files"])
    counts = meta["data_counts"]
    assert counts["kto_desirable"] == counts["kto_undesirable"] == 7 and counts["sft_rows"] == 0
    assert counts["kto_train_rows"] + counts["kto_heldout_rows"] == 14 and counts["kto_heldout_rows"] > 0
    m = out.metrics
    assert m.kto_steps == 2 and m.steps == 0 and m.new_facts == 0 and meta["preference"]["steps"] == 2
    assert m.heldout_ratings == counts["kto_heldout_rows"] and m.baseline_preference_auc == 0.5
    assert 0.0 <= m.preference_auc <= 1.0
    assert "held-out ratings" in out.reason  # the gate judged the preference adapter
    assert m.locality_adapter is not None and m.locality_adapter < 1.0  # it is applied to every held-out prompt


def test_a_round_with_too_few_ratings_keeps_the_active_preference_adapter(env, learns):
    settings, db = env
    learns()
    _rate(db, 10)
    first = run_round(db=db, settings=settings, cfg=KTO)
    assert first.promoted and first.metrics.kto_steps == 2
    _teach(db)
    second = run_round(db=db, settings=settings, cfg=KTO.model_copy(update={"kto_min_rows": 100}))
    assert second.promoted and second.metrics.kto_steps is None and second.metrics.steps == 3
    one, two = (adapters.verify(settings.adapters_dir / v) for v in ("v1", "v2"))
    assert two["files"]["preference/adapter_model.safetensors"] == one["files"]["preference/adapter_model.safetensors"]
    off = run_round(db=db, settings=settings, cfg=KTO.model_copy(update={"preference": "off"}))
    assert "preference/adapter_config.json" not in adapters.verify(settings.adapters_dir / off.version)["files"]


def test_no_knowledge_and_ratings_of_one_kind_is_no_data(env):
    settings, db = env
    with db.write() as s:
        for i in range(6):
            ex = store.create_exchange(session=s, conversation_id=None, user_text=f"q{i}", bot_text="a",
                                       emotion_label="neutral", emotion_score=0.0)
            store.rate_exchange(session=s, exchange_id=ex.id, rating="up")
    with pytest.raises(NoDataError, match="both"):
        run_round(db=db, settings=settings, cfg=KTO)


def test_a_preference_adapter_that_fails_the_gate_is_left_out_and_the_facts_still_promote(env, monkeypatch):
    import dataclasses

    from trainer.evaluate import has_preference

    settings, db = env
    scripted = scripted_evaluation(lambda fact: True)

    def evaluate(*args, **kwargs):
        metrics = scripted(*args, **kwargs)
        if has_preference(args[6]):  # the new preference adapter disagrees with the held-out ratings
            metrics = dataclasses.replace(metrics, preference_auc=0.2, baseline_preference_auc=0.5,
                                          preference_auc_se=0.05)
        return metrics

    monkeypatch.setattr(trainer.rounds, "evaluate_adapter", evaluate)
    _teach(db)
    _rate(db, 12)
    out = run_round(db=db, settings=settings, cfg=KTO)
    assert out.promoted and out.metrics.learned_ids == [1] and out.metrics.kto_steps == 2
    assert "left out" in out.reason and "held-out ratings 0.20" in out.metrics.preference_dropped
    assert not any(f.startswith("preference/") for f in adapters.verify(settings.adapters_dir / "v1")["files"])
    from kaizen.lr_schedule import past_rounds, plan_lr
    with db.session() as s:  # the next round's KTO rate is lowered, the knowledge rate is not
        plan = plan_lr(KTO, 1, past_rounds(store.list_adapters(session=s)))
    assert (plan.scale, plan.kto_scale) == (1.0, KTO.lr_feedback_factor) and "KTO × 0.5 since v1 hurt" in plan.reason


def test_a_round_the_gate_found_harmful_halves_the_next_rounds_rate_and_the_run_says_why(env, monkeypatch):
    """Issue 17, part 4: the decay also listens to results (kaizen/lr_schedule.py), on real rounds."""
    import dataclasses

    from kaizen.lr_schedule import past_rounds, plan_lr

    settings, db = env
    scripted = scripted_evaluation(lambda fact: True)
    harmful = {"first": True}

    def evaluate(*args, **kwargs):
        metrics = scripted(*args, **kwargs)
        return dataclasses.replace(metrics, locality=0.5) if harmful["first"] else metrics

    monkeypatch.setattr(trainer.rounds, "evaluate_adapter", evaluate)
    _teach(db)
    first = run_round(db=db, settings=settings, cfg=FAST)
    assert not first.promoted and first.metrics.failed_checks == ["locality"]
    assert first.metrics.lr == pytest.approx(FAST.round_lr(0))
    harmful["first"] = False
    second = run_round(db=db, settings=settings, cfg=FAST, force=True)
    assert second.promoted and second.metrics.failed_checks == []
    assert second.metrics.lr == pytest.approx(FAST.round_lr(1) * FAST.lr_feedback_factor)
    assert "since v1 hurt (locality)" in second.metrics.lr_reason
    with db.session() as s:
        run = store.list_runs(session=s)[0]
        assert run.config["lr_plan"]["lr"] == pytest.approx(second.metrics.lr)
        assert max(run.loss_curve) > 0 and run.lr <= second.metrics.lr  # the optimizer ran at the planned rate
        after = plan_lr(FAST, 2, past_rounds(store.list_adapters(session=s)))
    assert after.scale == 1.0 and "v2 was promoted" in after.reason  # a good round recovers the full rate
