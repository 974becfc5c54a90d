"""The admin REST API under `/admin/api` (HTTP Basic, user `admin`): a thin router over
bot/admin_service.py, which the admin tab (bot/ui_admin.py) shares.

    POST   /admin/api/train                          start a round: 202 {"run_id"}; 409 if one runs
    GET    /admin/api/train/next                     the next round's learning rates and why (decay, results)
    GET    /admin/api/runs                           recent runs, newest first
    GET    /admin/api/runs/{id}                      status, step, total_steps, loss, lr, eta_s, phase, error, ...
    POST   /admin/api/runs/{id}/cancel               a round still waiting for a worker; 409 once one took it
    GET    /admin/api/adapters                       versions with metrics, verdict, reason, active flag
    POST   /admin/api/adapters/{version}/activate    promote or roll back ("base"), and pin it (?pin=false: don't);
                                                     404 unknown, 422 bad or corrupt
    DELETE /admin/api/adapters/pin                   release the pin: rounds that pass the gate activate again
    GET    /admin/api/stats                          the dashboard's totals
    GET    /admin/api/ratings/by-version             ratings, 👍 and 👍 rate per version, source and adapter_applied
    GET    /admin/api/settings                       auto_approve, schedule, persona (+ its token count)
    PUT    /admin/api/settings                       change any of them
    GET    /admin/api/feedback?status=&rating=       ratings and corrections (status: pending|approved|rejected)
    POST   /admin/api/feedback/{id}/approve|reject   {"correction": "edited text"?}; 409 if it has no correction
    GET    /admin/api/knowledge                      knowledge items (limit, offset, status=approved|pending)
    POST   /admin/api/knowledge                      multipart `file` (+ skip_invalid, verbatim): 422 lists bad lines
    PATCH  /admin/api/knowledge/{id}                 {"answer"?, "verbatim"?}: edit an item
    DELETE /admin/api/knowledge/{id}
    POST   /admin/api/knowledge/{id}/disable|enable
    POST   /admin/api/knowledge/{id}/approve         a pending item (a Wikipedia summary), {"answer": "edited"?}
    GET    /admin/api/paraphrases?item_id=           synthetic paraphrases (use: train | check)
    POST   /admin/api/paraphrases                    {"item_ids"?, "per_item"?}: a model writes them, the memory filters
    DELETE /admin/api/paraphrases/{id}
    GET    /admin/api/curious                        the "to teach" queue, ranked (key, question, count, reasons)
    POST   /admin/api/curious/answer                 {"key", "answer", "question"?}: approved knowledge
    POST   /admin/api/curious/dismiss                {"key"}: off the queue for good
    POST   /admin/api/curious/propose                {"items"?, "per_item"?}: the model proposes follow-ups
    POST   /admin/api/curious/wikipedia              {"key"} or {"question"}: a PENDING item from Wikipedia
    GET    /admin/api/export                         the JSONL training set as a download

Wrong or missing credentials get 401 with `WWW-Authenticate: Basic` before anything runs.
Errors use the public API's format, {"error": {"message", "type"}}. The response models are in
bot/admin_models.py.

    curl -u admin:$KAIZEN_ADMIN_PASSWORD -X POST http://127.0.0.1:7860/admin/api/train
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from bot.admin_models import (
    ActivateResult,
    AdaptersView,
    FeedbackList,
    FeedbackView,
    ImportResult,
    KnowledgeDeleted,
    KnowledgeList,
    KnowledgeView,
    LrPlanView,
    ParaphraseList,
    ParaphrasesWritten,
    ProposedQuestions,
    RatingsByVersion,
    RunsView,
    RunView,
    SettingsView,
    StatsView,
    ToTeachList,
    ToTeachView,
    TrainStarted,
)
from bot.admin_service import AdminService
from bot.api import error_type
from bot.auth import AdminAuth
from kaizen.errors import AuthError, InputError
from kaizen.knowledge_files import ImportFileError, ImportLimits
from kaizen.prompts import MAX_CORRECTION_CHARS

TRUE_WORDS = ("1", "true", "on", "yes")


class AdminAuthRequired(AuthError):
    """Missing or wrong admin credentials (answered with a WWW-Authenticate challenge)."""


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    correction: str | None = Field(default=None, max_length=MAX_CORRECTION_CHARS)


class KnowledgeEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str | None = Field(default=None, max_length=MAX_CORRECTION_CHARS)
    verbatim: bool | None = None


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=500, description="The queued question's key (GET /curious).")


class TeachBody(KeyBody):
    answer: str = Field(min_length=1, max_length=MAX_CORRECTION_CHARS)
    question: str | None = Field(None, max_length=1000, description="Store under this phrasing instead.")


class ParaphraseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_ids: list[int] | None = Field(None, max_length=200, description=(
        "Items to paraphrase (default: every approved item that has no paraphrase yet)."))
    per_item: int = Field(5, ge=1, le=20)


class ProposeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: int = Field(5, ge=1, le=50, description="How many of the newest taught items to ask about.")
    item_ids: list[int] | None = Field(None, max_length=50, description="These items instead of the newest.")
    per_item: int = Field(3, ge=1, le=10)


class WikipediaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str | None = Field(None, min_length=1, max_length=500)
    question: str | None = Field(None, min_length=1, max_length=1000)


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str | None = Field(None, min_length=1, max_length=MAX_CORRECTION_CHARS, description=(
        "An edited answer (leave the field out to approve the answer as it is)."))


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
    """Answer AdminAuthRequired with 401 and a Basic challenge, in the API's error format."""

    @app.exception_handler(AdminAuthRequired)
    async def _auth(_req: Request, exc: AdminAuthRequired) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.message, "type": error_type(401)}}, status_code=401,
                            headers={"WWW-Authenticate": 'Basic realm="Kaizen admin", charset="UTF-8"'})


def _import_error(exc: ImportFileError) -> JSONResponse:
    lines = [{"line": e.line, "reason": e.reason} for e in exc.errors]
    return JSONResponse({"error": {"message": exc.message, "type": error_type(exc.status), "lines": lines}},
                        status_code=exc.status)


def build_admin_router(service: AdminService, auth: AdminAuth) -> APIRouter:
    """The /admin/api routes; every one needs the admin's HTTP Basic credentials (else AdminAuthRequired)."""

    def require_admin(request: Request) -> str:
        creds = basic_credentials(request)
        if creds is None or not auth.check(*creds):
            raise AdminAuthRequired("Admin credentials required (HTTP Basic, user 'admin').")
        return creds[0]

    router = APIRouter(prefix="/admin/api", dependencies=[Depends(require_admin)], tags=["admin"])

    @router.post("/train", status_code=202, response_model=TrainStarted)
    def train() -> TrainStarted:
        return TrainStarted(run_id=service.start_training())

    @router.get("/train/next", response_model=LrPlanView)
    def next_round_lr() -> LrPlanView:
        """The next round's peak learning rates and the reason (decay, adjusted by the last results)."""
        return service.lr_plan()

    @router.get("/runs", response_model=RunsView)
    def runs(limit: int = Query(50, ge=1, le=500)) -> RunsView:
        return service.runs(limit)

    @router.get("/runs/{run_id}", response_model=RunView)
    def run(run_id: int) -> RunView:
        return service.run(run_id)

    @router.post("/runs/{run_id}/cancel", response_model=RunView)
    def cancel_run(run_id: int) -> RunView:
        return service.cancel_run(run_id)

    @router.get("/adapters", response_model=AdaptersView)
    def list_adapters() -> AdaptersView:
        return service.adapters()

    @router.post("/adapters/{version}/activate", response_model=ActivateResult)
    def activate(version: str, pin: bool = True) -> ActivateResult:
        return service.activate(version, pin=pin)

    @router.delete("/adapters/pin", response_model=AdaptersView)
    def release_pin() -> AdaptersView:
        return service.release_pin()

    @router.get("/stats", response_model=StatsView)
    def get_stats() -> StatsView:
        return service.stats()

    @router.get("/ratings/by-version", response_model=RatingsByVersion)
    def ratings_by_version() -> RatingsByVersion:
        return service.ratings_by_version()

    @router.get("/settings", response_model=SettingsView)
    def get_settings() -> SettingsView:
        return service.settings()

    @router.put("/settings", response_model=SettingsView)
    def put_settings(req: SettingsRequest) -> SettingsView:
        return service.update_settings(
            auto_approve=req.auto_approve,
            schedule=req.schedule.model_dump(exclude_none=True) if req.schedule else None,
            persona=req.persona.model_dump(exclude_none=True) if req.persona else None)

    @router.get("/feedback", response_model=FeedbackList)
    def list_feedback(status: Literal["pending", "approved", "rejected"] | None = None,
                      rating: Literal["up", "down"] | None = None,
                      limit: int = Query(200, ge=1, le=1000)) -> FeedbackList:
        return service.feedback_list(status, rating, limit)

    @router.post("/feedback/{feedback_id}/{action}", response_model=FeedbackView)
    def review_one(feedback_id: int, action: Literal["approve", "reject"],
                   req: ReviewRequest | None = None) -> FeedbackView:
        return service.review(feedback_id, action, req.correction if req else None)

    @router.get("/knowledge", response_model=KnowledgeList)
    def list_knowledge(limit: int = Query(200, ge=1, le=5000), offset: int = Query(0, ge=0),
                       status: Literal["approved", "pending"] | None = None) -> KnowledgeList:
        return service.knowledge_list(limit, offset, status)

    @router.get("/paraphrases", response_model=ParaphraseList)
    def paraphrases(item_id: int | None = Query(None, ge=1)) -> ParaphraseList:
        return service.paraphrases(item_id)

    @router.post("/paraphrases", response_model=ParaphrasesWritten)
    def write_paraphrases(body: ParaphraseBody | None = None) -> ParaphrasesWritten:
        body = body or ParaphraseBody()
        return service.write_paraphrases(body.item_ids, body.per_item)

    @router.delete("/paraphrases/{paraphrase_id}", response_model=ParaphraseList)
    def delete_paraphrase(paraphrase_id: int) -> ParaphraseList:
        return service.delete_paraphrase(paraphrase_id)

    @router.get("/curious", response_model=ToTeachList)
    def to_teach(limit: int = Query(50, ge=1, le=1000)) -> ToTeachList:
        return service.to_teach(limit)

    @router.post("/curious/answer", response_model=KnowledgeView)
    def teach_question(body: TeachBody) -> KnowledgeView:
        return service.teach_question(body.key, body.answer, body.question)

    @router.post("/curious/dismiss", response_model=ToTeachView)
    def dismiss_question(body: KeyBody) -> ToTeachView:
        return service.dismiss_question(body.key)

    @router.post("/curious/propose", response_model=ProposedQuestions)
    def propose_questions(body: ProposeBody | None = None) -> ProposedQuestions:
        body = body or ProposeBody()
        return service.propose_questions(body.items, body.per_item, body.item_ids)

    @router.post("/curious/wikipedia", response_model=KnowledgeView)
    def wikipedia(body: WikipediaBody) -> KnowledgeView:
        return service.wikipedia(body.key, body.question)

    @router.post("/knowledge", response_model=ImportResult)
    async def upload_knowledge(request: Request) -> ImportResult | Response:
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
        skip_invalid, verbatim = (str(form.get(name, "")).lower() in TRUE_WORDS
                                  for name in ("skip_invalid", "verbatim"))
        try:
            return await run_in_threadpool(service.import_knowledge, data, upload.filename or "",
                                           skip_invalid=skip_invalid, verbatim=verbatim)
        except ImportFileError as exc:
            return _import_error(exc)

    @router.patch("/knowledge/{item_id}", response_model=KnowledgeView)
    def edit_knowledge(item_id: int, body: KnowledgeEdit) -> KnowledgeView:
        return service.edit_knowledge(item_id, answer=body.answer, verbatim=body.verbatim)

    @router.delete("/knowledge/{item_id}", response_model=KnowledgeDeleted)
    def delete_knowledge(item_id: int) -> KnowledgeDeleted:
        return service.delete_knowledge(item_id)

    @router.post("/knowledge/{item_id}/approve", response_model=KnowledgeView)
    def approve_knowledge(item_id: int, body: ApproveBody | None = None) -> KnowledgeView:
        return service.approve_knowledge(item_id, body.answer if body else None)

    @router.post("/knowledge/{item_id}/{action}", response_model=KnowledgeView)
    def toggle_knowledge(item_id: int, action: Literal["enable", "disable"]) -> KnowledgeView:
        return service.set_knowledge_enabled(item_id, enabled=action == "enable")

    @router.get("/export", response_class=FileResponse)
    def export() -> FileResponse:
        result = service.export_dataset()
        return FileResponse(result.path, media_type="application/x-ndjson", filename=result.path.name)

    return router
