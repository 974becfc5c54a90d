"""Migrations from an empty database produce exactly the expected tables and columns, and exactly
what the models declare."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from feedback_db.db import Database
from feedback_db.models import Base

pytestmark = pytest.mark.both_databases

EXPECTED = {
    "conversations": ["id", "client", "created_at"],
    "exchanges": ["id", "conversation_id", "user_text", "bot_text", "emotion_label", "emotion_score",
                  "adapter_version", "source", "memory_item_ids", "latency_ms", "prompt_tokens",
                  "completion_tokens", "started_at", "created_at", "adapter_applied", "confidence"],
    "feedback": ["id", "exchange_id", "rating", "correction", "status", "created_at", "updated_at", "reviewed_at"],
    "knowledge_items": ["id", "question", "answer", "category", "origin", "feedback_id", "verbatim", "enabled",
                        "hit_count", "created_at", "updated_at", "train_attempts", "learned_version", "parked",
                        "status", "source_url"],
    "curious_questions": ["id", "question", "key", "origin", "status", "item_id", "created_at"],
    "paraphrases": ["id", "item_id", "question", "origin", "use", "created_at"],
    "settings": ["key", "value", "updated_at"],
    "training_runs": ["id", "status", "trigger", "round_index", "pid", "step", "total_steps", "loss", "lr",
                      "eta_s", "loss_curve", "phase", "config", "data_counts", "adapter_version", "error",
                      "started_at", "heartbeat_at", "finished_at", "host"],
    "adapter_versions": ["version", "run_id", "round_index", "verdict", "reason", "metrics", "path", "created_at"],
    "locks": ["name", "owner", "pid", "acquired_at", "heartbeat_at", "host"],
}


def test_migrations_from_empty_database_create_exact_columns(db_url):
    db = Database(db_url)
    insp = inspect(db.engine)
    tables = set(insp.get_table_names()) - {"alembic_version"}
    assert tables == set(EXPECTED)
    for table, columns in EXPECTED.items():
        assert [c["name"] for c in insp.get_columns(table)] == columns, table
    db.close()


def test_migrations_are_idempotent_and_sqlite_uses_wal(db_url):
    Database(db_url).close()
    db = Database(db_url)  # a second start must not fail or re-create anything
    with db.engine.connect() as conn:
        if db_url.startswith("sqlite"):
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0005"
    db.close()


def test_0002_gives_existing_facts_a_fresh_learning_state(db_url):
    from alembic import command
    from alembic.config import Config

    from feedback_db.db import MIGRATIONS

    db = Database(db_url, run_migrations=False)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("INSERT INTO knowledge_items (question, answer, category, origin, verbatim, enabled, "
                          "hit_count, created_at, updated_at) VALUES ('q', 'a', '', 'import', :no, :yes, 0, "
                          "'2026-01-01', '2026-01-01')"), {"no": False, "yes": True})
        command.upgrade(cfg, "head")
        row = conn.execute(text("SELECT train_attempts, learned_version, parked FROM knowledge_items")).one()
    assert tuple(row) == (0, None, 0)
    db.close()


def test_the_models_and_the_migrated_schema_agree(db_url: str) -> None:
    """Alembic's autogenerate finds nothing to change between the models and a database migrated
    from empty: a model change without a migration (or the reverse) fails here."""
    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        db.close()
    assert diff == []
