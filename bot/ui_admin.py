"""The admin tab (Gradio 6 Blocks at `/admin`, login `admin`) and `mount_admin`, which adds it
and the admin REST API (bot/admin_api.py) to the FastAPI app.

Panels: Dashboard, Feedback review, Knowledge, Persona, Training (live progress), Adapters,
Export. Every read and write goes through the admin service (bot/admin_service.py), the same one
the REST API uses; the formatting is in bot/admin_views.py. Gradio's login protects the page and
its routes, but Gradio still serves handlers that are hidden from its API page (gradio issues
#13051, #11877), so every handler in `AdminPanel` checks on the server that the caller is logged
in as admin before doing anything.

Interactive elements have stable elem_ids for browser tests; see the layout in build_admin_ui.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from gradio.utils import get_upload_folder
from matplotlib.figure import Figure

from bot import admin_api, plots
from bot import admin_views as views
from bot.admin_models import LrPlanView
from bot.admin_service import USER_ERRORS, AdminService
from bot.admin_views import (
    ADAPTER_COLUMNS,
    ADAPTER_LEGEND,
    FEEDBACK_COLUMNS,
    KNOWLEDGE_COLUMNS,
    PARAPHRASE_COLUMNS,
    RECENT_COLUMNS,
    RUN_COLUMNS,
    TO_TEACH_COLUMNS,
)
from bot.auth import ADMIN_USER, AdminAuth
from bot.ui_errors import Refusal, refusals_as_warnings
from kaizen.knowledge_files import ImportFileError, ImportLimits
from kaizen.prompts import MAX_CORRECTION_CHARS, Persona
from kaizen.settings import TrainConfig

if TYPE_CHECKING:
    from bot.services import Kaizen

# Fixed widths for the short columns, so that headers never break letter by letter; the long
# text columns wrap within a share of the row. Each set fits the 1,216 px of a 1,280 px window.
FEEDBACK_WIDTHS: list[str | int] = ["56px", "80px", "100px", "20%", "23%", "23%", "160px"]
TO_TEACH_WIDTHS: list[str | int] = ["34%", "72px", "22%", "160px", "30%"]
KNOWLEDGE_WIDTHS: list[str | int] = ["56px", "20%", "30%", "96px", "96px", "110px", "80px", "80px", "56px", "110px"]
RECENT_WIDTHS: list[str | int] = ["170px", "20%", "32%", "90px", "90px", "84px", "76px", "70px"]
RUN_WIDTHS: list[str | int] = ["56px", "100px", "90px", "72px", "80px", "100px", "90px", "170px", "35%"]
ADAPTER_WIDTHS: list[str | int] = ["84px", "84px", "100px", "96px", "110px", "124px", "72px", "96px", "72px", "90px",
                                   "116px", "20%"]
WATCH_SECONDS = 3.0  # how often the admin tab checks for changes made elsewhere
STATUS_FILTERS = ["pending", "approved", "rejected", "all"]
RATING_FILTERS = ["all", "up", "down"]
CSS = """
#progress .kz-bar { height: 18px; border-radius: 9px; background: var(--neutral-200); overflow: hidden; }
#progress .kz-fill { height: 100%; background: var(--color-accent); transition: width .4s; }
#progress .kz-line { margin-top: 6px; font-variant-numeric: tabular-nums; }
#progress .kz-error { color: var(--error-text-color, #c0392b); white-space: pre-wrap; }
"""

AdaptersOut = tuple[pd.DataFrame, gr.Dropdown, str]


def _require_admin(request: gr.Request | None) -> None:
    """The server-side check every handler makes first (never rely on Gradio hiding endpoints)."""
    if request is None or getattr(request, "username", None) != ADMIN_USER:
        raise gr.Error("Admin login required.")


@contextmanager
def _user_errors() -> Iterator[None]:
    """Show user-facing errors as a Gradio error toast instead of a stack trace."""
    try:
        yield
    except USER_ERRORS as exc:
        raise Refusal(getattr(exc, "message", str(exc))) from exc


def _filter(value: str | None) -> str | None:
    """A table filter's value, None for "all"."""
    return None if value in (None, "all") else value


def hyperparameters_markdown(plan: LrPlanView, cfg: TrainConfig) -> str:
    """The next round's learning rate with its reason, then every trainer knob with its value."""
    rows = [f"| `{name}` | `{getattr(cfg, name)}` | {f.description or ''} |"
            for name, f in TrainConfig.model_fields.items()]
    kto = f", KTO **{plan.kto_lr:.2e}**" if cfg.preference == "kto" else ""
    return (f"Next round: #{plan.round_index}, peak learning rate **{plan.lr:.2e}**{kto} ({plan.reason}).\n\n"
            "| setting | value | meaning |\n|---|---|---|\n" + "\n".join(rows))


class AdminPanel:
    """The admin tab's handlers. Each takes the Gradio request last and checks it first, and
    reads and writes only through the admin service."""

    def __init__(self, service: AdminService) -> None:
        self.service = service

    # --- dashboard ------------------------------------------------------------------------------

    def dashboard(self, request: gr.Request) -> tuple[str, Figure, Figure, Figure, Figure, Figure, pd.DataFrame]:
        """The totals, the five charts and the recent exchanges."""
        _require_admin(request)
        view = self.service.dashboard()
        return (views.totals_markdown(view), plots.rating_over_time(view.rating_by_day),
                plots.rating_by_adapter(view.rating_by_adapter),
                plots.rating_by_version_and_source(views.rates_by_version_and_source(view.ratings_by_version)),
                plots.emotion_distribution(view.emotions), plots.answer_sources(view.sources),
                views.recent_frame(view))

    # --- feedback review ----------------------------------------------------------------------

    def feedback_table(self, status: str | None, rating: str | None, request: gr.Request) -> pd.DataFrame:
        """The review table, filtered ("all" filters nothing)."""
        _require_admin(request)
        return views.feedback_frame(self.service.feedback_list(_filter(status), _filter(rating)))

    def pick_feedback(self, feedback_id: float | None, request: gr.Request) -> tuple[str, str]:
        """Show the chosen feedback in full and put its correction in the edit box."""
        _require_admin(request)
        if feedback_id is None:
            return "", ""
        with _user_errors():
            fb = self.service.feedback(int(feedback_id))
        return views.feedback_detail(fb), fb.correction or ""

    def select_feedback(self, table: pd.DataFrame, evt: gr.SelectData, request: gr.Request) -> tuple[int, str, str]:
        """A click on a review row: its id, its detail and its correction."""
        _require_admin(request)
        feedback_id = int(table.iloc[evt.index[0]]["id"])
        return (feedback_id, *self.pick_feedback(feedback_id, request))

    def _review(self, action: str, feedback_id: float | None, correction: str | None, status: str | None,
                rating: str | None, request: gr.Request) -> tuple[str, pd.DataFrame]:
        _require_admin(request)
        if feedback_id is None:
            raise Refusal("Choose a feedback row first (click it in the table or type its id).")
        with _user_errors():
            fb = self.service.review(int(feedback_id), action, correction if (correction or "").strip() else None)
        return views.review_message(fb), self.feedback_table(status, rating, request)

    def approve(self, feedback_id: float | None, correction: str | None, status: str | None, rating: str | None,
                request: gr.Request) -> tuple[str, pd.DataFrame]:
        """Approve (with the edited correction, if any); the message and the refreshed table."""
        return self._review("approve", feedback_id, correction, status, rating, request)

    def reject(self, feedback_id: float | None, correction: str | None, status: str | None, rating: str | None,
               request: gr.Request) -> tuple[str, pd.DataFrame]:
        """Reject; the message and the refreshed table."""
        return self._review("reject", feedback_id, correction, status, rating, request)

    def set_auto_approve(self, value: bool, request: gr.Request) -> str:
        """Turn auto-approval of corrections on or off; says what that means."""
        _require_admin(request)
        self.service.update_settings(auto_approve=bool(value))
        return ("Auto-approve is ON: new corrections teach the bot at once, without review." if value
                else "Auto-approve is off: corrections wait here for review before they teach the bot.")

    # --- knowledge ----------------------------------------------------------------------------

    def knowledge_table(self, request: gr.Request) -> pd.DataFrame:
        """Every knowledge item."""
        _require_admin(request)
        return views.knowledge_frame(self.service.knowledge_list())

    def upload_knowledge(self, path: str | None, skip_invalid: bool, verbatim: bool,
                         request: gr.Request) -> tuple[str, pd.DataFrame]:
        """Import a file uploaded through this page; the outcome (or its bad lines) and the table."""
        _require_admin(request)
        if not path:
            raise Refusal("Choose a .csv, .jsonl or .txt file first.")
        file = Path(path).resolve()
        if not file.is_relative_to(Path(get_upload_folder()).resolve()):
            raise Refusal("Only files uploaded through this page can be imported.")
        limit = ImportLimits().max_bytes
        with file.open("rb") as f:
            data = f.read(limit + 1)
        try:
            result = self.service.import_knowledge(data, file.name, skip_invalid=bool(skip_invalid),
                                                   verbatim=bool(verbatim))
        except ImportFileError as exc:
            return views.import_error_message(file.name, exc), self.knowledge_table(request)
        return views.import_message(file.name, result), self.knowledge_table(request)

    def select_knowledge(self, table: pd.DataFrame, evt: gr.SelectData,
                         request: gr.Request) -> tuple[int, str, bool, gr.Button]:
        """A click on a knowledge row: its id, its answer and word-for-word flag to edit (and any
        pending delete confirmation withdrawn)."""
        _require_admin(request)
        item_id = int(table.iloc[evt.index[0]]["id"])
        item = next((k for k in self.service.knowledge_list().items if k.id == item_id), None)
        if item is None:
            raise Refusal(f"Knowledge item #{item_id} is gone; the table is refreshed every few seconds.")
        return item_id, item.answer, item.verbatim, gr.Button(visible=False)

    def save_knowledge(self, item_id: float | None, answer: str | None, verbatim: bool,
                       request: gr.Request) -> tuple[str, pd.DataFrame]:
        """Store an item's edited answer and word-for-word flag; the message and the refreshed table."""
        _require_admin(request)
        if item_id is None:
            raise Refusal("Choose a knowledge item first (click it in the table or type its id).")
        with _user_errors():
            item = self.service.edit_knowledge(int(item_id), answer=answer, verbatim=bool(verbatim))
        how = "word for word" if item.verbatim else "as context for the model"
        return f"Knowledge item #{item.id} saved; served {how}.", self.knowledge_table(request)

    def ask_delete_knowledge(self, item_id: float | None, request: gr.Request) -> tuple[str, gr.Button]:
        """The first step of a delete: say what would go, and show the confirm button."""
        _require_admin(request)
        if item_id is None:
            raise Refusal("Choose a knowledge item first (click it in the table or type its id).")
        item = next((k for k in self.service.knowledge_list().items if k.id == int(item_id)), None)
        if item is None:
            raise Refusal(f"There is no knowledge item #{int(item_id)}.")
        return (f"Delete item #{item.id} \"{views.short(item.question, 80)}\"? This cannot be undone; the "
                "memory stops serving it at once.", gr.Button(f"Confirm: delete #{item.id}", visible=True))

    def _knowledge_action(self, item_id: float | None, action: str, request: gr.Request) -> tuple[str, pd.DataFrame]:
        _require_admin(request)
        if item_id is None:
            raise Refusal("Choose a knowledge item first (click it in the table or type its id).")
        with _user_errors():
            if action == "delete":
                self.service.delete_knowledge(int(item_id))
            else:
                self.service.set_knowledge_enabled(int(item_id), enabled=action == "enable")
        return f"Knowledge item #{int(item_id)}: {action}d.", self.knowledge_table(request)

    def enable_knowledge(self, item_id: float | None, request: gr.Request) -> tuple[str, pd.DataFrame]:
        """Enable an item; the message and the refreshed table."""
        return self._knowledge_action(item_id, "enable", request)

    def disable_knowledge(self, item_id: float | None, request: gr.Request) -> tuple[str, pd.DataFrame]:
        """Disable an item; the message and the refreshed table."""
        return self._knowledge_action(item_id, "disable", request)

    def delete_knowledge(self, item_id: float | None, request: gr.Request) -> tuple[str, pd.DataFrame, gr.Button]:
        """Delete an item (the confirm button); the message, the refreshed table, the button hidden."""
        return *self._knowledge_action(item_id, "delete", request), gr.Button(visible=False)

    def approve_knowledge(self, item_id: float | None, answer: str | None,
                          request: gr.Request) -> tuple[str, pd.DataFrame]:
        """Approve a pending item (a Wikipedia summary) with the answer in the box; the message and the table."""
        _require_admin(request)
        if item_id is None:
            raise Refusal("Choose a pending knowledge item first (click it in the table or type its id).")
        with _user_errors():
            item = self.service.approve_knowledge(int(item_id), answer)
        return f"Knowledge item #{item.id} approved: the memory serves it now.", self.knowledge_table(request)

    # --- synthetic paraphrases -------------------------------------------------------------------

    def paraphrase_table(self, item_id: float | None, request: gr.Request) -> pd.DataFrame:
        """The selected item's synthetic paraphrases (every item's when none is selected)."""
        _require_admin(request)
        return views.paraphrase_frame(self.service.paraphrases(int(item_id) if item_id else None))

    def write_paraphrases(self, item_id: float | None, request: gr.Request) -> tuple[str, pd.DataFrame]:
        """Have the model paraphrase the selected item (or every item that has none yet)."""
        _require_admin(request)
        with _user_errors():
            result = self.service.write_paraphrases([int(item_id)] if item_id else None)
        dropped = "; ".join(f"{reason}: {n}" for reason, n in result.dropped.items()) or "none"
        return (f"Paraphrased {result.items} item(s): kept {result.kept} (dropped: {dropped}).",
                self.paraphrase_table(item_id, request))

    def delete_paraphrase(self, item_id: float | None, paraphrase_id: float | None,
                          request: gr.Request) -> tuple[str, pd.DataFrame]:
        """Delete one paraphrase by id; the message and the table."""
        _require_admin(request)
        if not paraphrase_id:
            raise Refusal("Type the id of the paraphrase to delete.")
        with _user_errors():
            self.service.delete_paraphrase(int(paraphrase_id))
        return f"Paraphrase #{int(paraphrase_id)} deleted.", self.paraphrase_table(item_id, request)

    # --- to teach -------------------------------------------------------------------------------

    def to_teach_table(self, request: gr.Request) -> tuple[pd.DataFrame, list[str]]:
        """The "to teach" queue and its keys in table order."""
        _require_admin(request)
        with _user_errors():
            view = self.service.to_teach()
        return views.to_teach_frame(view), [q.key for q in view.questions]

    def select_to_teach(self, keys: list[str], evt: gr.SelectData, request: gr.Request) -> tuple[str, str, str]:
        """A click on a queued question: its key, its phrasing to store, and an empty answer box."""
        _require_admin(request)
        row = evt.index[0]
        if not keys or row >= len(keys):
            raise Refusal("That question is gone; the queue was refreshed.")
        group = next((q for q in self.service.to_teach(limit=1000).questions if q.key == keys[row]), None)
        if group is None:
            raise Refusal("That question was answered or dismissed meanwhile.")
        return group.key, group.question, ""

    def teach(self, key: str, question: str, answer: str,
              request: gr.Request) -> tuple[str, pd.DataFrame, list[str], str, str]:
        """Answer the selected question: approved knowledge, served at once."""
        _require_admin(request)
        if not key:
            raise Refusal("Click a question in the queue first.")
        if not (answer or "").strip():
            raise Refusal("Write the answer first.")
        with _user_errors():
            item = self.service.teach_question(key, answer, question=(question or "").strip() or None)
        return (f"✅ Taught as knowledge item #{item.id}: the memory answers \"{views.short(item.question, 80)}\" "
                "now, and the next round learns it.", *self.to_teach_table(request), "", "")

    def dismiss(self, key: str, request: gr.Request) -> tuple[str, pd.DataFrame, list[str]]:
        """Take the selected question off the queue for good."""
        _require_admin(request)
        if not key:
            raise Refusal("Click a question in the queue first.")
        with _user_errors():
            group = self.service.dismiss_question(key)
        return f"Dismissed \"{views.short(group.question, 80)}\".", *self.to_teach_table(request)

    def wikipedia(self, key: str, request: gr.Request) -> tuple[str, pd.DataFrame]:
        """Look the selected question up on Wikipedia: a pending item for review in the Knowledge tab."""
        _require_admin(request)
        if not key:
            raise Refusal("Click a question in the queue first.")
        with _user_errors():
            item = self.service.wikipedia(key=key)
        return (f"📚 Pending knowledge item #{item.id} from {item.source_url}: review it in the Knowledge tab "
                f"(it is not served until approved).\n\n> {views.short(item.answer, 400)}",
                self.knowledge_table(request))

    def propose(self, request: gr.Request) -> tuple[str, pd.DataFrame, list[str]]:
        """Ask the model for follow-up questions to the newest taught items."""
        _require_admin(request)
        with _user_errors():
            result = self.service.propose_questions()
        added = "".join(f"\n- {views.short(q, 120)}" for q in result.added)
        dropped = "; ".join(f"{reason}: {n}" for reason, n in result.dropped.items())
        return (f"Asked about {result.items} taught item(s): {len(result.added)} new question(s)"
                f"{f' (not added: {dropped})' if dropped else ''}.{added}", *self.to_teach_table(request))

    # --- persona ------------------------------------------------------------------------------

    def persona_fields(self, request: gr.Request) -> tuple[str, str, str, str]:
        """The stored persona: name, creator, company, style."""
        _require_admin(request)
        p = self.service.persona()
        return p.agent_name, p.creator, p.company, p.style

    def preview_persona(self, name: str | None, creator: str | None, company: str | None, style: str | None,
                        request: gr.Request) -> tuple[str, str]:
        """The system prompt these fields would give, and its token count (with a warning if over budget)."""
        _require_admin(request)
        preview = self.service.persona_preview(Persona(name or "", creator or "", company or "", style or ""))
        return preview.prompt, views.persona_info(preview)

    def save_persona(self, name: str | None, creator: str | None, company: str | None, style: str | None,
                     request: gr.Request) -> str:
        """Store the persona (a user error such as an empty name becomes a toast)."""
        _require_admin(request)
        with _user_errors():
            self.service.update_settings(persona={"agent_name": name or "", "creator": creator or "",
                                                  "company": company or "", "style": style or ""})
        return "Saved. New replies use this persona now; the next training round trains with it."

    # --- training -----------------------------------------------------------------------------

    def _progress(self) -> tuple[str, Figure, bool]:
        """(progress html, loss figure, whether to keep polling). A run started elsewhere
        (`kaizen train`) is followed too, as long as its row says it is going."""
        progress = self.service.progress()
        run = progress.run
        curve = plots.loss_curve(run.loss_curve if run else [], run.total_steps if run else 0)
        going = progress.running is not None or views.is_going(run)
        return views.progress_html(run), curve, going

    def runs_table(self, request: gr.Request) -> pd.DataFrame:
        """The latest 50 runs."""
        _require_admin(request)
        return views.runs_frame(self.service.runs(limit=50))

    def training_status(self, request: gr.Request) -> tuple[object, ...]:
        """What the 1-second timer shows; the timer switches itself off once no run is going. The
        last tick also refreshes the adapters panel, which then lists the new version; earlier
        ticks leave it alone, so a version being picked there is not reset every second."""
        _require_admin(request)
        html_, curve, running = self._progress()
        adapters = (gr.skip(), gr.skip(), gr.skip()) if running else self.adapters_table(request)
        # The next round's number and learning rate change when a round ends (a trial saw round #0 after v1).
        hyper = gr.skip() if running else hyperparameters_markdown(self.service.lr_plan(), self.service.train_config())
        return html_, curve, gr.Timer(active=running), self.runs_table(request), *adapters, hyper

    def train_now(self, request: gr.Request) -> tuple[str, str, Figure, gr.Timer]:
        """Start a round; the message, the progress and a running timer."""
        _require_admin(request)
        with _user_errors():
            run_id = self.service.start_training()
        html_, curve, _ = self._progress()
        return f"Started training run #{run_id}.", html_, curve, gr.Timer(active=True)

    def cancel_queued(self, request: gr.Request) -> tuple[str, str, Figure, pd.DataFrame]:
        """Cancel the round waiting for a worker (a web replica's Train now); the message, the progress, the runs."""
        _require_admin(request)
        run = self.service.progress().run
        if run is None or run.status != "queued":
            raise Refusal("No round is waiting for a worker: only a queued round can be cancelled.")
        with _user_errors():
            self.service.cancel_run(run.id)
        html_, curve, _ = self._progress()
        return f"Training run #{run.id} cancelled.", html_, curve, self.runs_table(request)

    def training_settings(self, request: gr.Request) -> tuple[str, gr.Checkbox, gr.Number, gr.Number, str]:
        """The hyperparameters and the schedule (read-only without a scheduler)."""
        _require_admin(request)
        plan, train_cfg = self.service.lr_plan(), self.service.train_config()
        cfg = self.service.schedule()
        enabled = gr.Checkbox(value=bool(cfg and cfg.enabled), interactive=cfg is not None)
        minutes = gr.Number(value=cfg.minutes if cfg else None, interactive=cfg is not None)
        min_items = gr.Number(value=cfg.min_items if cfg else None, interactive=cfg is not None)
        note = "" if cfg else "Scheduled training is off in this server (started with --no-schedule)."
        return hyperparameters_markdown(plan, train_cfg), enabled, minutes, min_items, note

    def save_schedule(self, enabled: bool, minutes: float | None, min_items: float | None,
                      request: gr.Request) -> str:
        """Store and apply the schedule; says what it now is."""
        _require_admin(request)
        with _user_errors():
            cfg = self.service.update_settings(schedule={"enabled": bool(enabled), "minutes": minutes,
                                                         "min_items": min_items}).schedule
        if cfg is None:  # update_settings refuses a schedule without a scheduler: only for the type checker
            return "Scheduled training is off in this server (started with --no-schedule)."
        return views.schedule_message(cfg)

    # --- adapters -----------------------------------------------------------------------------

    def adapters_table(self, request: gr.Request) -> AdaptersOut:
        """The versions table, the version picker (newest first) and what is served."""
        _require_admin(request)
        view = self.service.adapters()
        choices = ["base"] + [v.version for v in reversed(view.versions)]
        return views.adapters_frame(view), gr.Dropdown(choices=choices, value=view.active), views.adapters_note(view)

    def activate(self, version: str | None, request: gr.Request) -> AdaptersOut:
        """Promote or roll back to `version`; the refreshed panel and how long the swap took."""
        _require_admin(request)
        if not version:
            raise Refusal("Choose a version first.")
        with _user_errors():
            result = self.service.activate(version)
        table, dropdown, note = self.adapters_table(request)
        took = f" (swapped in {result.swap_seconds:.2f} s)" if result.swap_seconds is not None else ""
        return table, dropdown, f"Now serving **{result.active}**{took}.\n\n{note}"

    def rollback(self, request: gr.Request) -> AdaptersOut:
        """Serve the base model."""
        return self.activate("base", request)

    def release_pin(self, request: gr.Request) -> AdaptersOut:
        """Let rounds that pass the gate activate their version again."""
        _require_admin(request)
        self.service.release_pin()
        table, dropdown, note = self.adapters_table(request)
        return table, dropdown, f"Pin released: the next version that passes the gate will be served.\n\n{note}"

    def download_adapter(self, version: str, request: gr.Request) -> str:
        """The path of the version zipped, for the download box."""
        _require_admin(request)
        with _user_errors():
            return str(self.service.zip_adapter(version))

    # --- export -------------------------------------------------------------------------------

    def export(self, request: gr.Request) -> tuple[str, str]:
        """Write the training set; its path and how many rows it has."""
        _require_admin(request)
        with _user_errors():
            result = self.service.export_dataset()
        return str(result.path), (f"Exported {result.rows} rows (SFT rows from knowledge and corrections, "
                                  "plus 👍 replies).")

    def watch(self, seen: dict[str, str] | None, status: str | None, rating: str | None,
              request: gr.Request) -> tuple[object, ...]:
        """What the page's watch timer does every few seconds: refresh the panels whose data changed
        elsewhere (another process, the scheduler, the API, another admin), and leave the others alone,
        so nothing the admin is picking is reset. A run started elsewhere switches the progress timer on."""
        _require_admin(request)
        stamps = self.service.panel_stamps()
        changed = {k for k, v in stamps.items() if (seen or {}).get(k) != v}
        feedback = self.feedback_table(status, rating, request) if "feedback" in changed else gr.skip()
        knowledge = self.knowledge_table(request) if "knowledge" in changed else gr.skip()
        runs, timer = gr.skip(), gr.skip()
        if "runs" in changed:
            runs = self.runs_table(request)
            if self._progress()[2]:
                timer = gr.Timer(active=True)
        adapters = self.adapters_table(request) if "adapters" in changed else (gr.skip(),) * 3
        return stamps, feedback, knowledge, runs, timer, *adapters

    def load(self, status: str | None, rating: str | None, request: gr.Request) -> tuple[object, ...]:
        """Fill every panel when the page opens (the persona's preview too: filling its four boxes does
        not trigger their preview handlers, which run on the admin's own edits only)."""
        _require_admin(request)
        html_, curve, running = self._progress()
        persona = self.persona_fields(request)
        return (*self.dashboard(request), self.feedback_table(status, rating, request), self.service.auto_approve(),
                self.knowledge_table(request), *persona, *self.preview_persona(*persona, request),
                html_, curve, gr.Timer(active=running),
                self.runs_table(request), *self.training_settings(request), *self.adapters_table(request),
                self.service.panel_stamps())


class _Wired:
    """The panel's handlers as the page wires them: refusals become fading warnings (bot/ui_errors.py)."""

    def __init__(self, panel: AdminPanel) -> None:
        self._panel = panel

    def __getattr__(self, name: str) -> Any:
        return refusals_as_warnings(getattr(self._panel, name))


def build_admin_ui(service: AdminService) -> gr.Blocks:  # one layout, read top to bottom
    """The admin tab's layout and wiring over `service`; returns the Blocks (not yet queued or mounted)."""
    h = _Wired(AdminPanel(service))
    private: dict[str, Any] = {"api_visibility": "private"}
    # Handlers that read or change what the page shows run one at a time, in the order they were
    # sent: otherwise a slow page load could land after an import and show the old table again.
    ordered: dict[str, Any] = {**private, "concurrency_id": "admin-state", "concurrency_limit": 1}
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
            plot_version_source = gr.Plot(label="Thumbs-up rate by adapter version: memory vs model",
                                          elem_id="plot-rating-version-source")
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
                                    max_length=MAX_CORRECTION_CHARS, elem_id="review-correction")
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
                                     wrap=True, label="Knowledge items (click a row to pick it)",
                                     elem_id="knowledge-table")
            with gr.Row():
                item_id = gr.Number(label="Item id", precision=0, elem_id="knowledge-id")
                enable = gr.Button("Enable", elem_id="knowledge-enable")
                disable = gr.Button("Disable", elem_id="knowledge-disable")
                delete = gr.Button("Delete…", variant="stop", elem_id="knowledge-delete")
                confirm_delete = gr.Button("Confirm delete", variant="stop", visible=False,
                                           elem_id="knowledge-confirm-delete")
            with gr.Row():
                item_answer = gr.Textbox(label="Answer (edit, then Save)", lines=2, elem_id="knowledge-answer")
                item_verbatim = gr.Checkbox(label="Serve word for word", elem_id="knowledge-verbatim")
                save_item = gr.Button("Save", elem_id="knowledge-save")
                approve_item = gr.Button("Approve (pending)", elem_id="knowledge-approve")
            knowledge_msg = gr.Markdown(elem_id="knowledge-message")
            with gr.Accordion("Synthetic paraphrases (model-written, kept only if the memory maps them back)",
                              open=False, elem_id="paraphrases"):
                with gr.Row():
                    write_para = gr.Button("Write paraphrases (the selected item, or all without any)",
                                           elem_id="paraphrase-write")
                    para_id = gr.Number(label="Paraphrase id", precision=0, elem_id="paraphrase-id")
                    delete_para = gr.Button("Delete paraphrase", variant="stop", elem_id="paraphrase-delete")
                para_table = gr.Dataframe(headers=PARAPHRASE_COLUMNS, interactive=False, wrap=True,
                                          label="Paraphrases (check: never trained, measures generality)",
                                          elem_id="paraphrase-table")
                para_msg = gr.Markdown(elem_id="paraphrase-message")

        with gr.Tab("To teach", elem_id="tab-to-teach") as teach_tab:
            gr.Markdown("Questions Kaizen answered badly (👎 without a correction, low confidence, or it said it "
                        "did not know), grouped and ranked by how often they were asked, and questions it "
                        "proposes itself. Answer one to teach it: the memory serves it at once.")
            with gr.Row():
                teach_refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90, elem_id="teach-refresh")
                propose = gr.Button("Propose follow-up questions", size="sm", scale=0, elem_id="teach-propose")
            teach_table = gr.Dataframe(headers=TO_TEACH_COLUMNS, column_widths=TO_TEACH_WIDTHS, interactive=False,
                                       wrap=True, label="To teach (click a question to answer it)",
                                       elem_id="teach-table")
            teach_keys = gr.State([])
            teach_key = gr.Textbox(visible=False, elem_id="teach-key")
            teach_question = gr.Textbox(label="Question (stored as written here)", elem_id="teach-question")
            teach_answer = gr.Textbox(label="Answer", lines=3, max_length=MAX_CORRECTION_CHARS,
                                      elem_id="teach-answer")
            with gr.Row():
                teach_btn = gr.Button("Teach", variant="primary", elem_id="teach")
                wiki_btn = gr.Button("Look up on Wikipedia", elem_id="teach-wikipedia")
                dismiss_btn = gr.Button("Dismiss", variant="stop", elem_id="teach-dismiss")
            teach_msg = gr.Markdown(elem_id="teach-message")

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
                cancel_run = gr.Button("Cancel queued round", scale=0, elem_id="train-cancel")
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
            gr.Markdown(ADAPTER_LEGEND, elem_id="adapters-legend")
            with gr.Row():
                version = gr.Dropdown(["base"], value="base", label="Version", elem_id="adapter-version")
                activate = gr.Button("Activate", variant="primary", elem_id="activate")
                rollback = gr.Button("Roll back to base", elem_id="rollback")
                download = gr.Button("Download (zip)", elem_id="adapter-download")
                unpin = gr.Button("Release pin", elem_id="release-pin")
            adapter_msg = gr.Markdown(elem_id="adapter-message")
            adapter_file = gr.File(label="Adapter download", interactive=False, height=90, elem_id="adapter-file")

        with gr.Tab("Export", elem_id="tab-export"):
            gr.Markdown("The training set as chat JSONL: one `{\"messages\": [...]}` row per line.")
            export = gr.Button("Export dataset", variant="primary", elem_id="export")
            export_msg = gr.Markdown(elem_id="export-message")
            export_file = gr.File(label="Dataset download", interactive=False, height=90, elem_id="export-file")

        # Panels follow changes made elsewhere without a reload (issue 13): the watch timer compares
        # each panel's stamp with the one the page last showed.
        stamps = gr.State({})
        watch = gr.Timer(WATCH_SECONDS)
        dashboard_out = [totals, plot_day, plot_adapter, plot_version_source, plot_emotion, plot_sources, recent]
        training_out = [hyper, sched_on, sched_minutes, sched_items, sched_msg]
        adapters_out = [adapters_tbl, version, adapter_msg]
        ui.load(h.load, [status_filter, rating_filter],
                [*dashboard_out, review_table, auto, knowledge, name, creator, company, style, prompt, prompt_info,
                 progress, loss, timer,
                 runs, *training_out, *adapters_out, stamps], **ordered)
        watch.tick(h.watch, [stamps, status_filter, rating_filter],
                   [stamps, review_table, knowledge, runs, timer, *adapters_out], show_progress="hidden", **ordered)
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
        knowledge.select(h.select_knowledge, knowledge, [item_id, item_answer, item_verbatim, confirm_delete],
                         **private)
        enable.click(h.enable_knowledge, item_id, [knowledge_msg, knowledge], **ordered)
        disable.click(h.disable_knowledge, item_id, [knowledge_msg, knowledge], **ordered)
        save_item.click(h.save_knowledge, [item_id, item_answer, item_verbatim], [knowledge_msg, knowledge], **ordered)
        delete.click(h.ask_delete_knowledge, item_id, [knowledge_msg, confirm_delete], **private)
        confirm_delete.click(h.delete_knowledge, item_id, [knowledge_msg, knowledge, confirm_delete], **ordered)

        approve_item.click(h.approve_knowledge, [item_id, item_answer], [knowledge_msg, knowledge], **ordered)
        item_id.change(h.paraphrase_table, item_id, para_table, show_progress="hidden", **private)
        write_para.click(h.write_paraphrases, item_id, [para_msg, para_table], **ordered)
        delete_para.click(h.delete_paraphrase, [item_id, para_id], [para_msg, para_table], **ordered)

        teach_out = [teach_table, teach_keys]
        for trigger in (teach_tab.select, teach_refresh.click):
            trigger(h.to_teach_table, None, teach_out, **ordered)
        teach_table.select(h.select_to_teach, teach_keys, [teach_key, teach_question, teach_answer], **private)
        teach_btn.click(h.teach, [teach_key, teach_question, teach_answer],
                        [teach_msg, *teach_out, teach_question, teach_answer], **ordered)
        dismiss_btn.click(h.dismiss, teach_key, [teach_msg, *teach_out], **ordered)
        wiki_btn.click(h.wikipedia, teach_key, [teach_msg, knowledge], **ordered)
        propose.click(h.propose, None, [teach_msg, *teach_out], **ordered)

        persona_in = [name, creator, company, style]
        # .input, not .change: filling the boxes at page load fired four previews at once, and the one
        # that answered last (built from half-filled boxes) stayed on screen. Ordered like every handler
        # that writes a panel the page load also writes.
        for box in persona_in:
            box.input(h.preview_persona, persona_in, [prompt, prompt_info], show_progress="hidden", **ordered)
        save_persona.click(h.save_persona, persona_in, persona_msg, **private)

        train.click(h.train_now, None, [train_msg, progress, loss, timer], **ordered)
        cancel_run.click(h.cancel_queued, None, [train_msg, progress, loss, runs], **ordered)
        timer.tick(h.training_status, None, [progress, loss, timer, runs, *adapters_out, hyper],
                   show_progress="hidden", **ordered)
        sched_save.click(h.save_schedule, [sched_on, sched_minutes, sched_items], sched_msg, **ordered)

        activate.click(h.activate, version, adapters_out, **ordered)
        rollback.click(h.rollback, None, adapters_out, **ordered)
        unpin.click(h.release_pin, None, adapters_out, **ordered)
        download.click(h.download_adapter, version, adapter_file, **private)
        export.click(h.export, None, [export_file, export_msg], **private)
    return ui


def mount_admin(app: FastAPI, kaizen: Kaizen) -> None:
    """Add the admin REST API and mount the admin tab at /admin, both over one AdminService.
    Call before mounting "/"."""
    auth = AdminAuth(db=kaizen.db, settings=kaizen.settings)
    service = AdminService(kaizen)
    admin_api.install_admin_errors(app)
    app.include_router(admin_api.build_admin_router(service, auth))  # before the /admin mount, which would shadow it
    # Without this the chat app mounted at "/" answers /admin (no slash) with a 404.
    app.add_api_route("/admin", lambda: RedirectResponse("/admin/"), include_in_schema=False)
    ui = build_admin_ui(service)
    ui.queue(default_concurrency_limit=4)
    # Gradio's file routes must never serve the data directory. Downloads still work: Gradio
    # copies a returned file into its own cache directory and serves that copy.
    gr.mount_gradio_app(app, ui, path="/admin", auth=auth.check, auth_message="Kaizen admin: log in as 'admin'.",
                        blocked_paths=[str(kaizen.settings.data_dir.resolve())], allowed_paths=[],
                        max_file_size=ImportLimits().max_bytes + 64_000, footer_links=[], ssr_mode=False,
                        css=CSS)
