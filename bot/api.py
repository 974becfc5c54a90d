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
from collections.abc import Iterator
from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from feedback_db import store
from kaizen.errors import KaizenError
from kaizen.prompts import INVALID_CHARS

MAX_CORRECTION_CHARS = 4000


def _refuse(pattern: re.Pattern, what: str):  # noqa: ANN202
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


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status,
                        headers={"Retry-After": "2"} if status in (429, 503) else None)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KaizenError)
    async def _kaizen(_req: Request, exc: KaizenError):  # noqa: ANN202
        return _error(exc.status, exc.message, type(exc).__name__)

    @app.exception_handler(store.NotFound)
    async def _not_found(_req: Request, exc: store.NotFound):  # noqa: ANN202
        return _error(404, str(exc), "NotFound")

    @app.exception_handler(store.Invalid)
    async def _invalid(_req: Request, exc: store.Invalid):  # noqa: ANN202
        return _error(422, str(exc), "Invalid")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException):  # noqa: ANN202
        message = exc.detail if isinstance(exc.detail, str) else "Invalid request."
        response = _error(exc.status_code, message, "invalid_request_error" if exc.status_code < 500 else "server_error")
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError):  # noqa: ANN202
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "body"
            parts.append(f"{where}: {err.get('msg')}")
        return _error(422, "Invalid request: " + "; ".join(parts), "invalid_request_error")


def _chunk(reply_id: str, model: str, created: int, delta: dict, finish: str | None = None) -> str:
    body = {
        "id": reply_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def build_router(kaizen) -> APIRouter:  # noqa: ANN001 - bot.services.Kaizen
    router = APIRouter()

    def _start(req: ChatRequest):  # noqa: ANN202
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

    @router.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest):  # noqa: ANN202
        reply = _start(req)
        model = kaizen.model_name
        created = int(time.time())
        if not req.stream:
            text = reply.read()
            return {
                "id": reply.exchange_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": reply.meta["prompt_tokens"],
                    "completion_tokens": reply.meta["completion_tokens"],
                    "total_tokens": reply.meta["prompt_tokens"] + reply.meta["completion_tokens"],
                },
                "kaizen": {"source": reply.source, "memory_item_ids": reply.item_ids,
                           "adapter": reply.meta["adapter_version"], "emotion": reply.emotion.label},
            }

        def events() -> Iterator[str]:
            yield _chunk(reply.exchange_id, model, created, {"role": "assistant", "content": ""})
            try:
                for piece in reply:
                    yield _chunk(reply.exchange_id, model, created, {"content": piece})
            except KaizenError as exc:
                yield f"data: {json.dumps({'error': {'message': exc.message, 'type': type(exc).__name__}})}\n\n"
                return
            yield _chunk(reply.exchange_id, model, created, {}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/v1/models")
    def models():  # noqa: ANN202
        return {"object": "list", "data": [{"id": kaizen.model_name, "object": "model", "owned_by": "kaizen",
                                            "adapter": kaizen.engine.adapter_version}]}

    @router.post("/v1/feedback")
    def feedback(req: FeedbackRequest):  # noqa: ANN202
        with kaizen.db.write() as s:
            fb = store.rate_exchange(session=s, exchange_id=req.id, rating=req.rating, correction=req.correction,
                                     auto_approve=kaizen.auto_approve())
            return {"id": req.id, "feedback_id": fb.id, "rating": fb.rating, "status": fb.status,
                    "correction": fb.correction}

    @router.get("/healthz")
    def healthz():  # noqa: ANN202
        return {"status": "ok", "adapter": kaizen.engine.adapter_version}

    return router
