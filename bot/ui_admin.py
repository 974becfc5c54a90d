"""The admin tab (Gradio 6 Blocks at `/admin`, login `admin`) and `mount_admin`, which adds it
and the admin REST API (bot/admin_api.py) to the FastAPI app.

Panels: Dashboard, Feedback review, Knowledge, Persona, Training (live progress), Adapters,
Export. Gradio's login protects the page and its routes, but Gradio still serves handlers that
are hidden from its API page (gradio issues #13051, #11877), so every handler in `AdminPanel`
checks on the server that the caller is logged in as admin before doing anything.

Interactive elements have stable elem_ids for browser tests; see the layout in build_admin_ui.
"""

from __future__ import annotations

import dataclasses
import html
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import pandas as pd
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from gradio.utils import get_upload_folder

from bot import admin_api as ops
from bot import plots
from bot.auth import ADMIN_USER, AdminAuth
from feedback_db import store
from kaizen.errors import KaizenError
from kaizen.knowledge_files import ImportFileError, ImportLimits
from kaizen.prompts import Persona, load_persona
from kaizen.settings import TrainConfig

FEEDBACK_COLUMNS = ["id", "rating", "status", "question", "bot answer", "correction", "updated"]
KNOWLEDGE_COLUMNS = ["id", "question", "answer", "category", "origin", "verbatim", "enabled", "hits"]
RECENT_COLUMNS = ["time", "question", "answer", "emotion", "source", "adapter", "ms"]
RUN_COLUMNS = ["run", "status", "trigger", "round", "steps", "final loss", "adapter", "started", "error"]
ADAPTER_COLUMNS = ["active", "version", "verdict", "new recall", "retention", "paraphrases", "drift",
                   "steps", "seconds", "created", "reason"]
# Fixed widths for the short columns, so that headers never break letter by letter; the long
# text columns wrap within a share of the row. Each set fits the 1,216 px of a 1,280 px window.
FEEDBACK_WIDTHS = ["56px", "80px", "100px", "20%", "23%", "23%", "160px"]
KNOWLEDGE_WIDTHS = ["56px", "22%", "33%", "96px", "110px", "96px", "96px", "64px"]
RECENT_WIDTHS = ["170px", "22%", "35%", "90px", "90px", "84px", "70px"]
RUN_WIDTHS = ["56px", "100px", "90px", "72px", "80px", "100px", "90px", "170px", "35%"]
ADAPTER_WIDTHS = ["84px", "84px", "100px", "96px", "110px", "124px", "72px", "72px", "90px", "116px", "20%"]
METRIC_KEYS = ("new_recall", "retention", "paraphrase_recall", "drift", "steps", "seconds")  # ADAPTER_COLUMNS 3-8
STATUS_FILTERS = ["pending", "approved", "rejected", "all"]
ACTIVE_STATUSES = ("queued", "running")
RATING_FILTERS = ["all", "up", "down"]
CSS = """
#progress .kz-bar { height: 18px; border-radius: 9px; background: var(--neutral-200); overflow: hidden; }
#progress .kz-fill { height: 100%; background: var(--color-accent); transition: width .4s; }
#progress .kz-line { margin-top: 6px; font-variant-numeric: tabular-nums; }
#progress .kz-error { color: var(--error-text-color, #c0392b); white-space: pre-wrap; }
"""


def _require_admin(request: gr.Request | None) -> None:
    """The server-side check every handler makes first (never rely on Gradio hiding endpoints)."""
    if request is None or getattr(request, "username", None) != ADMIN_USER:
        raise gr.Error("Admin login required.")


@contextmanager
def _user_errors():
    """Show user-facing errors as a Gradio error toast instead of a stack trace."""
    try:
        yield
    except (KaizenError, store.StoreError) as exc:
        raise gr.Error(getattr(exc, "message", str(exc))) from exc


def _short(text: str | None, n: int = 120) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _when(value) -> str:  # noqa: ANN001 - datetime | None
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def progress_html(run: dict | None) -> str:
    """The progress bar and the numbers of a run (the running one, else the latest)."""
    if run is None:
        return "<div class='kz-line'>No training run yet.</div>"
    total = run["total_steps"] or 0
    going = run["status"] in ACTIVE_STATUSES
    pct = 100.0 * run["step"] / total if going and total else (0.0 if going else 100.0)
    parts = [f"Run #{run['id']}", html.escape(run["status"])]
    if run["phase"]:
        parts.append(f"phase {html.escape(run['phase'])}")
    parts.append(f"step {run['step']}/{total or '?'}")
    if run["loss"] is not None:
        parts.append(f"loss {run['loss']:.4f}")
    if run["lr"] is not None:
        parts.append(f"lr {run['lr']:.2e}")
    if going and run["eta_s"] is not None:
        parts.append(f"ETA {run['eta_s']:.0f} s")
    if run["adapter_version"]:
        parts.append(f"adapter {html.escape(run['adapter_version'])}")
    error = f"<div class='kz-error'>{html.escape(run['error'])}</div>" if run["error"] else ""
    return (f"<div class='kz-bar' role='progressbar' aria-valuenow='{pct:.0f}' aria-valuemin='0' "
            f"aria-valuemax='100'><div class='kz-fill' style='width:{pct:.1f}%'></div></div>"
            f"<div class='kz-line'>{' · '.join(parts)}</div>{error}")


def hyperparameters_markdown(next_round: int) -> str:
    cfg = TrainConfig()
    rows = [f"| `{f.name}` | `{getattr(cfg, f.name)}` | {f.metadata.get('help', '')} |"
            for f in dataclasses.fields(cfg)]
    return (f"Next round: #{next_round}, peak learning rate **{cfg.round_lr(next_round):.2e}** "
            f"(lr0 × gamma^round, floored).\n\n| setting | value | meaning |\n|---|---|---|\n" + "\n".join(rows))


class AdminPanel:
    """The admin tab's handlers. Each takes the Gradio request last and checks it first."""

    def __init__(self, kaizen):  # noqa: ANN001 - bot.services.Kaizen
        self.kaizen = kaizen

    # --- dashboard ------------------------------------------------------------------------------

    def dashboard(self, request: gr.Request):  # noqa: ANN201
        _require_admin(request)
        k = self.kaizen
        with k.db.session() as s:
            totals = store.totals(session=s)
            active = store.get_active_adapter(session=s)
            by_day = store.rating_by_day(session=s)
            by_adapter = store.rating_by_adapter(session=s)
            emotions = store.emotion_counts(session=s)
            sources = store.source_counts(session=s)
            recent = store.list_exchanges(session=s, limit=25)
        up_rate = f"{100 * totals['thumbs_up'] / totals['ratings']:.0f}%" if totals["ratings"] else "–"
        summary = (
            f"| exchanges | conversations | ratings | 👍 | 👎 | 👍 rate | pending review | knowledge items "
            f"| adapters | active version |\n|---|---|---|---|---|---|---|---|---|---|\n"
            f"| {totals['exchanges']} | {totals['conversations']} | {totals['ratings']} | {totals['thumbs_up']} "
            f"| {totals['thumbs_down']} | {up_rate} | {totals['pending_review']} | {totals['knowledge_items']} "
            f"| {totals['adapters']} | **{active}** (serving {k.engine.adapter_version}) |"
        )
        if k.follower.last_error:
            summary += f"\n\n⚠️ {k.follower.last_error}"
        table = pd.DataFrame([[_when(e.created_at), _short(e.user_text, 80), _short(e.bot_text, 120), e.emotion_label,
                               e.source, e.adapter_version, round(e.latency_ms)] for e in recent],
                             columns=RECENT_COLUMNS)
        return (summary, plots.rating_over_time(by_day), plots.rating_by_adapter(by_adapter),
                plots.emotion_distribution(emotions), plots.answer_sources(sources), table)

    # --- feedback review ----------------------------------------------------------------------

    def feedback_table(self, status: str, rating: str, request: gr.Request) -> pd.DataFrame:
        _require_admin(request)
        with self.kaizen.db.session() as s:
            rows = store.list_feedback(session=s, status=None if status in (None, "all") else status,
                                       rating=None if rating in (None, "all") else rating)
            data = [[fb.id, fb.rating, fb.status, _short(ex.user_text), _short(ex.bot_text), _short(fb.correction),
                     _when(fb.updated_at)] for fb, ex in rows]
        return pd.DataFrame(data, columns=FEEDBACK_COLUMNS)

    def pick_feedback(self, feedback_id, request: gr.Request):  # noqa: ANN001, ANN201
        """Show the chosen feedback in full and put its correction in the edit box."""
        _require_admin(request)
        if feedback_id is None:
            return "", ""
        with _user_errors(), self.kaizen.db.session() as s:
            fb = store.get_feedback(session=s, feedback_id=int(feedback_id))
            ex = store.get_exchange(session=s, exchange_id=fb.exchange_id)
        detail = (f"**#{fb.id}** · {'👍' if fb.rating == 'up' else '👎'} · {fb.status}\n\n"
                  f"**User:** {html.escape(ex.user_text)}\n\n**Bot:** {html.escape(ex.bot_text)}")
        return detail, fb.correction or ""

    def select_feedback(self, table: pd.DataFrame, evt: gr.SelectData, request: gr.Request):  # noqa: ANN201
        _require_admin(request)
        feedback_id = int(table.iloc[evt.index[0]]["id"])
        return (feedback_id, *self.pick_feedback(feedback_id, request))

    def _review(self, action: str, feedback_id, correction: str, status: str, rating: str,  # noqa: ANN001
                request: gr.Request):  # noqa: ANN202
        _require_admin(request)
        if feedback_id is None:
            raise gr.Error("Choose a feedback row first (click it in the table or type its id).")
        with _user_errors():
            fb = ops.review(self.kaizen, int(feedback_id), action, correction if (correction or "").strip() else None)
        note = " It is served from memory now and will be trained in the next round." \
            if fb["status"] == "approved" and fb["correction"] else ""
        return f"Feedback #{fb['id']} {fb['status']}.{note}", self.feedback_table(status, rating, request)

    def approve(self, feedback_id, correction: str, status: str, rating: str,  # noqa: ANN001, ANN201
                request: gr.Request):
        return self._review("approve", feedback_id, correction, status, rating, request)

    def reject(self, feedback_id, correction: str, status: str, rating: str,  # noqa: ANN001, ANN201
               request: gr.Request):
        return self._review("reject", feedback_id, correction, status, rating, request)

    def set_auto_approve(self, value: bool, request: gr.Request) -> str:
        _require_admin(request)
        ops.update_settings(self.kaizen, auto_approve=bool(value))
        return ("Auto-approve is ON: new corrections teach the bot at once, without review." if value
                else "Auto-approve is off: corrections wait here for review before they teach the bot.")

    # --- knowledge ----------------------------------------------------------------------------

    def knowledge_table(self, request: gr.Request) -> pd.DataFrame:
        _require_admin(request)
        with self.kaizen.db.session() as s:
            data = [[i.id, _short(i.question), _short(i.answer), i.category, i.origin, i.verbatim, i.enabled,
                     i.hit_count] for i in store.list_knowledge(session=s)]
        return pd.DataFrame(data, columns=KNOWLEDGE_COLUMNS)

    def upload_knowledge(self, path: str | None, skip_invalid: bool, verbatim: bool,  # noqa: ANN201
                         request: gr.Request):
        _require_admin(request)
        if not path:
            raise gr.Error("Choose a .csv, .jsonl or .txt file first.")
        file = Path(path).resolve()
        if not file.is_relative_to(Path(get_upload_folder()).resolve()):
            raise gr.Error("Only files uploaded through this page can be imported.")
        limit = ImportLimits().max_bytes
        with file.open("rb") as f:
            data = f.read(limit + 1)
        try:
            result = ops.import_knowledge(self.kaizen, data, file.name, skip_invalid=bool(skip_invalid),
                                          verbatim=bool(verbatim))
        except ImportFileError as exc:
            lines = "\n".join(f"- {html.escape(str(e))}" for e in exc.errors[:200])
            more = f"\n- … and {len(exc.errors) - 200} more" if len(exc.errors) > 200 else ""
            return (f"❌ **{html.escape(file.name)} was not imported** ({len(exc.errors)} problem(s)). "
                    f"Fix these lines, or tick *skip invalid lines*:\n\n{lines}{more}"), self.knowledge_table(request)
        skipped = "".join(f"\n- skipped line {e['line']}: {html.escape(e['reason'])}" for e in result["skipped"][:200])
        return (f"✅ Imported {result['imported']} item(s) from {html.escape(file.name)}; "
                f"{result['duplicates']} already known.{skipped}"), self.knowledge_table(request)

    def select_knowledge(self, table: pd.DataFrame, evt: gr.SelectData, request: gr.Request) -> int:
        _require_admin(request)
        return int(table.iloc[evt.index[0]]["id"])

    def _knowledge_action(self, item_id, action: str, request: gr.Request):  # noqa: ANN001, ANN202
        _require_admin(request)
        if item_id is None:
            raise gr.Error("Choose a knowledge item first (click it in the table or type its id).")
        with _user_errors(), self.kaizen.db.write() as s:
            if action == "delete":
                store.delete_knowledge(session=s, item_id=int(item_id))
            else:
                store.set_knowledge_enabled(session=s, item_id=int(item_id), enabled=action == "enable")
        return f"Knowledge item #{int(item_id)}: {action}d.", self.knowledge_table(request)

    def enable_knowledge(self, item_id, request: gr.Request):  # noqa: ANN001, ANN201
        return self._knowledge_action(item_id, "enable", request)

    def disable_knowledge(self, item_id, request: gr.Request):  # noqa: ANN001, ANN201
        return self._knowledge_action(item_id, "disable", request)

    def delete_knowledge(self, item_id, request: gr.Request):  # noqa: ANN001, ANN201
        return self._knowledge_action(item_id, "delete", request)

    # --- persona ------------------------------------------------------------------------------

    def persona_fields(self, request: gr.Request) -> tuple[str, str, str, str]:
        _require_admin(request)
        p = load_persona(self.kaizen.db)
        return p.agent_name, p.creator, p.company, p.style

    def preview_persona(self, name: str, creator: str, company: str, style: str, request: gr.Request):  # noqa: ANN201
        _require_admin(request)
        preview = ops.persona_preview(self.kaizen, Persona(name or "", creator or "", company or "", style or ""))
        info = f"**{preview['tokens']} tokens** (budget {preview['budget']})"
        if preview["warning"]:
            info += f"\n\n⚠️ {preview['warning']}"
        return preview["prompt"], info

    def save_persona(self, name: str, creator: str, company: str, style: str, request: gr.Request) -> str:
        _require_admin(request)
        with _user_errors():
            ops.update_settings(self.kaizen, persona={"agent_name": name or "", "creator": creator or "",
                                                      "company": company or "", "style": style or ""})
        return "Saved. New replies use this persona now; the next training round trains with it."

    # --- training -----------------------------------------------------------------------------

    def _progress(self) -> tuple[str, object, bool]:
        """(progress html, loss figure, whether to keep polling). A run started elsewhere
        (`kaizen train`) is followed too, as long as its row says it is going."""
        running = ops.running_run(self.kaizen)
        with self.kaizen.db.session() as s:
            if running is not None:
                row = store.get_run(session=s, run_id=running)
            else:
                latest = store.list_runs(session=s, limit=1)
                row = latest[0] if latest else None
            run = ops.run_dict(row) if row is not None else None
        curve = plots.loss_curve(run["loss_curve"] if run else [], run["total_steps"] if run else 0)
        going = running is not None or (run is not None and run["status"] in ACTIVE_STATUSES)
        return progress_html(run), curve, going

    def runs_table(self, request: gr.Request) -> pd.DataFrame:
        _require_admin(request)
        with self.kaizen.db.session() as s:
            data = [[r.id, r.status, r.trigger, r.round_index, f"{r.step}/{r.total_steps}", _fmt(r.loss),
                     r.adapter_version or "", _when(r.started_at), r.error or ""]
                    for r in store.list_runs(session=s, limit=50)]
        return pd.DataFrame(data, columns=RUN_COLUMNS)

    def training_status(self, request: gr.Request):  # noqa: ANN201
        """What the 1-second timer shows; the timer switches itself off once no run is going. The
        last tick also refreshes the adapters panel, which then lists the new version; earlier
        ticks leave it alone, so a version being picked there is not reset every second."""
        _require_admin(request)
        html_, curve, running = self._progress()
        adapters = (gr.skip(), gr.skip(), gr.skip()) if running else self.adapters_table(request)
        return html_, curve, gr.Timer(active=running), self.runs_table(request), *adapters

    def train_now(self, request: gr.Request):  # noqa: ANN201
        _require_admin(request)
        with _user_errors():
            run_id = ops.start_training(self.kaizen)
        html_, curve, _ = self._progress()
        return f"Started training run #{run_id}.", html_, curve, gr.Timer(active=True)

    def training_settings(self, request: gr.Request):  # noqa: ANN201
        _require_admin(request)
        with self.kaizen.db.session() as s:
            next_round = store.completed_rounds(session=s)
        scheduler = self.kaizen.scheduler
        cfg = scheduler.config() if scheduler is not None else None
        enabled = gr.Checkbox(value=bool(cfg and cfg["enabled"]), interactive=cfg is not None)
        minutes = gr.Number(value=cfg["minutes"] if cfg else None, interactive=cfg is not None)
        min_items = gr.Number(value=cfg["min_items"] if cfg else None, interactive=cfg is not None)
        note = "" if cfg else "Scheduled training is off in this server (started with --no-schedule)."
        return hyperparameters_markdown(next_round), enabled, minutes, min_items, note

    def save_schedule(self, enabled: bool, minutes, min_items, request: gr.Request) -> str:  # noqa: ANN001
        _require_admin(request)
        with _user_errors():
            cfg = ops.update_settings(self.kaizen, schedule={"enabled": bool(enabled), "minutes": minutes,
                                                             "min_items": min_items})["schedule"]
        if not cfg["enabled"]:
            return "Scheduled training is off."
        return f"Every {cfg['minutes']} min, a round trains if at least {cfg['min_items']} new item(s) arrived."

    # --- adapters -----------------------------------------------------------------------------

    def adapters_table(self, request: gr.Request):  # noqa: ANN201
        _require_admin(request)
        view = ops.adapters_view(self.kaizen)
        data = [["●" if view["active"] == "base" else "", "base", "", *[""] * len(METRIC_KEYS), "",
                 "the model without an adapter"]]
        for v in view["versions"]:
            m = v["metrics"]
            data.append(["●" if v["active"] else "", v["version"], v["verdict"],
                         *[_fmt(m.get(key)) for key in METRIC_KEYS], (v["created_at"] or "")[:19].replace("T", " "),
                         v["reason"]])
        choices = ["base"] + [v["version"] for v in reversed(view["versions"])]
        note = f"Active: **{view['active']}** (serving {view['serving']})."
        if view["follower_error"]:
            note += f"\n\n⚠️ {view['follower_error']}"
        return pd.DataFrame(data, columns=ADAPTER_COLUMNS), gr.Dropdown(choices=choices, value=view["active"]), note

    def activate(self, version: str, request: gr.Request):  # noqa: ANN201
        _require_admin(request)
        if not version:
            raise gr.Error("Choose a version first.")
        with _user_errors():
            served = ops.activate_version(self.kaizen, version)
        table, dropdown, note = self.adapters_table(request)
        swap = self.kaizen.follower.last_swap_s
        took = f" (swapped in {swap:.2f} s)" if swap is not None else ""
        return table, dropdown, f"Now serving **{served}**{took}.\n\n{note}"

    def rollback(self, request: gr.Request):  # noqa: ANN201
        return self.activate("base", request)

    def download_adapter(self, version: str, request: gr.Request) -> str:
        _require_admin(request)
        with _user_errors():
            return str(ops.zip_adapter(self.kaizen, version))

    # --- export -------------------------------------------------------------------------------

    def export(self, request: gr.Request):  # noqa: ANN201
        _require_admin(request)
        with _user_errors():
            path, rows = ops.export_dataset(self.kaizen)
        return str(path), f"Exported {rows} rows (SFT rows from knowledge and corrections, plus 👍 replies)."

    def load(self, status: str, rating: str, request: gr.Request):  # noqa: ANN201
        """Fill every panel when the page opens."""
        _require_admin(request)
        html_, curve, running = self._progress()
        return (*self.dashboard(request), self.feedback_table(status, rating, request), self.kaizen.auto_approve(),
                self.knowledge_table(request), *self.persona_fields(request), html_, curve, gr.Timer(active=running),
                self.runs_table(request), *self.training_settings(request), *self.adapters_table(request))


def build_admin_ui(kaizen) -> gr.Blocks:  # noqa: ANN001, PLR0915 - one layout, read top to bottom
    h = AdminPanel(kaizen)
    private = {"api_visibility": "private"}
    # Handlers that read or change what the page shows run one at a time, in the order they were
    # sent: otherwise a slow page load could land after an import and show the old table again.
    ordered = {**private, "concurrency_id": "admin-state", "concurrency_limit": 1}
    # Downloads are copied into Gradio's cache; drop the copies after 15 minutes.
    with gr.Blocks(title="Kaizen admin", delete_cache=(300, 900)) as ui:
        gr.Markdown("## Kaizen admin")
        with gr.Tab("Dashboard", elem_id="tab-dashboard"):
            with gr.Row():
                totals = gr.Markdown(elem_id="totals")
                refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90, elem_id="refresh")
            with gr.Row():
                plot_day = gr.Plot(label="Thumbs-up rate by day", elem_id="plot-rating-day")
                plot_adapter = gr.Plot(label="Thumbs-up rate by adapter", elem_id="plot-rating-adapter")
            with gr.Row():
                plot_emotion = gr.Plot(label="Emotions", elem_id="plot-emotion")
                plot_sources = gr.Plot(label="Answer sources", elem_id="plot-sources")
            recent = gr.Dataframe(headers=RECENT_COLUMNS, column_widths=RECENT_WIDTHS, label="Recent exchanges",
                                  interactive=False, wrap=True, elem_id="recent-table")

        with gr.Tab("Feedback review", elem_id="tab-review"):
            auto = gr.Checkbox(label="Auto-approve corrections (off: each correction waits for review, which "
                                     "guards against poisoning)", elem_id="auto-approve")
            auto_note = gr.Markdown(elem_id="auto-approve-note")
            with gr.Row():
                status_filter = gr.Dropdown(STATUS_FILTERS, value="pending", label="Status", elem_id="review-status")
                rating_filter = gr.Dropdown(RATING_FILTERS, value="all", label="Rating", elem_id="review-rating")
            review_table = gr.Dataframe(headers=FEEDBACK_COLUMNS, column_widths=FEEDBACK_WIDTHS, interactive=False,
                                        wrap=True, label="Feedback (click a row to review it)", elem_id="review-table")
            with gr.Row():
                review_id = gr.Number(label="Feedback id", precision=0, scale=1, elem_id="review-id")
                review_detail = gr.Markdown(elem_id="review-detail")
            correction = gr.Textbox(label="Correction (edit before approving if needed)", lines=3,
                                    max_length=ops.MAX_CORRECTION_CHARS, elem_id="review-correction")
            with gr.Row():
                approve = gr.Button("Approve", variant="primary", elem_id="approve")
                reject = gr.Button("Reject", variant="stop", elem_id="reject")
            review_msg = gr.Markdown(elem_id="review-message")

        with gr.Tab("Knowledge", elem_id="tab-knowledge"):
            upload = gr.File(label="Knowledge file (.csv, .jsonl or .txt, UTF-8)", type="filepath",
                             file_types=[".csv", ".jsonl", ".txt"], elem_id="knowledge-file")
            with gr.Row():
                skip_invalid = gr.Checkbox(label="Skip invalid lines (import the good rows)", elem_id="skip-invalid")
                verbatim = gr.Checkbox(label="Serve these answers word for word", elem_id="verbatim")
                import_btn = gr.Button("Import", variant="primary", elem_id="import")
            import_msg = gr.Markdown(elem_id="import-result")
            knowledge = gr.Dataframe(headers=KNOWLEDGE_COLUMNS, column_widths=KNOWLEDGE_WIDTHS, interactive=False,
                                     wrap=True, label="Knowledge items (click a row to pick it)", elem_id="knowledge-table")
            with gr.Row():
                item_id = gr.Number(label="Item id", precision=0, elem_id="knowledge-id")
                enable = gr.Button("Enable", elem_id="knowledge-enable")
                disable = gr.Button("Disable", elem_id="knowledge-disable")
                delete = gr.Button("Delete", variant="stop", elem_id="knowledge-delete")
            knowledge_msg = gr.Markdown(elem_id="knowledge-message")

        with gr.Tab("Persona", elem_id="tab-persona"):
            with gr.Row():
                with gr.Column():
                    name = gr.Textbox(label="Agent name", elem_id="persona-name")
                    creator = gr.Textbox(label="Creator", elem_id="persona-creator")
                    company = gr.Textbox(label="Company information", lines=3, elem_id="persona-company")
                    style = gr.Textbox(label="Style", lines=3, elem_id="persona-style")
                    save_persona = gr.Button("Save persona", variant="primary", elem_id="persona-save")
                with gr.Column():
                    prompt = gr.Textbox(label="System prompt preview", lines=10, interactive=False,
                                        elem_id="persona-preview")
                    prompt_info = gr.Markdown(elem_id="persona-tokens")
            persona_msg = gr.Markdown(elem_id="persona-message")

        with gr.Tab("Training", elem_id="tab-training"):
            with gr.Row():
                train = gr.Button("Train now", variant="primary", scale=0, elem_id="train-now")
                train_msg = gr.Markdown(elem_id="train-message")
            progress = gr.HTML(elem_id="progress")
            loss = gr.Plot(label="Loss", elem_id="loss-plot")
            with gr.Accordion("Schedule", open=True):
                with gr.Row():
                    sched_on = gr.Checkbox(label="Train on a schedule", elem_id="schedule-enabled")
                    sched_minutes = gr.Number(label="Every N minutes", precision=0, minimum=1,
                                              elem_id="schedule-minutes")
                    sched_items = gr.Number(label="If at least M new approved items", precision=0, minimum=1,
                                            elem_id="schedule-min-items")
                    sched_save = gr.Button("Save schedule", elem_id="schedule-save")
                sched_msg = gr.Markdown(elem_id="schedule-message")
            runs = gr.Dataframe(headers=RUN_COLUMNS, column_widths=RUN_WIDTHS, interactive=False, wrap=True,
                                label="Run history", elem_id="runs-table")
            with gr.Accordion("Hyperparameters", open=False):
                hyper = gr.Markdown(elem_id="hyperparameters")
            timer = gr.Timer(1.0, active=False)

        with gr.Tab("Adapters", elem_id="tab-adapters"):
            adapters_tbl = gr.Dataframe(headers=ADAPTER_COLUMNS, column_widths=ADAPTER_WIDTHS, interactive=False,
                                        wrap=True, label="Versions", elem_id="adapters-table")
            with gr.Row():
                version = gr.Dropdown(["base"], value="base", label="Version", elem_id="adapter-version")
                activate = gr.Button("Activate", variant="primary", elem_id="activate")
                rollback = gr.Button("Roll back to base", elem_id="rollback")
                download = gr.Button("Download (zip)", elem_id="adapter-download")
            adapter_msg = gr.Markdown(elem_id="adapter-message")
            adapter_file = gr.File(label="Adapter download", interactive=False, height=90, elem_id="adapter-file")

        with gr.Tab("Export", elem_id="tab-export"):
            gr.Markdown("The training set as chat JSONL: one `{\"messages\": [...]}` row per line.")
            export = gr.Button("Export dataset", variant="primary", elem_id="export")
            export_msg = gr.Markdown(elem_id="export-message")
            export_file = gr.File(label="Dataset download", interactive=False, height=90, elem_id="export-file")

        dashboard_out = [totals, plot_day, plot_adapter, plot_emotion, plot_sources, recent]
        training_out = [hyper, sched_on, sched_minutes, sched_items, sched_msg]
        adapters_out = [adapters_tbl, version, adapter_msg]
        ui.load(h.load, [status_filter, rating_filter],
                [*dashboard_out, review_table, auto, knowledge, name, creator, company, style, progress, loss, timer,
                 runs, *training_out, *adapters_out], **ordered)
        refresh.click(h.dashboard, None, dashboard_out, **ordered)

        for trigger in (status_filter.change, rating_filter.change):
            trigger(h.feedback_table, [status_filter, rating_filter], review_table, **ordered)
        review_table.select(h.select_feedback, review_table, [review_id, review_detail, correction], **private)
        review_id.submit(h.pick_feedback, review_id, [review_detail, correction], **private)
        review_in = [review_id, correction, status_filter, rating_filter]
        approve.click(h.approve, review_in, [review_msg, review_table], **ordered)
        reject.click(h.reject, review_in, [review_msg, review_table], **ordered)
        auto.input(h.set_auto_approve, auto, auto_note, **private)

        import_btn.click(h.upload_knowledge, [upload, skip_invalid, verbatim], [import_msg, knowledge], **ordered)
        knowledge.select(h.select_knowledge, knowledge, item_id, **private)
        enable.click(h.enable_knowledge, item_id, [knowledge_msg, knowledge], **ordered)
        disable.click(h.disable_knowledge, item_id, [knowledge_msg, knowledge], **ordered)
        delete.click(h.delete_knowledge, item_id, [knowledge_msg, knowledge], **ordered)

        persona_in = [name, creator, company, style]
        for box in persona_in:
            box.change(h.preview_persona, persona_in, [prompt, prompt_info], show_progress="hidden", **private)
        save_persona.click(h.save_persona, persona_in, persona_msg, **private)

        train.click(h.train_now, None, [train_msg, progress, loss, timer], **ordered)
        timer.tick(h.training_status, None, [progress, loss, timer, runs, *adapters_out], show_progress="hidden",
                   **ordered)
        sched_save.click(h.save_schedule, [sched_on, sched_minutes, sched_items], sched_msg, **ordered)

        activate.click(h.activate, version, adapters_out, **ordered)
        rollback.click(h.rollback, None, adapters_out, **ordered)
        download.click(h.download_adapter, version, adapter_file, **private)
        export.click(h.export, None, [export_file, export_msg], **private)
    return ui


def mount_admin(app: FastAPI, kaizen) -> None:  # noqa: ANN001 - bot.services.Kaizen
    """Add the admin REST API and mount the admin tab at /admin. Call before mounting "/"."""
    auth = AdminAuth(db=kaizen.db, settings=kaizen.settings)
    ops.install_admin_errors(app)
    app.include_router(ops.build_admin_router(kaizen, auth))  # before the /admin mount, which would shadow it
    # Without this the chat app mounted at "/" answers /admin (no slash) with a 404.
    app.add_api_route("/admin", lambda: RedirectResponse("/admin/"), include_in_schema=False)
    ui = build_admin_ui(kaizen)
    ui.queue(default_concurrency_limit=4)
    # Gradio's file routes must never serve the data directory. Downloads still work: Gradio
    # copies a returned file into its own cache directory and serves that copy.
    gr.mount_gradio_app(app, ui, path="/admin", auth=auth.check, auth_message="Kaizen admin: log in as 'admin'.",
                        blocked_paths=[str(kaizen.settings.data_dir.resolve())], allowed_paths=[],
                        max_file_size=ImportLimits().max_bytes + 64_000, footer_links=[], ssr_mode=False,
                        css=CSS)

