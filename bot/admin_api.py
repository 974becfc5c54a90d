"""The admin REST API under `/admin/api` (HTTP Basic, user `admin`), and the admin operations
that it and the admin tab (bot/ui_admin.py) share.

    POST   /admin/api/train                          start a round: 202 {"run_id"}; 409 if one runs
    GET    /admin/api/runs                           recent runs, newest first
    GET    /admin/api/runs/{id}                      status, step, total_steps, loss, lr, eta_s, phase, error, ...
    GET    /admin/api/adapters                       versions with metrics, verdict, reason, active flag
    POST   /admin/api/adapters/{version}/activate    promote or roll back ("base"); 404 unknown, 422 bad or corrupt
    GET    /admin/api/stats                          the dashboard's totals
    GET    /admin/api/settings                       auto_approve, schedule, persona (+ its token count)
    PUT    /admin/api/settings                       change any of them
    GET    /admin/api/feedback?status=&rating=       ratings and corrections (status: pending|approved|rejected)
    POST   /admin/api/feedback/{id}/approve|reject   {"correction": "edited text"?}
    GET    /admin/api/knowledge                      knowledge items (limit, offset)
    POST   /admin/api/knowledge                      multipart `file` (+ skip_invalid, verbatim): 422 lists bad lines
    DELETE /admin/api/knowledge/{id}
    POST   /admin/api/knowledge/{id}/disable|enable
    GET    /admin/api/export                         the JSONL training set as a download

Wrong or missing credentials get 401 with `WWW-Authenticate: Basic` before anything runs.
Errors use the public API's format, {"error": {"message", "type"}}.

    curl -u admin:$KAIZEN_ADMIN_PASSWORD -X POST http://127.0.0.1:7860/admin/api/train
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import shutil
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from bot.auth import AdminAuth
from bot.services import AUTO_APPROVE_KEY
from feedback_db import store
from kaizen import adapters
from kaizen.errors import AdapterError, AuthError, ConflictError, InputError
from kaizen.knowledge_files import ImportFileError, ImportLimits, validate_import
from kaizen.prompts import SETTING_KEY as PERSONA_KEY
from kaizen.prompts import (
    Persona,
    budget_warning,
    build_system_prompt,
    load_persona,
    tone_instruction,
)

MAX_CORRECTION_CHARS = 4000


class AdminAuthRequired(AuthError):
    """Missing or wrong admin credentials (answered with a WWW-Authenticate challenge)."""


# --- the operations (shared with the admin tab) -----------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def run_dict(run) -> dict:  # noqa: ANN001 - feedback_db.models.TrainingRun
    return {
        "id": run.id, "status": run.status, "trigger": run.trigger, "round_index": run.round_index,
        "phase": run.phase, "step": run.step, "total_steps": run.total_steps, "loss": run.loss, "lr": run.lr,
        "eta_s": run.eta_s, "loss_curve": run.loss_curve or [], "data_counts": run.data_counts or {},
        "adapter_version": run.adapter_version, "error": run.error,
        "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
    }


def adapters_view(kaizen) -> dict:  # noqa: ANN001 - bot.services.Kaizen
    with kaizen.db.session() as s:
        active = store.get_active_adapter(session=s)
        rows = store.list_adapters(session=s)
    return {
        "active": active,
        "serving": kaizen.engine.adapter_version,
        "follower_error": kaizen.follower.last_error,
        "versions": [{"version": r.version, "verdict": r.verdict, "reason": r.reason, "metrics": r.metrics or {},
                      "round_index": r.round_index, "run_id": r.run_id, "created_at": _iso(r.created_at),
                      "active": r.version == active} for r in rows],
    }


def activate_version(kaizen, version: str) -> str:  # noqa: ANN001
    """Make `version` (or "base") the active adapter and swap it in now; returns what is served."""
    version = adapters.check_version_name(version)
    with kaizen.db.session() as s:
        previous = store.get_active_adapter(session=s)
        if version != adapters.BASE:
            store.get_adapter(session=s, version=version)  # NotFound -> 404
    if version != adapters.BASE:
        adapters.verify(adapters.version_dir(kaizen.settings.adapters_dir, version))
    with kaizen.db.write() as s:
        store.set_active_adapter(session=s, version=version)
    served = kaizen.follower.sync()
    if served != version:
        # The engine refused it and kept serving the old version: keep the database truthful.
        with kaizen.db.write() as s:
            store.set_active_adapter(session=s, version=previous)
        raise AdapterError(kaizen.follower.last_error or f"Could not activate {version}.")
    return served


def zip_adapter(kaizen, version: str) -> Path:  # noqa: ANN001
    """The verified adapter folder as a zip in the exports directory."""
    version = adapters.check_version_name(version)
    if version == adapters.BASE:
        raise InputError("The base model has no adapter to download.")
    with kaizen.db.session() as s:
        store.get_adapter(session=s, version=version)
    folder = adapters.version_dir(kaizen.settings.adapters_dir, version)
    adapters.verify(folder)
    kaizen.settings.exports_dir.mkdir(parents=True, exist_ok=True)
    base = kaizen.settings.exports_dir / f"kaizen-adapter-{version}"
    return Path(shutil.make_archive(str(base), "zip", root_dir=folder.parent, base_dir=version))


def export_dataset(kaizen) -> tuple[Path, int]:  # noqa: ANN001
    """Write the training set as chat JSONL into the exports directory; (path, rows)."""
    if kaizen.export_dataset is None:
        raise ConflictError("Exporting the dataset is not available in this process.")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = kaizen.settings.exports_dir / f"kaizen-dataset-{stamp}.jsonl"
    return path, kaizen.export_dataset(db=kaizen.db, path=path)


def import_knowledge(kaizen, data: bytes, filename: str, *, skip_invalid: bool = False,  # noqa: ANN001
                     verbatim: bool = False) -> dict:
    """Validate a knowledge file as `kaizen import` does (ImportFileError lists bad lines) and store it."""
    result = validate_import(data, filename, skip_invalid=skip_invalid)
    with kaizen.db.write() as s:
        added, duplicates = store.import_knowledge(
            session=s, rows=[(r.question, r.answer, r.category) for r in result.rows], verbatim=verbatim)
    return {"imported": len(added), "duplicates": duplicates,
            "skipped": [{"line": e.line, "reason": e.reason} for e in result.errors]}


def knowledge_dict(item) -> dict:  # noqa: ANN001 - feedback_db.models.KnowledgeItem
    return {"id": item.id, "question": item.question, "answer": item.answer, "category": item.category,
            "origin": item.origin, "verbatim": item.verbatim, "enabled": item.enabled, "hit_count": item.hit_count,
            "feedback_id": item.feedback_id, "updated_at": _iso(item.updated_at)}


def feedback_dict(fb, ex) -> dict:  # noqa: ANN001
    return {"id": fb.id, "exchange_id": ex.id, "rating": fb.rating, "status": fb.status,
            "correction": fb.correction, "question": ex.user_text, "answer": ex.bot_text,
            "emotion": ex.emotion_label, "adapter_version": ex.adapter_version, "updated_at": _iso(fb.updated_at)}


def review(kaizen, feedback_id: int, action: str, correction: str | None = None) -> dict:  # noqa: ANN001
    if correction is not None and len(correction) > MAX_CORRECTION_CHARS:
        raise InputError(f"The correction is longer than {MAX_CORRECTION_CHARS} characters.")
    with kaizen.db.write() as s:
        fb = store.review_feedback(session=s, feedback_id=feedback_id, action=action, correction=correction)
        return feedback_dict(fb, store.get_exchange(session=s, exchange_id=fb.exchange_id))


def persona_preview(kaizen, persona: Persona) -> dict:  # noqa: ANN001
    """The system prompt as served (with the neutral tone), its token count and any budget warning."""
    prompt = build_system_prompt(persona, tone=tone_instruction("neutral"))
    budget = kaizen.settings.persona_token_budget
    return {"prompt": prompt, "tokens": kaizen.engine.count_tokens(prompt), "budget": budget,
            "warning": budget_warning(prompt, kaizen.engine.count_tokens, budget)}


def settings_view(kaizen) -> dict:  # noqa: ANN001
    persona = load_persona(kaizen.db)
    return {"auto_approve": kaizen.auto_approve(),
            "schedule": kaizen.scheduler.config() if kaizen.scheduler is not None else None,
            "persona": persona.to_dict(), "persona_preview": persona_preview(kaizen, persona)}


def update_settings(kaizen, *, auto_approve: bool | None = None, schedule: dict | None = None,  # noqa: ANN001
                    persona: dict | None = None) -> dict:
    """Change any of the settings; everything is validated before anything is written."""
    new_persona = None
    if persona is not None:
        new_persona = Persona.from_dict({**load_persona(kaizen.db).to_dict(), **persona}).validated()
    if schedule is not None and kaizen.scheduler is None:
        raise InputError("Scheduled training is off in this server (started with --no-schedule).")
    if schedule is not None:
        kaizen.scheduler.update(**schedule)  # validates, persists and reschedules
    with kaizen.db.write() as s:
        if auto_approve is not None:
            store.set_setting(session=s, key=AUTO_APPROVE_KEY, value=bool(auto_approve))
        if new_persona is not None:
            store.set_setting(session=s, key=PERSONA_KEY, value=new_persona.to_dict())
    return settings_view(kaizen)


def running_run(kaizen) -> int | None:  # noqa: ANN001
    return kaizen.training.running() if kaizen.training is not None else None


def start_training(kaizen) -> int:  # noqa: ANN001
    """Start a round in the background (ConflictError if one is running); returns its run id."""
    if kaizen.training is None:
        raise ConflictError("Training cannot be started from this process (no training supervisor).")
    return kaizen.training.start(trigger="admin", force=True)


def stats(kaizen) -> dict:  # noqa: ANN001
    with kaizen.db.session() as s:
        totals = store.totals(session=s)
        active = store.get_active_adapter(session=s)
    running = running_run(kaizen)
    return {**totals, "active_adapter": active, "serving": kaizen.engine.adapter_version, "running_run": running,
            "follower_error": kaizen.follower.last_error}


# --- HTTP ---------------------------------------------------------------------------------------


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    correction: str | None = Field(default=None, max_length=MAX_CORRECTION_CHARS)


class ScheduleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool | None = None
    minutes: int | None = None
    min_items: int | None = None


class PersonaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent_name: str | None = None
    creator: str | None = None
    company: str | None = None
    style: str | None = None


class SettingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    auto_approve: bool | None = None
    schedule: ScheduleBody | None = None
    persona: PersonaBody | None = None


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """(username, password) from an `Authorization: Basic` header, UTF-8 (RFC 7617), or None."""
    scheme, _, param = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        username, sep, password = base64.b64decode(param.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return None
    return (username, password) if sep else None


def install_admin_errors(app: FastAPI) -> None:
    @app.exception_handler(AdminAuthRequired)
    async def _auth(_req: Request, exc: AdminAuthRequired):  # noqa: ANN202
        return JSONResponse({"error": {"message": exc.message, "type": "AuthError"}}, status_code=401,
                            headers={"WWW-Authenticate": 'Basic realm="Kaizen admin", charset="UTF-8"'})


def _import_error(exc: ImportFileError) -> JSONResponse:
    lines = [{"line": e.line, "reason": e.reason} for e in exc.errors]
    return JSONResponse({"error": {"message": exc.message, "type": "ImportFileError", "lines": lines}},
                        status_code=exc.status)


def build_admin_router(kaizen, auth: AdminAuth) -> APIRouter:  # noqa: ANN001, C901 - one route per endpoint
    def require_admin(request: Request) -> str:
        creds = basic_credentials(request)
        if creds is None or not auth.check(*creds):
            raise AdminAuthRequired("Admin credentials required (HTTP Basic, user 'admin').")
        return creds[0]

    router = APIRouter(prefix="/admin/api", dependencies=[Depends(require_admin)], tags=["admin"])

    @router.post("/train", status_code=202)
    def train():  # noqa: ANN202
        return {"run_id": start_training(kaizen)}

    @router.get("/runs")
    def runs(limit: int = Query(50, ge=1, le=500)):  # noqa: ANN202
        with kaizen.db.session() as s:
            return {"running": running_run(kaizen),
                    "runs": [run_dict(r) for r in store.list_runs(session=s, limit=limit)]}

    @router.get("/runs/{run_id}")
    def run(run_id: int):  # noqa: ANN202
        with kaizen.db.session() as s:
            return run_dict(store.get_run(session=s, run_id=run_id))

    @router.get("/adapters")
    def list_adapters():  # noqa: ANN202
        return adapters_view(kaizen)

    @router.post("/adapters/{version}/activate")
    def activate(version: str):  # noqa: ANN202
        return {"active": activate_version(kaizen, version), "swap_seconds": kaizen.follower.last_swap_s}

    @router.get("/stats")
    def get_stats():  # noqa: ANN202
        return stats(kaizen)

    @router.get("/settings")
    def get_settings():  # noqa: ANN202
        return settings_view(kaizen)

    @router.put("/settings")
    def put_settings(req: SettingsRequest):  # noqa: ANN202
        return update_settings(
            kaizen, auto_approve=req.auto_approve,
            schedule=req.schedule.model_dump(exclude_none=True) if req.schedule else None,
            persona=req.persona.model_dump(exclude_none=True) if req.persona else None)

    @router.get("/feedback")
    def list_feedback(status: Literal["pending", "approved", "rejected"] | None = None,
                      rating: Literal["up", "down"] | None = None,
                      limit: int = Query(200, ge=1, le=1000)):  # noqa: ANN202
        with kaizen.db.session() as s:
            rows = store.list_feedback(session=s, status=status, rating=rating, limit=limit)
            return {"feedback": [feedback_dict(fb, ex) for fb, ex in rows]}

    @router.post("/feedback/{feedback_id}/{action}")
    def review_one(feedback_id: int, action: Literal["approve", "reject"],  # noqa: ANN202
                   req: ReviewRequest | None = None):
        return review(kaizen, feedback_id, action, req.correction if req else None)

    @router.get("/knowledge")
    def list_knowledge(limit: int = Query(200, ge=1, le=5000), offset: int = Query(0, ge=0)):  # noqa: ANN202
        with kaizen.db.session() as s:
            return {"items": [knowledge_dict(k) for k in store.list_knowledge(session=s, limit=limit, offset=offset)]}

    @router.post("/knowledge")
    async def upload_knowledge(request: Request):  # noqa: ANN202
        # The form is parsed here, after the credentials were checked, and only once its declared
        # size is known to be sane, so nobody can make the server spool a huge upload to disk.
        limit = ImportLimits().max_bytes
        length = request.headers.get("content-length", "")
        if not length.isdigit() or int(length) > limit + 64_000:
            raise InputError(f"Upload a knowledge file of at most {limit / 1_000_000:g} MB as multipart form "
                             "field 'file' (with a Content-Length).")
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InputError("Send the knowledge file as the multipart form field 'file'.")
        data = await upload.read(limit + 1)  # one byte over the limit is enough to refuse
        flags = {name: str(form.get(name, "")).lower() in ("1", "true", "on", "yes")
                 for name in ("skip_invalid", "verbatim")}
        try:
            return await run_in_threadpool(import_knowledge, kaizen, data, upload.filename or "", **flags)
        except ImportFileError as exc:
            return _import_error(exc)

    @router.delete("/knowledge/{item_id}")
    def delete_knowledge(item_id: int):  # noqa: ANN202
        with kaizen.db.write() as s:
            store.delete_knowledge(session=s, item_id=item_id)
        return {"deleted": item_id}

    @router.post("/knowledge/{item_id}/{action}")
    def toggle_knowledge(item_id: int, action: Literal["enable", "disable"]):  # noqa: ANN202
        with kaizen.db.write() as s:
            return knowledge_dict(store.set_knowledge_enabled(session=s, item_id=item_id, enabled=action == "enable"))

    @router.get("/export")
    def export():  # noqa: ANN202
        path, _rows = export_dataset(kaizen)
        return FileResponse(path, media_type="application/x-ndjson", filename=path.name)

    return router
