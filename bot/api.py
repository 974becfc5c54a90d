"""The public HTTP API: OpenAI-compatible chat, feedback, models and health.

    POST /v1/chat/completions   stream true/false; the response id is the stored exchange id
    GET  /v1/models
    POST /v1/feedback           {"id", "rating": "up"|"down", "correction"?}: 200, 404, 422
    GET  /healthz               {"status": "ok", "adapter": "<active version or base>"}

Errors come back as {"error": {"message", "type"}} with a 4xx or 503 status, never as a 5xx
for anything the client sent.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer
from starlette.exceptions import HTTPException as StarletteHTTPException

from bot.engine_api import FinishReason
from feedback_db import store
from kaizen.errors import KaizenError
from kaizen.prompts import INVALID_CHARS, MAX_CORRECTION_CHARS

if TYPE_CHECKING:
    from bot.chat import Reply
    from bot.services import Kaizen



def _refuse(pattern: re.Pattern[str], what: str) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is not None and pattern.search(value):
            raise ValueError(f"contains {what}")
        return value

    return check


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str

    # Lone surrogates (JSON allows "\ud800") break the tokenizer. Control characters are refused
    # only in the new user message (clean_message): the bot's own earlier replies may hold them.
    _check_content = field_validator("content")(_refuse(re.compile("[\ud800-\udfff]"), "a lone surrogate"))


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    conversation_id: str | None = Field(default=None, max_length=32, pattern=r"^[0-9a-zA-Z_-]+$")
    memory: bool | None = None


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64)
    rating: Literal["up", "down"]
    correction: str | None = Field(default=None, max_length=MAX_CORRECTION_CHARS)

    _check_correction = field_validator("correction")(
        _refuse(INVALID_CHARS, "control characters (such as NUL) or lone surrogates"))


# --- responses --------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str


class ErrorResponse(BaseModel):
    """Every error, also the one sent in the middle of a stream: {"error": {"message", "type"}}."""

    error: ErrorDetail


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class CompletionChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason = "stop"  # "length": the reply ran into max_tokens


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class KaizenExtras(BaseModel):
    """What Kaizen adds to a completion: where the answer came from and what was served."""

    source: str  # memory | rag | model
    memory_item_ids: list[int]
    adapter: str  # the version being served
    adapter_applied: bool = False  # whether its adapter produced this answer (routing by scope)
    preference_applied: bool = False  # whether the version's preference adapter (KTO on ratings) was on for it
    emotion: str


class ChatCompletion(BaseModel):
    """The non-streamed answer; `id` is the stored exchange's id (rate it with /v1/feedback)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    kaizen: KaizenExtras


class ChunkDelta(BaseModel):
    """A chunk's delta; the fields that are not set are left out ({} in the last chunk)."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed answer; every chunk carries the exchange's id."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "kaizen"
    adapter: str  # the adapter version being served


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class FeedbackAnswer(BaseModel):
    """The stored rating: `id` is the exchange's, `feedback_id` the rating's, `status` pending/approved."""

    id: str
    feedback_id: int
    rating: str
    status: str
    correction: str | None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    adapter: str  # the active version, or "base"


def _error(status: int, message: str, kind: str) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(message=message, type=kind))
    return JSONResponse(body.model_dump(), status_code=status,
                        headers={"Retry-After": "2"} if status in (429, 503) else None)


def install_error_handlers(app: FastAPI) -> None:
    """Answer Kaizen's, the store's, Starlette's and validation errors as ErrorResponse bodies."""

    @app.exception_handler(KaizenError)
    async def _kaizen(_req: Request, exc: KaizenError) -> JSONResponse:
        return _error(exc.status, exc.message, type(exc).__name__)

    @app.exception_handler(store.NotFound)
    async def _not_found(_req: Request, exc: store.NotFound) -> JSONResponse:
        return _error(404, str(exc), "NotFound")

    @app.exception_handler(store.Invalid)
    async def _invalid(_req: Request, exc: store.Invalid) -> JSONResponse:
        return _error(422, str(exc), "Invalid")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Invalid request."
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        response = _error(exc.status_code, message, kind)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "body"
            parts.append(f"{where}: {err.get('msg')}")
        return _error(422, "Invalid request: " + "; ".join(parts), "invalid_request_error")


def _chunk(reply_id: str, model: str, created: int, delta: ChunkDelta, finish: FinishReason | None = None) -> str:
    body = ChatCompletionChunk(id=reply_id, created=created, model=model,
                               choices=[ChunkChoice(delta=delta, finish_reason=finish)])
    return f"data: {json.dumps(body.model_dump(), ensure_ascii=False)}\n\n"


def build_router(kaizen: Kaizen) -> APIRouter:
    """The /v1 routes and /healthz over one running Kaizen."""
    router = APIRouter()

    def _start(req: ChatRequest) -> Reply:
        *history, last = req.messages
        if last.role != "user":
            raise KaizenError("The last message must come from the user.")
        system = "\n".join(m.content for m in history if m.role == "system")
        turns = [{"role": m.role, "content": m.content} for m in history if m.role != "system"]
        return kaizen.chat.start(
            message=last.content,
            history=turns,
            conversation_id=req.conversation_id,
            client="api",
            use_memory=req.memory,
            extra_system=system,
            max_new_tokens=req.max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
        )

    @router.post("/v1/chat/completions", response_model=ChatCompletion)
    def chat_completions(req: ChatRequest) -> ChatCompletion | Response:
        reply = _start(req)
        model = kaizen.model_name
        created = int(time.time())
        if not req.stream:
            text = reply.read()
            prompt_tokens, completion_tokens = reply.meta["prompt_tokens"], reply.meta["completion_tokens"]
            return ChatCompletion(
                id=reply.exchange_id, created=created, model=model,
                choices=[CompletionChoice(message=AssistantMessage(content=text),
                                          finish_reason=reply.meta["finish_reason"])],
                usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                            total_tokens=prompt_tokens + completion_tokens),
                kaizen=KaizenExtras(source=reply.source, memory_item_ids=reply.item_ids,
                                    adapter=reply.meta["adapter_version"],
                                    adapter_applied=reply.meta["adapter_applied"],
                                    preference_applied=reply.meta["preference_applied"], emotion=reply.emotion.label))

        def events() -> Iterator[str]:
            yield _chunk(reply.exchange_id, model, created, ChunkDelta(role="assistant", content=""))
            try:
                for piece in reply:
                    yield _chunk(reply.exchange_id, model, created, ChunkDelta(content=piece))
            except KaizenError as exc:
                error = ErrorResponse(error=ErrorDetail(message=exc.message, type=type(exc).__name__))
                yield f"data: {json.dumps(error.model_dump())}\n\n"
                return
            yield _chunk(reply.exchange_id, model, created, ChunkDelta(), reply.meta["finish_reason"])
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/v1/models", response_model=ModelList)
    def models() -> ModelList:
        return ModelList(data=[ModelCard(id=kaizen.model_name, adapter=kaizen.engine.adapter_version)])

    @router.post("/v1/feedback", response_model=FeedbackAnswer)
    def feedback(req: FeedbackRequest) -> FeedbackAnswer:
        with kaizen.db.write() as s:
            fb = store.rate_exchange(session=s, exchange_id=req.id, rating=req.rating, correction=req.correction,
                                     auto_approve=kaizen.auto_approve())
            return FeedbackAnswer(id=req.id, feedback_id=fb.id, rating=fb.rating, status=fb.status,
                                  correction=fb.correction)

    @router.get("/healthz", response_model=Health)
    def healthz() -> Health:
        return Health(adapter=kaizen.engine.adapter_version)

    return router
