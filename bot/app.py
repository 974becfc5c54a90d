"""The one FastAPI app: the HTTP API, with the Gradio chat UI mounted at `/`.

Build it with `build_app(kaizen)` and serve it with uvicorn (`kaizen serve` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
from fastapi import FastAPI
from gradio.utils import get_upload_folder

from bot.api import build_router, install_error_handlers
from bot.ui_admin import mount_admin
from bot.ui_chat import build_chat_ui

if TYPE_CHECKING:
    from bot.services import Kaizen


def build_app(kaizen: Kaizen) -> FastAPI:
    """The FastAPI app with every route and both Gradio apps mounted."""
    app = FastAPI(title="Kaizen", version="0.1.0", docs_url="/docs", redoc_url=None)
    install_error_handlers(app)
    app.include_router(build_router(kaizen))
    mount_admin(app, kaizen)  # /admin/api and /admin, before "/" (mounted last: it catches everything)
    chat_ui = build_chat_ui(kaizen)
    chat_ui.queue(default_concurrency_limit=None, max_size=kaizen.settings.max_queue * 4)
    # Gradio's file routes must never serve the data directory (the database, the adapters).
    data_dir = str(kaizen.settings.data_dir.resolve())
    # Nor Gradio's upload/cache folder, which holds the admin tab's downloads (exports, adapter
    # zips): those must only be served by /admin, behind its login. The chat tab has no files.
    gradio_cache = str(Path(get_upload_folder()).resolve())
    gr.mount_gradio_app(app, chat_ui, path="/", blocked_paths=[data_dir, gradio_cache], allowed_paths=[],
                        footer_links=[], ssr_mode=False)
    return app
