"""Kaizen's command line: `kaizen COMMAND ...` (or `python launch.py COMMAND ...`).

    kaizen serve [--host H] [--port P] [--model M] [--no-schedule] [--role all|web|worker]   (the default)
    kaizen ask "QUESTION" ... [--no-memory] [--json]   answer each question (one model load)
    kaizen teach "QUESTION" "ANSWER"     store it, train a round now, exit 0 only if promoted
    kaizen train [--force]               train a round on everything approved
    kaizen import SOURCE [--skip-invalid] [--split S] [--question-column C] [--answer-column C] [--category-column C]
                                         add knowledge from .csv, .jsonl or .txt, or from datasets data (.parquet,
                                         .arrow, .json, a save_to_disk directory, a hub dataset owner/name)
    kaizen curious [--limit N] [--json]  the "to teach" queue: questions answered badly, most asked first
    kaizen export OUT.jsonl              write the training set as chat JSONL
    kaizen adapters                      list the adapter versions
    kaizen activate VERSION [--no-pin]   promote or roll back (VERSION or 'base'), pinned against rounds
    kaizen unpin                         let rounds that pass the gate activate their version again

Every command takes --data-dir (default ./kaizen-data or KAIZEN_DATA_DIR). Other settings come
from flags, then KAIZEN_* environment variables, then defaults (see kaizen/settings.py and the README).
Errors meant for the user are printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from feedback_db.store import StoreError
from kaizen.errors import InputError, KaizenError
from kaizen.settings import (
    GateLimits,
    Settings,
    TrainConfig,
    flag_help,
    flag_name,
    load_gate_limits,
    load_settings,
    load_train_config,
)

if TYPE_CHECKING:  # heavy imports (torch) wait until a command needs them
    from bot.services import Kaizen
    from feedback_db.db import Database
    from kaizen.ports import ScopeRouter
    from scheduler import KaizenScheduler, TrainingSupervisor
    from trainer.rounds import RoundOutcome

COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {}  # filled by @command


Command = Callable[[argparse.Namespace, Settings], int]


def command(name: str) -> Callable[[Command], Command]:
    """Register the decorated function as `kaizen NAME`."""

    def register(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn

    return register


def setting_flag(p: argparse.ArgumentParser, name: str) -> None:
    """Add the flag of Settings field `name` (--data-dir for data_dir), its help from the field's description.

    A true/false setting gets --NAME and --no-NAME. Values are validated by load_settings, not argparse,
    so a bad one gets the same message as a bad KAIZEN_* variable.
    """
    if Settings.model_fields[name].annotation is bool:
        p.add_argument(flag_name(name), dest=name, default=None, help=flag_help(name),
                       action=argparse.BooleanOptionalAction)
    else:
        p.add_argument(flag_name(name), dest=name, default=None, help=flag_help(name))


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    for name in ("data_dir", "model", "db_url"):
        setting_flag(common, name)

    p = argparse.ArgumentParser(prog="kaizen", description="Kaizen: a chatbot that learns from its users.")
    sub = p.add_subparsers(dest="command")

    serve = sub.add_parser("serve", parents=[common], help="serve the chat UI, admin UI and HTTP API")
    for name in ("host", "port", "schedule", "role"):
        setting_flag(serve, name)

    ask = sub.add_parser("ask", parents=[common], help="print the answers to one or more questions")
    ask.add_argument("question", nargs="+", help="each is answered on its own, with no history")
    ask.add_argument("--json", action="store_true",
                     help="one JSON object per question: question, answer, source, adapter, adapter_applied")
    setting_flag(ask, "memory")

    teach = sub.add_parser("teach", parents=[common], help="teach one answer and train a round now")
    teach.add_argument("question")
    teach.add_argument("answer")

    train = sub.add_parser("train", parents=[common], help="train a round on everything approved")
    train.add_argument("--force", action="store_true", help="train even if nothing new arrived")

    imp = sub.add_parser(
        "import", parents=[common],
        help="import knowledge from .csv, .jsonl or .txt, or from Hugging Face datasets data",
        description="SOURCE is a knowledge file (.csv question,answer[,category]; .jsonl chat messages, "
                    "prompt/completion or question/answer; .txt 'question -> answer' lines), a .parquet, .arrow or "
                    ".json file, a directory written by Dataset.save_to_disk or DatasetDict.save_to_disk, or a "
                    "Hugging Face hub dataset owner/name (streamed; only from the local datasets cache unless "
                    "HF_HUB_OFFLINE=0). "
                    "A .csv or .jsonl is read as a dataset table when a column option is given.")
    imp.add_argument("file", metavar="SOURCE", help="file, save_to_disk directory or hub dataset owner/name")
    imp.add_argument("--skip-invalid", action="store_true", help="import the good rows and list the bad ones")
    imp.add_argument("--verbatim", action="store_true", help="serve these answers word for word from memory")
    imp.add_argument("--split", default=None,
                     help="the split of a DatasetDict directory or hub dataset (default: train)")
    imp.add_argument("--question-column", default=None, help="dataset column holding the questions (default: "
                     "the first of question, q, prompt, instruction, input)")
    imp.add_argument("--answer-column", default=None, help="dataset column holding the answers (default: "
                     "the first of answer, a, response, output, completion)")
    imp.add_argument("--category-column", default=None, help="dataset column holding categories (default: none)")

    exp = sub.add_parser("export", parents=[common], help="write the training set as chat JSONL")
    exp.add_argument("out")

    sub.add_parser("adapters", parents=[common], help="list adapter versions")
    cur = sub.add_parser("curious", parents=[common], help="list the \"to teach\" queue: questions answered badly")
    cur.add_argument("--limit", type=int, default=20, help="most questions listed (default 20)")
    cur.add_argument("--json", action="store_true", help="one JSON object per question")
    act = sub.add_parser("activate", parents=[common], help="serve VERSION (or 'base') and pin it")
    act.add_argument("version")
    act.add_argument("--no-pin", dest="pin", action="store_false",
                     help="let the next round that passes the gate replace it")
    sub.add_parser("unpin", parents=[common], help="release the pin: rounds that pass the gate activate again")
    return p


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from the flags given (argparse leaves the others None), then KAIZEN_* variables, then defaults.

    Raises InputError naming the flag or variable if a value is out of range.
    """
    return load_settings({name: getattr(args, name, None) for name in Settings.model_fields}, environ)


def training_knobs(environ: Mapping[str, str] = os.environ) -> tuple[TrainConfig, GateLimits]:
    """The trainer's knobs (KAIZEN_TRAIN_*) and the gate's limits (KAIZEN_GATE_*). Raises InputError if invalid."""
    return load_train_config(environ), load_gate_limits(environ)


class _LazyScope:
    """The serving side's scope router, built on first use: loading the embedder costs seconds, and a
    round that finds nothing to train on never asks."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.settings = db, settings
        self._router: ScopeRouter | None = None

    def in_scope(self, text: str) -> bool:
        if self._router is None:
            from bot.recall import KnowledgeRecall
            from bot.services import build_memory

            self._router = KnowledgeRecall(db=self.db, memory=build_memory(self.settings))
        return self._router.in_scope(text)


def scope_router(db: Database, settings: Settings) -> ScopeRouter | None:
    """The serving side's routing by scope (the retrieval memory over the knowledge table), for a round
    to measure its version as served; None when the adapter answers everything (adapter_routing=always)."""
    return _LazyScope(db, settings) if settings.adapter_routing == "scope" else None


def wire_serving(kaizen: Kaizen) -> Kaizen:
    """Attach training, the schedule and adapter following to a serving process. Role all trains
    here (and takes rounds that web replicas queued); role web queues rounds for a worker."""
    from scheduler import KaizenScheduler, RequestedTraining
    from trainer.dataset import export_training_set

    settings = kaizen.settings
    if settings.role == "web":
        kaizen.training = RequestedTraining(db=kaizen.db)
        # The schedule's settings can be changed here; the worker runs the job.
        kaizen.scheduler = KaizenScheduler(db=kaizen.db, settings=settings, supervisor=kaizen.training)
    else:
        supervisor, kaizen.scheduler = training_side(kaizen.db, settings,
                                                     on_finish=lambda _run_id: kaizen.follower.sync())
        kaizen.training = supervisor
    kaizen.export_dataset = export_training_set
    kaizen.train_config = training_knobs()[0]
    if settings.wikipedia_lookups > 0:
        from bot.admin_service import AdminService
        from bot.curiosity import PeriodicJob

        service, n = AdminService(kaizen), settings.wikipedia_lookups
        kaizen.lookups = PeriodicJob(lambda: service.auto_lookups(n), settings.schedule_minutes * 60,
                                     name="wikipedia-lookups").start()
    kaizen.follower.start()
    return kaizen


def training_side(db: Database, settings: Settings, *, on_finish: Callable[[int], object] | None = None,
                  ) -> tuple[TrainingSupervisor, KaizenScheduler]:
    """The training supervisor and the schedule of a process that trains (role all or worker), started:
    the scheduled job (unless --no-schedule) and the poll for rounds that web replicas queued."""
    from scheduler import KaizenScheduler, TrainingSupervisor

    cfg, limits = training_knobs()
    supervisor = TrainingSupervisor(db=db, settings=settings, cfg=cfg, limits=limits, scope=scope_router,
                                    on_finish=on_finish)
    schedule = KaizenScheduler(db=db, settings=settings, supervisor=supervisor)
    if settings.schedule:
        schedule.start()
    supervisor.serve_requests(poll_s=settings.worker_poll_s, also=schedule.refresh)
    return supervisor, schedule


@command("serve")
def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    if settings.role == "worker":
        return serve_worker(settings)
    from bot.app import build_app
    from bot.auth import startup_notice
    from bot.services import build_services
    from kaizen.prompts import budget_warning, build_system_prompt, load_persona

    kaizen = wire_serving(build_services(settings))
    print(startup_notice(db=kaizen.db, settings=settings), flush=True)
    warning = budget_warning(build_system_prompt(load_persona(kaizen.db)), kaizen.engine.count_tokens,
                             settings.persona_token_budget)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    app = build_app(kaizen)
    # uvicorn re-raises SIGTERM after its shutdown, so atexit never runs: close (and stop a running
    # training child) in the shutdown event instead.
    app.router.add_event_handler("shutdown", kaizen.close)
    role_warning(kaizen.db, settings)
    role = "" if settings.role == "all" else f"; role {settings.role}"
    engine = kaizen.engine.status()
    # (an engine that does not answer has said so already, on stderr, when it was built)
    where = f"; engine: {engine.kind} at {engine.url}, {engine.serving} answering" if engine.url else ""
    print(f"Kaizen is serving on http://{settings.host}:{settings.port}  (data: {settings.data_dir}; database: "
          f"{kaizen.db.describe()}{role}{where})", flush=True)

    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


def role_warning(db: Database, settings: Settings) -> None:
    """Warn when web replicas and workers are split over SQLite: they work only as processes on one
    machine sharing one file; several machines need PostgreSQL (docs/deploy.md)."""
    if settings.role != "all" and db.engine.url.get_backend_name() == "sqlite":
        print(f"warning: --role {settings.role} on SQLite ({db.describe()}): processes on other machines cannot "
              "share it; set KAIZEN_DB_URL to a PostgreSQL database for several machines", file=sys.stderr, flush=True)


def serve_worker(settings: Settings) -> int:
    """`kaizen serve --role worker`: the schedule and training rounds (its own and those web replicas
    queued), no chat model loaded; only GET /healthz is served, for a load balancer or an orchestrator."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    db = _open_db(settings)
    role_warning(db, settings)
    supervisor, schedule = training_side(db, settings)
    app = FastAPI(title="Kaizen training worker", docs_url=None, redoc_url=None, openapi_url=None)

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    def healthz() -> JSONResponse:
        problem = db.ping()
        body = {"status": "unavailable" if problem else "ok", "role": "worker", "running_run": supervisor.running(),
                **({"error": problem} if problem else {})}
        return JSONResponse(body, status_code=503 if problem else 200)

    def close() -> None:
        schedule.shutdown()
        supervisor.stop()
        db.close()

    app.router.add_event_handler("shutdown", close)
    print(f"Kaizen training worker (health on http://{settings.host}:{settings.port}/healthz; data: "
          f"{settings.data_dir}; database: {db.describe()})", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


@command("ask")
def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from bot.services import build_services

    kaizen = build_services(settings)
    for question in args.question:  # one model load for all of them
        reply = kaizen.chat.answer(question, client="cli", use_memory=settings.memory)
        if args.json:
            print(json.dumps({"question": question, "answer": reply.text, "source": reply.source,
                              "adapter": reply.meta["adapter_version"],
                              "adapter_applied": reply.meta["adapter_applied"]}, ensure_ascii=False), flush=True)
        else:
            print(reply.text, flush=True)
    return 0


def _open_db(settings: Settings) -> Database:
    from feedback_db.db import Database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Database(settings.database_url)


def _print_outcome(outcome: RoundOutcome) -> int:
    m = outcome.metrics
    print(f"{outcome.version}: {outcome.reason}")
    print(f"round took {outcome.seconds:.1f} s ({m.steps} steps, {m.train_seconds} s training, "
          f"{m.tokens_per_s} tokens/s, {m.eval_seconds} s evaluation)")
    print(f"promoted: the bot now answers from {outcome.version}" if outcome.promoted
          else "not promoted: the active adapter is unchanged")
    return 0 if outcome.promoted else 1


@command("teach")
def cmd_teach(args: argparse.Namespace, settings: Settings) -> int:
    from feedback_db import store
    from trainer.rounds import run_round

    question, answer = args.question.strip(), args.answer.strip()
    db = _open_db(settings)
    with db.write() as s:
        item = store.add_knowledge(session=s, question=question, answer=answer, origin="teach", verbatim=True)
    print(f"stored as knowledge item {item.id}; training a round ...", flush=True)
    cfg, limits = training_knobs()
    return _print_outcome(run_round(db=db, settings=settings, cfg=cfg, limits=limits, trigger="teach", force=True,
                                    scope=scope_router(db, settings)))


@command("train")
def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.rounds import run_round

    cfg, limits = training_knobs()
    db = _open_db(settings)
    return _print_outcome(run_round(db=db, settings=settings, cfg=cfg, limits=limits, trigger="cli",
                                    force=args.force, scope=scope_router(db, settings)))


@command("import")
def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from feedback_db import store
    from kaizen.dataset_source import RowError, is_dataset_source, read_dataset
    from kaizen.knowledge_files import read_knowledge_file

    columns = {"question_column": args.question_column, "answer_column": args.answer_column,
               "category_column": args.category_column}
    given = any(v is not None for v in columns.values())
    if is_dataset_source(args.file, columns_given=given):
        result = read_dataset(args.file, split=args.split or "train", skip_invalid=args.skip_invalid, **columns)
    elif given or args.split is not None:
        raise InputError(f"--split and the column options apply to datasets (.parquet, .arrow, .json, .csv, .jsonl, "
                         f"a save_to_disk directory, a hub dataset), not to {args.file}")
    else:
        result = read_knowledge_file(args.file, skip_invalid=args.skip_invalid)
    db = _open_db(settings)
    with db.write() as s:
        added, skipped = store.import_knowledge(
            session=s, rows=[(r.question, r.answer, r.category) for r in result.rows], verbatim=args.verbatim)
    print(f"imported {len(added)} item(s) from {args.file}; {skipped} already known")
    for err in result.errors:
        where = "row" if isinstance(err, RowError) else "line"
        print(f"  skipped {where} {err.line}: {err.reason}", file=sys.stderr)
    return 0


@command("export")
def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from trainer.dataset import export_training_set

    n = export_training_set(db=_open_db(settings), path=args.out)
    print(f"wrote {n} rows to {args.out}")
    return 0


@command("curious")
def cmd_curious(args: argparse.Namespace, settings: Settings) -> int:
    """The "to teach" queue (bot/curiosity.py), ranked, as the admin tab's To teach tab shows it."""
    from bot.curiosity import REASONS, Curiosity, known_by
    from bot.recall import KnowledgeRecall
    from bot.services import build_memory

    if args.limit < 1:
        raise InputError("--limit must be at least 1.")
    db = _open_db(settings)
    recall = KnowledgeRecall(db=db, memory=build_memory(settings))
    queue = Curiosity(db, min_confidence=settings.curiosity_min_confidence, known=known_by(recall),
                      embedder=recall.memory.cross).queue(args.limit)
    if args.json:
        for q in queue:
            print(json.dumps({"key": q.key, "question": q.question, "count": q.count, "origin": q.origin,
                              "reasons": q.reasons, "phrasings": q.phrasings,
                              "last_asked": q.last_asked.isoformat() if q.last_asked else None,
                              "from_item_id": q.from_item_id}, ensure_ascii=False))
        return 0
    if not queue:
        print("Nothing to teach: no question was answered badly since the last answers.")
        return 0
    print(f"{'asked':>5}  {'why':44}  question")
    for q in queue:
        why = ("proposed" if q.origin == "proposed"
               else ", ".join(f"{REASONS.get(k, k)} ×{n}" for k, n in sorted(q.reasons.items())))
        print(f"{q.count:>5}  {why:44}  {q.question}")
    print("Answer them in the admin tab (To teach) or with POST /admin/api/curious/answer.")
    return 0


@command("adapters")
def cmd_adapters(args: argparse.Namespace, settings: Settings) -> int:
    from feedback_db import store
    from kaizen.metrics import RoundMetrics

    db = _open_db(settings)
    with db.session() as s:
        active = store.get_active_adapter(session=s)
        rows = store.list_adapters(session=s)
        reports = store.live_servers(store.served_adapters(session=s))
    print(f"{'':2}{'version':8} {'verdict':9} {'round':>5}  {'created':19}  {'reliab.':>7} {'general.':>8} "
          f"{'locality':>8} {'retention':>9} {'pref.':>5} {'learned':>7} {'parked':>6}")
    print(f"{'*' if active == 'base' else ' ':2}{'base':8} {'':9} {'':>5}  {'':19}  the model without an adapter")

    def figure(value: object, width: int) -> str:
        return f"{value:>{width}.2f}" if isinstance(value, (int, float)) else f"{'-':>{width}}"

    for r in rows:
        m = RoundMetrics.from_dict(r.metrics)
        print(f"{'*' if r.version == active else ' ':2}{r.version:8} {r.verdict:9} {r.round_index:>5}  "
              f"{r.created_at:%Y-%m-%d %H:%M:%S}  {figure(m.new_recall, 7)} {figure(m.paraphrase_recall, 8)} "
              f"{figure(m.locality, 8)} {figure(m.retention, 9)} {figure(m.preference_auc, 5)} {m.learned:>7} "
              f"{m.parked:>6}")
    print("reliability: new facts recalled exactly; generality: unseen phrasings; locality: agreement with the "
          "base model on held-out prompts (1 = unchanged); retention: replayed facts kept; pref.: the preference "
          "adapter's agreement with held-out ratings (AUC, 0.5 = chance)")
    print(f"* active (what the database asks for). {served_line(reports, active)}")
    return 0


def served_line(reports: list[dict], active: str) -> str:
    """What each running server last reported, against the active version."""
    if not reports:
        return "No running server has reported what it serves."

    def one(r: dict) -> str:
        line = f"{r['version']}"
        if r["version"] != active:
            line += f", not {active}" + (f": {r['error']}" if r.get("error") and r["wanted"] == active else " yet")
        return line

    if len(reports) == 1:
        r = reports[0]
        return f"The server last reported serving {one(r)} ({r['at'][:19]} UTC)."
    return f"{len(reports)} servers run: " + "; ".join(f"{r['host']}:{r['pid']} serves {one(r)}" for r in reports) + "."


SERVER_REPORT_SECONDS = 5.0  # how long `kaizen activate` waits for the running servers to report


@command("activate")
def cmd_activate(args: argparse.Namespace, settings: Settings) -> int:
    from feedback_db import store
    from kaizen import adapters

    version = adapters.check_version_name(args.version)
    if version != adapters.BASE:
        adapters.verify(adapters.version_dir(settings.adapters_dir, version))
    db = _open_db(settings)
    with db.write() as s:
        asked_at = store.request_activation(session=s, version=version)
        if args.pin:
            store.set_pinned_adapter(session=s, version=version)
    print(f"active adapter: {version}" + (" (pinned: `kaizen unpin` lets rounds replace it)" if args.pin else ""))
    # Each running server follows the setting within about a second and reports what it serves.
    with db.session() as s:
        running = {(r["host"], r["pid"]) for r in store.live_servers(store.served_adapters(session=s))}
    if not running:
        print("no server is running; one started later serves it")
        return 0
    deadline = time.monotonic() + SERVER_REPORT_SECONDS
    while True:
        with db.session() as s:
            reports = {(r["host"], r["pid"]): r for r in store.served_adapters(session=s)
                       if (r["host"], r["pid"]) in running}
        answered = [r for r in reports.values() if r["at"] >= asked_at and r["wanted"] == version
                    and (r["version"] == version or r["error"])]
        if len(answered) == len(running) or time.monotonic() > deadline:
            return _activation_outcome(version, running, reports, answered)
        time.sleep(0.2)


def _activation_outcome(version: str, running: set, reports: dict, answered: list[dict]) -> int:
    """Print what the running servers did with an activation: 0 if all that answered serve it."""
    def who(r: dict) -> str:
        return "the running server" if len(running) == 1 else f"server {r['host']}:{r['pid']}"

    failed = [r for r in answered if r["version"] != version]
    for r in failed:
        print(f"{who(r)} still serves {r['version']}: {r['error']}", file=sys.stderr)
    served = [r for r in answered if r["version"] == version]
    if len(served) == len(running):
        print(f"the running server now serves {version}" if len(running) == 1
              else f"all {len(running)} running servers now serve {version}")
    elif served:
        print(f"{len(served)} of {len(running)} running servers now serve {version}")
    silent = [reports.get(key) for key in running if all((r["host"], r["pid"]) != key for r in answered)]
    for report in silent:
        last = report["version"] if report else "nothing"
        print(f"{who(report) if report else 'a server'} has not taken it yet (it serves {last} as last reported); "
              "it serves it at its next check or when started again")
    return 1 if failed else 0


@command("unpin")
def cmd_unpin(args: argparse.Namespace, settings: Settings) -> int:
    from feedback_db import store

    db = _open_db(settings)
    with db.write() as s:
        store.set_pinned_adapter(session=s, version=None)
    print("pin released: the next round that passes the gate is activated")
    return 0


def main(argv: list[str] | None = None) -> int:
    # Kaizen never downloads models: a hub id must already be in the local cache.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Chat and a training round share 2 cores. OpenMP threads that spin while waiting collapse
    # when cores are oversubscribed (measured: a round took 21 s instead of 1.9 s). Must be set
    # before torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
