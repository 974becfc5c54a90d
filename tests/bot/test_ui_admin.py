"""The admin tab's handlers, called directly (as Gradio would) with the fake engine, over the
admin service. Training is a fake `TrainingControl` that only records runs: the tab reads a
run's progress from the database, whoever writes it (tests/bot/test_admin_api.py runs the real
supervisor)."""

from __future__ import annotations

import ast
import contextlib
import inspect
import re
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
import pytest
from gradio.utils import get_upload_folder
from matplotlib.figure import Figure

import bot.ui_admin
from bot.admin_models import RunView
from bot.admin_service import AdminService
from bot.admin_views import progress_html
from bot.ui_admin import AdminPanel, build_admin_ui
from feedback_db import store
from feedback_db.db import Database
from kaizen.errors import ConflictError
from tests.seed import publish_fake_version, snapshot

if TYPE_CHECKING:
    from bot.services import Kaizen
    from tests.fakes import FakeEngine

ADMIN = gr.Request(username="admin")


class RecordedTraining:
    """`kaizen.ports.TrainingControl` without a child process: start() records a queued run, and
    the test plays the round by updating that row."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.run_id: int | None = None

    def start(self, *, trigger: str, force: bool = True) -> int:
        if self.run_id is not None:
            raise ConflictError(f"Training run {self.run_id} is still running.")
        with self.db.write() as s:
            self.run_id = store.create_run(session=s, trigger=trigger, round_index=0, status="queued").id
        return self.run_id

    def running(self) -> int | None:
        return self.run_id

    def stop(self) -> None:
        self.run_id = None


@pytest.fixture
def panel(kaizen: Kaizen) -> AdminPanel:
    kaizen.training = RecordedTraining(kaizen.db)
    return AdminPanel(AdminService(kaizen))


def _rated(kaizen: Kaizen, question: str, **rating: Any) -> int:
    reply = kaizen.chat.answer(question)
    with kaizen.db.write() as s:
        return store.rate_exchange(session=s, exchange_id=reply.exchange_id, **rating).id


def _upload(name: str, body: bytes) -> str:
    """A file where Gradio puts uploads (the handler imports nothing from anywhere else)."""
    folder = Path(get_upload_folder()) / f"kaizen-test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    (folder / name).write_bytes(body)
    return str(folder / name)


def _handler_args(kaizen: Kaizen) -> dict[str, Any]:
    """Plausible arguments for every handler, by parameter name, over seeded data."""
    publish_fake_version(kaizen, "v1")
    fb = _rated(kaizen, "Giờ mở cửa?", rating="down", correction="8 giờ")
    with kaizen.db.write() as s:
        item = store.add_knowledge(session=s, question="Q", answer="A").id
    return {"feedback_id": fb, "item_id": item, "version": "v1", "status": "pending", "rating": "all",
            "correction": "poison", "value": True, "enabled": True, "minutes": 1, "min_items": 1,
            "path": _upload("kb.txt", b"Q2 -> A2\n"), "name": "Pwned", "skip_invalid": False, "verbatim": False,
            "table": pd.DataFrame({"id": [fb]}), "evt": SimpleNamespace(index=[0, 0])}


def _handlers(service: Any) -> list[Callable[..., Any]]:
    return [f.fn for f in build_admin_ui(service).fns.values() if f.fn is not None]


def test_every_handler_refuses_a_caller_who_is_not_admin(kaizen, panel):
    plausible = _handler_args(kaizen)
    before = snapshot(kaizen)
    fns = _handlers(panel.service)
    assert len(fns) >= 20
    for fn in fns:
        params = [p for p in inspect.signature(fn).parameters if p != "request"]
        for request in (gr.Request(username=None), gr.Request(username="guest"), None):
            with pytest.raises(gr.Error, match="Admin login required"):
                fn(*[plausible.get(p) for p in params], request=request)
    assert snapshot(kaizen) == before and kaizen.training.running() is None
    assert not kaizen.settings.exports_dir.exists()


class ObservedService:
    """The admin service, noting whether each database session opens inside one of its calls."""

    def __init__(self, service: AdminService, db: Database) -> None:
        self._service = service
        self.depth = 0
        self.opened: list[tuple[str, bool]] = []  # (session or write, inside a service call)
        for kind in ("session", "write"):
            setattr(db, kind, self._observe(kind, getattr(db, kind)))

    def _observe(self, kind: str, open_: Callable[[], AbstractContextManager[Any]]) -> Callable[..., Any]:
        @contextmanager
        def observed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            self.opened.append((kind, self.depth > 0))
            with open_(*args, **kwargs) as s:
                yield s

        return observed

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._service, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            try:
                return attr(*args, **kwargs)
            finally:
                self.depth -= 1

        return call


def test_every_handler_reads_and_writes_only_through_the_admin_service(kaizen, monkeypatch):
    """One read path: every database session the tab opens is opened by an AdminService call."""
    kaizen.training = RecordedTraining(kaizen.db)
    plausible = _handler_args(kaizen)
    observed = ObservedService(AdminService(kaizen), kaizen.db)
    for fn in _handlers(observed):
        params = [p for p in inspect.signature(fn).parameters if p != "request"]
        with contextlib.suppress(gr.Error):  # refused as the user would see it (a base download): it still ran
            fn(*[plausible.get(p) for p in params], request=ADMIN)
    assert len(observed.opened) > 40 and {kind for kind, _ in observed.opened} == {"session", "write"}
    assert [kind for kind, inside in observed.opened if not inside] == []


def test_the_admin_tab_does_not_import_the_store():
    tree = ast.parse(Path(bot.ui_admin.__file__).read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.split(".")[0] == "feedback_db"}, imported


def test_handlers_that_write_the_same_panel_run_one_at_a_time_in_order(kaizen):
    """The page load fills every panel. A handler that also writes one of them (an import, an
    approval, a swap) must queue behind it, or a slow load lands last and shows the old table."""
    fns = [f for f in build_admin_ui(AdminService(kaizen)).fns.values() if f.fn is not None]
    [load] = [f for f in fns if f.fn.__name__ == "load"]
    filled = {id(c) for c in load.outputs}
    sharing = [f for f in fns if f is not load and filled & {id(c) for c in f.outputs}]
    assert {f.fn.__name__ for f in sharing} >= {"upload_knowledge", "approve", "activate", "training_status"}
    for f in [load, *sharing]:
        assert (f.concurrency_id, f.concurrency_limit) == (load.concurrency_id, 1), f.fn.__name__


def test_dashboard_produces_totals_figures_and_recent_exchanges(kaizen, panel):
    _rated(kaizen, "I love this, thanks!", rating="up")
    _rated(kaizen, "Tệ quá, sai rồi", rating="down")
    totals, *figures, recent = panel.dashboard(ADMIN)
    # exchanges, conversations, ratings, up, down, up rate, pending, knowledge, adapters, active
    assert totals.splitlines()[2] == "| 2 | 2 | 2 | 1 | 1 | 50% | 0 | 0 | 0 | **base** (serving base) |"
    assert len(figures) == 5 and all(isinstance(f, Figure) for f in figures)
    assert all(f.axes[0].patches or f.axes[0].lines for f in figures)  # every chart drew bars or lines from the data
    [model_line] = figures[2].axes[0].lines  # by version and source: the fake engine's replies are the model's
    assert model_line.get_label() == "model on its own" and list(model_line.get_ydata()) == [50.0]
    assert isinstance(recent, pd.DataFrame) and len(recent) == 2
    assert set(recent["question"]) == {"I love this, thanks!", "Tệ quá, sai rồi"}
    assert list(recent["applied"]) == ["no", "no"]  # no adapter yet: the base model answered


def test_recent_exchanges_show_whether_the_adapter_was_applied(kaizen, panel):
    for applied in (True, False, None):
        with kaizen.db.write() as s:
            ex = store.create_exchange(session=s, conversation_id=None, user_text=f"Q {applied}", bot_text="A.",
                                       emotion_label="neutral", emotion_score=0.0, adapter_version="v1",
                                       adapter_applied=bool(applied), source="rag")
            ex.adapter_applied = applied  # None: stored before routing existed
    recent = panel.dashboard(ADMIN)[-1]
    assert dict(zip(recent["question"], recent["applied"], strict=True)) == \
        {"Q True": "yes", "Q False": "no", "Q None": ""}
    assert list(recent.columns) == bot.ui_admin.RECENT_COLUMNS
    assert len(bot.ui_admin.RECENT_WIDTHS) == len(bot.ui_admin.RECENT_COLUMNS)


def test_the_versions_table_has_a_one_line_legend(kaizen):
    ui = build_admin_ui(AdminService(kaizen))
    [legend] = [c for c in ui.blocks.values() if getattr(c, "elem_id", None) == "adapters-legend"]
    assert "\n" not in legend.value
    for word in ("reliability", "generality", "locality", "recalled exactly", "held-out phrasings", "as served",
                 "base model"):
        assert word in legend.value, word


def test_dashboard_with_no_data_still_draws(panel):
    _totals, *figures, recent = panel.dashboard(ADMIN)
    assert all(isinstance(f, Figure) for f in figures) and recent.empty


def test_persona_preview_counts_tokens_and_warns_over_budget(kaizen, panel):
    prompt, info = panel.preview_persona("Trợ lý", "BICweb", "", "Ngắn gọn.", ADMIN)
    assert prompt.startswith("You are Trợ lý, a helpful assistant created by BICweb.")
    assert "tokens" in info and "⚠️" not in info
    long_company = "Công ty BICweb chuyên thiết kế website. " * 60
    prompt, info = panel.preview_persona("Trợ lý", "BICweb", long_company, "Ngắn gọn.", ADMIN)
    assert "⚠️" in info and f"budget of {kaizen.settings.persona_token_budget}" in info
    assert panel.save_persona("Trợ lý", "BICweb", "Huế", "Ngắn gọn.", ADMIN).startswith("Saved")
    assert panel.persona_fields(ADMIN) == ("Trợ lý", "BICweb", "Huế", "Ngắn gọn.")
    with pytest.raises(gr.Error, match="agent name"):
        panel.save_persona("  ", "x", "", "", ADMIN)


def test_review_approve_with_edit_creates_a_knowledge_item(kaizen, panel):
    fb = _rated(kaizen, "Giờ mở cửa?", rating="down", correction="8 giờ")
    table = panel.feedback_table("pending", "all", ADMIN)
    assert list(table["id"]) == [fb]
    detail, correction = panel.pick_feedback(fb, ADMIN)
    assert "Giờ mở cửa?" in detail and correction == "8 giờ"
    message, table = panel.approve(fb, "Chúng tôi mở cửa lúc 8 giờ sáng.", "pending", "all", ADMIN)
    assert "approved" in message and table.empty
    with kaizen.db.session() as s:
        items = store.list_knowledge(session=s)
    assert [(i.question, i.answer, i.origin, i.enabled) for i in items] == \
        [("Giờ mở cửa?", "Chúng tôi mở cửa lúc 8 giờ sáng.", "correction", True)]
    message, _ = panel.reject(fb, "", "all", "all", ADMIN)
    assert "rejected" in message
    with kaizen.db.session() as s:
        assert not store.list_knowledge(session=s)[0].enabled
    with pytest.raises(gr.Error, match="Choose a feedback row"):
        panel.approve(None, "", "pending", "all", ADMIN)
    with pytest.raises(gr.Error, match="No feedback with id 999"):
        panel.approve(999, "", "pending", "all", ADMIN)


def test_auto_approve_toggle(kaizen, panel):
    assert kaizen.auto_approve() is False
    assert "ON" in panel.set_auto_approve(True, ADMIN) and kaizen.auto_approve() is True
    assert "off" in panel.set_auto_approve(False, ADMIN) and kaizen.auto_approve() is False


def test_knowledge_upload_shows_line_errors_and_imports_nothing(kaizen, panel):
    path = _upload("kb.txt", "Giờ mở cửa? -> 8 giờ\nkhông có mũi tên\n".encode())
    message, table = panel.upload_knowledge(path, False, False, ADMIN)
    assert "was not imported" in message and "line 2" in message and table.empty
    message, table = panel.upload_knowledge(path, True, True, ADMIN)
    assert "Imported 1" in message and "skipped line 2" in message
    assert list(table["question"]) == ["Giờ mở cửa?"] and list(table["verbatim"]) == [True]
    item = int(table["id"][0])
    assert "disabled" in panel.disable_knowledge(item, ADMIN)[0]
    assert list(panel.knowledge_table(ADMIN)["enabled"]) == [False]
    assert "enabled" in panel.enable_knowledge(item, ADMIN)[0]
    assert panel.delete_knowledge(item, ADMIN)[1].empty
    with pytest.raises(gr.Error, match="No knowledge item"):
        panel.delete_knowledge(item, ADMIN)


def test_upload_refuses_files_outside_gradios_upload_folder(kaizen, panel, tmp_path):
    outside = tmp_path / "kb.txt"
    outside.write_text("Q -> A\n")
    with pytest.raises(gr.Error, match="uploaded through this page"):
        panel.upload_knowledge(str(outside), False, False, ADMIN)
    with kaizen.db.session() as s:
        assert store.list_knowledge(session=s) == []


def test_train_now_shows_live_progress_then_stops_the_timer(kaizen, panel):
    message, html, _curve, timer = panel.train_now(ADMIN)
    run_id = kaizen.training.running()
    assert message == f"Started training run #{run_id}." and timer.active is True and "queued" in html
    with pytest.raises(gr.Error, match="still running"):
        panel.train_now(ADMIN)
    with kaizen.db.write() as s:  # what the round reports as it trains
        store.update_run(session=s, run_id=run_id, status="running", phase="train", step=3, total_steps=10,
                         loss=1.25, lr=1e-3, eta_s=7.0, loss_curve=[2.0, 1.5, 1.25])
    html, curve, timer, _runs, *adapters, hyper = panel.training_status(ADMIN)
    assert "running" in html and "loss 1.2500" in html and "ETA ≤ 7 s" in html and hyper == gr.skip()
    assert "width:47.1%" in html  # train is the 4th of 7 phases, 3 of its 10 steps done: (3 + 0.3) / 7
    assert timer.active is True and isinstance(curve, Figure) and len(curve.axes[0].lines[0].get_xdata()) == 3
    assert adapters == [gr.skip()] * 3  # a version being picked in the adapters panel stays picked
    publish_fake_version(kaizen, "v1", verdict="rejected")  # what the round records as it finishes
    with kaizen.db.write() as s:
        store.update_run(session=s, run_id=run_id, status="rejected", phase="done", error="gate said no",
                         finished_at=store.utcnow())
    kaizen.training.stop()
    html, curve, timer, runs, table, versions, note, hyper = panel.training_status(ADMIN)
    assert timer.active is False and "rejected" in html and "gate said no" in html
    assert "Next round: #1" in hyper  # the hyperparameters panel follows the round that ended
    assert list(runs["status"]) == ["rejected"]
    assert list(table["version"]) == ["base", "v1"] and list(table["verdict"]) == ["", "rejected"]
    assert versions.choices == [("base", "base"), ("v1", "v1")] and "Active: **base**" in note


def test_a_run_started_elsewhere_is_followed_while_its_row_says_it_is_going(kaizen, panel):
    with kaizen.db.write() as s:  # `kaizen train` in another process
        run_id = store.create_run(session=s, trigger="cli", round_index=0, status="queued").id
    html, _curve, timer, *_ = panel.training_status(ADMIN)
    assert kaizen.training.running() is None and f"Run #{run_id}" in html and timer.active is True
    with kaizen.db.write() as s:
        store.update_run(session=s, run_id=run_id, status="promoted", finished_at=store.utcnow())
    assert panel.training_status(ADMIN)[2].active is False


def _run(**values: Any) -> RunView:
    row = {"id": 1, "status": "failed", "trigger": "admin", "round_index": 0, "phase": "", "step": 0,
           "total_steps": 0, "loss": None, "lr": None, "eta_s": None, "loss_curve": [], "data_counts": {},
           "adapter_version": None, "error": None, "started_at": None, "finished_at": None}
    return RunView(**{**row, **values})


def test_the_phases_before_the_first_step_show_on_the_bar():
    """Issue 13: "step 0/?" and an empty bar for the 7 minutes of dataset, model loading and anchors."""
    seen = []
    for phase in ("dataset", "model", "anchors"):
        html = progress_html(_run(status="running", phase=phase))
        assert "step" not in html and "ETA" not in html
        seen.append(float(re.search(r"width:([\d.]+)%", html).group(1)))
    assert seen == [0.0, 14.3, 28.6]
    html = progress_html(_run(status="running", phase="model"))
    assert "✓ dataset › <b>load model</b> › anchors › train" in html
    assert "starting the training process" in progress_html(_run(status="queued"))


def test_progress_html_escapes_error_text():
    html = progress_html(_run(error="<script>alert(1)</script>", phase="<b>"))
    assert "<script>" not in html and "&lt;script&gt;" in html and "phase &lt;b&gt;" in html
    assert "No training run yet" in progress_html(None)


def test_schedule_and_hyperparameters(kaizen, panel):
    hyper, _enabled, minutes, _min_items, note = panel.training_settings(ADMIN)
    assert "`lr0`" in hyper and "Peak learning rate" in hyper and minutes.value == 30 and note == ""
    assert "Next round: #0" in hyper and "decay lr0 × gamma^0" in hyper and "`lr_feedback`" in hyper
    from kaizen.settings import TrainConfig
    kaizen.train_config = TrainConfig.model_construct(lr0=5e-3)  # the server's own knobs are shown
    assert "peak learning rate **5.00e-03**" in panel.training_settings(ADMIN)[0]
    assert "Every 10 min" in panel.save_schedule(True, 10, 3, ADMIN)
    assert kaizen.scheduler.config() == {"enabled": True, "minutes": 10, "min_items": 3}
    with pytest.raises(gr.Error, match="minutes"):
        panel.save_schedule(True, 0, 3, ADMIN)
    kaizen.scheduler = None
    assert "--no-schedule" in panel.training_settings(ADMIN)[4]


def test_adapters_activate_rollback_and_download(kaizen: Kaizen, panel: AdminPanel, fake_engine: FakeEngine):
    publish_fake_version(kaizen, "v1")
    table, dropdown, note = panel.adapters_table(ADMIN)
    assert list(table["version"]) == ["base", "v1"] and list(table["drift"]) == ["", "0.020"]
    assert dropdown.choices and "Active: **base**" in note
    table, _, note = panel.activate("v1", ADMIN)
    assert fake_engine.adapter_version == "v1" and "Now serving **v1** (swapped in 0.00 s)" in note
    assert list(table["active"]) == ["", "●"]
    panel.rollback(ADMIN)
    assert fake_engine.adapter_version == "base"
    with pytest.raises(gr.Error, match="not a version name"):
        panel.activate("../../etc", ADMIN)
    zipped = Path(panel.download_adapter("v1", ADMIN))
    assert zipped.parent == kaizen.settings.exports_dir and zipped.suffix == ".zip"
    assert "v1/meta.json" in zipfile.ZipFile(zipped).namelist()
    with pytest.raises(gr.Error, match="no adapter"):
        panel.download_adapter("base", ADMIN)


def test_the_watch_refreshes_only_the_panels_changed_elsewhere(kaizen: Kaizen, panel: AdminPanel):
    """Issue 13: the Adapters and Training tabs kept showing v1 and run #1, and a correction sent
    over the API never reached Feedback review, until a full reload."""
    def watch(seen):
        stamps, feedback, knowledge, runs, timer, table, _, note = panel.watch(seen, "pending", "all", ADMIN)
        fresh = {name for name, out in [("feedback", feedback), ("knowledge", knowledge), ("runs", runs),
                                        ("adapters", table)] if isinstance(out, pd.DataFrame)}
        return stamps, fresh, timer, note

    seen, fresh, _, _ = watch(None)
    assert fresh == {"feedback", "knowledge", "runs", "adapters"}  # a page that has seen nothing gets everything
    assert watch(seen)[1] == set()  # nothing changed: nothing is redrawn, so no pick is reset
    fb = _rated(kaizen, "Số điện thoại?", rating="down", correction="0243 123 456")  # over the API, say
    seen, fresh, _, _ = watch(seen)
    assert fresh == {"feedback"}
    with kaizen.db.write() as s:  # `kaizen import` in another process
        store.add_knowledge(session=s, question="Giờ mở cửa?", answer="8 giờ")
    seen, fresh, _, _ = watch(seen)
    assert fresh == {"knowledge"}
    publish_fake_version(kaizen, "v1")  # a scheduled round's version, promoted
    with kaizen.db.write() as s:
        store.set_active_adapter(session=s, version="v1")
        run_id = store.create_run(session=s, trigger="schedule", round_index=1).id  # the next round, running
    seen, fresh, timer, note = watch(seen)
    assert fresh == {"runs", "adapters"} and "Active: **v1**" in note
    assert isinstance(timer, gr.Timer) and timer.active  # the progress bar follows the scheduler's round
    with kaizen.db.write() as s:
        store.review_feedback(session=s, feedback_id=fb, action="approve")
        store.update_run(session=s, run_id=run_id, status="rejected", finished_at=store.utcnow())
    assert watch(seen)[1] == {"feedback", "runs", "knowledge"}  # the approval also made a knowledge item


def test_a_pinned_version_is_shown_and_the_pin_can_be_released(kaizen: Kaizen, panel: AdminPanel):
    publish_fake_version(kaizen, "v1")
    _, _, note = panel.activate("v1", ADMIN)
    assert "📌 **v1** is pinned" in note
    _, _, note = panel.release_pin(ADMIN)
    assert "Pin released" in note and "📌" not in note


def test_a_refusal_on_the_page_is_a_fading_warning_that_leaves_every_output_alone(kaizen):
    """Issue 13: red "Error" pills stayed on the outputs after a handled refusal (a double-clicked
    "Train now", an import with no file), and one covered the box being typed in."""
    kaizen.training = RecordedTraining(kaizen.db)
    wired = {f.fn.__name__: f.fn for f in build_admin_ui(AdminService(kaizen)).fns.values() if f.fn is not None}
    with pytest.warns(UserWarning, match="Choose a .csv"):
        assert wired["upload_knowledge"](None, False, False, request=ADMIN) == gr.skip()
    assert wired["train_now"](request=ADMIN)[0].startswith("Started training run #")
    with pytest.warns(UserWarning, match="still running"):
        assert wired["train_now"](request=ADMIN) == gr.skip()  # the double click
    with pytest.raises(gr.Error, match="Admin login required"):  # not a refusal: an error, as before
        wired["train_now"](request=gr.Request(username="guest"))


def test_a_knowledge_item_is_edited_in_the_tab_and_deleted_only_after_a_confirmation(kaizen, panel):
    with kaizen.db.write() as s:
        item_id = store.add_knowledge(session=s, question="Số điện thoại?", answer="0243 826 1234").id
    table = panel.knowledge_table(ADMIN)
    picked, answer, verbatim, confirm = panel.select_knowledge(table, SimpleNamespace(index=[0, 0]), ADMIN)
    assert (picked, answer, verbatim, confirm.visible) == (item_id, "0243 826 1234", False, False)
    message, table = panel.save_knowledge(item_id, "Gọi 0243 826 1234.", True, ADMIN)
    assert "saved; served word for word" in message
    with kaizen.db.session() as s:
        item = store.get_knowledge(session=s, item_id=item_id)
        assert (item.answer, item.verbatim) == ("Gọi 0243 826 1234.", True)
    message, confirm = panel.ask_delete_knowledge(item_id, ADMIN)
    assert "cannot be undone" in message and confirm.visible
    with kaizen.db.session() as s:  # asking deletes nothing
        assert store.get_knowledge(session=s, item_id=item_id)
    message, table, confirm = panel.delete_knowledge(item_id, ADMIN)
    assert "deleted" in message and confirm.visible is False and list(table["id"]) == []


def test_export_writes_the_dataset_into_the_exports_dir(kaizen, panel):
    with kaizen.db.write() as s:
        store.add_knowledge(session=s, question="Giờ mở cửa?", answer="8 giờ sáng")
    path, message = panel.export(ADMIN)
    text = Path(path).read_text(encoding="utf-8")
    assert Path(path).parent == kaizen.settings.exports_dir and f"Exported {len(text.splitlines())} rows" in message
    assert "8 giờ sáng" in text


def test_the_page_load_shows_the_stored_personas_preview_and_no_box_previews_on_a_fill(kaizen, panel):
    """Filling the four persona boxes at page load used to fire four previews at once; the one that
    answered last (built from half-filled boxes) stayed on screen."""
    panel.save_persona("Mai", "BICweb", "Công ty ở Huế.", "Ngắn gọn.", ADMIN)
    out = panel.load("pending", "all", ADMIN)
    fields = ("Mai", "BICweb", "Công ty ở Huế.", "Ngắn gọn.")
    strings = [x if isinstance(x, str) else None for x in out]
    at = next(i for i in range(len(out) - 3) if tuple(strings[i:i + 4]) == fields)
    assert out[at + 4] == panel.preview_persona(*fields, ADMIN)[0]
    assert "Công ty ở Huế." in out[at + 4] and "Ngắn gọn." in out[at + 4]
    ui = bot.ui_admin.build_admin_ui(panel.service)
    preview_id = next(c._id for c in ui.blocks.values() if getattr(c, "elem_id", None) == "persona-preview")
    triggers = {t[1] for dep in ui.config["dependencies"] if preview_id in dep["outputs"] for t in dep["targets"]}
    assert triggers == {"load", "input"}, triggers


def test_a_web_replicas_queued_round_can_be_cancelled_from_the_training_tab(kaizen, panel):
    from scheduler import RequestedTraining

    kaizen.training = RequestedTraining(db=kaizen.db)  # a web replica: Train now queues for a worker
    with pytest.raises(gr.Error, match="No round is waiting"):
        panel.cancel_queued(ADMIN)
    message, html, _curve, _timer = panel.train_now(ADMIN)
    assert "queued" in html
    message, html, _curve, runs = panel.cancel_queued(ADMIN)
    assert message.endswith("cancelled.") and "cancelled" in html and runs.iloc[0]["status"] == "cancelled"
    assert panel.train_now(ADMIN)[0].startswith("Started training run #")  # a new one may be queued
