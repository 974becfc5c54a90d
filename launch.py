"""Kaizen's command line: `kaizen COMMAND ...` (or `python launch.py COMMAND ...`).

    kaizen serve [--host H] [--port P] [--model M] [--no-schedule]   (the default command)
    kaizen ask "QUESTION" [--no-memory]

Every command takes --data-dir (default ./kaizen-data or KAIZEN_DATA_DIR). Other settings come
from flags, then KAIZEN_* environment variables, then defaults (see settings.py / README).
Errors meant for the user are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from errors import KaizenError
from feedback_db.store import StoreError
from settings import Settings, build_settings

COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {}


def command(name: str):  # noqa: ANN201
    def register(fn):  # noqa: ANN001, ANN202
        COMMANDS[name] = fn
        return fn

    return register


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="data directory (default ./kaizen-data, or KAIZEN_DATA_DIR)")
    common.add_argument("--model", help="base model: 'embedded', a local directory, or a cached HF id")
    common.add_argument("--db-url", help="SQLAlchemy database URL (default: sqlite in the data directory)")

    p = argparse.ArgumentParser(prog="kaizen", description="Kaizen: a chatbot that learns from its users.")
    sub = p.add_subparsers(dest="command")

    serve = sub.add_parser("serve", parents=[common], help="serve the chat UI, admin UI and HTTP API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--no-schedule", action="store_true", help="do not run the scheduled training job")

    ask = sub.add_parser("ask", parents=[common], help="print one answer from the active adapter")
    ask.add_argument("question")
    ask.add_argument("--no-memory", action="store_true", help="answer from the weights alone, without retrieval")

    for extra in EXTRA_PARSERS:
        extra(sub, common)
    return p


EXTRA_PARSERS: list[Callable] = []


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {
        "data_dir": getattr(args, "data_dir", None),
        "model": getattr(args, "model", None),
        "db_url": getattr(args, "db_url", None),
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
    }
    if getattr(args, "no_schedule", False):
        overrides["schedule"] = False
    if getattr(args, "no_memory", False):
        overrides["memory"] = False
    return build_settings(overrides)


@command("serve")
def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from bot.app import build_app
    from bot.services import build_services

    kaizen = build_services(settings)
    app = build_app(kaizen)
    print(f"Kaizen is serving on http://{settings.host}:{settings.port}  (data: {settings.data_dir})", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


@command("ask")
def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from bot.services import build_services

    kaizen = build_services(settings)
    reply = kaizen.chat.answer(args.question, client="cli", use_memory=settings.memory)
    print(reply.text)
    return 0


def main(argv: list[str] | None = None) -> int:
    # Kaizen never downloads models: a hub id must already be in the local cache.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    name = args.command or "serve"
    if args.command is None:
        args = parser().parse_args(["serve"])
    try:
        settings = settings_from_args(args)
        return COMMANDS[name](args, settings)
    except KaizenError as exc:
        print(f"kaizen: {exc.message}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"kaizen: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
