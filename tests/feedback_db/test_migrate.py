"""Migrations from an empty database produce exactly the expected tables and columns, and exactly
what the models declare."""

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from feedback_db.db import Database
from feedback_db.models import Base

EXPECTED = {
    "conversations": ["id", "client", "created_at"],
    "exchanges": ["id", "conversation_id", "user_text", "bot_text", "emotion_label", "emotion_score",
                  "adapter_version", "source", "memory_item_ids", "latency_ms", "prompt_tokens",
                  "completion_tokens", "started_at", "created_at", "adapter_applied"],
    "feedback": ["id", "exchange_id", "rating", "correction", "status", "created_at", "updated_at", "reviewed_at"],
    "knowledge_items": ["id", "question", "answer", "category", "origin", "feedback_id", "verbatim", "enabled",
                        "hit_count", "created_at", "updated_at", "train_attempts", "learned_version", "parked"],
    "settings": ["key", "value", "updated_at"],
    "training_runs": ["id", "status", "trigger", "round_index", "pid", "step", "total_steps", "loss", "lr",
                      "eta_s", "loss_curve", "phase", "config", "data_counts", "adapter_version", "error",
                      "started_at", "heartbeat_at", "finished_at"],
    "adapter_versions": ["version", "run_id", "round_index", "verdict", "reason", "metrics", "path", "created_at"],
    "locks": ["name", "owner", "pid", "acquired_at", "heartbeat_at"],
}


def test_migrations_from_empty_database_create_exact_columns(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'kaizen.db'}")
    insp = inspect(db.engine)
    tables = set(insp.get_table_names()) - {"alembic_version"}
    assert tables == set(EXPECTED)
    for table, columns in EXPECTED.items():
        assert [c["name"] for c in insp.get_columns(table)] == columns, table
    db.close()


def test_migrations_are_idempotent_and_sqlite_uses_wal(tmp_path):
    url = f"sqlite:///{tmp_path / 'kaizen.db'}"
    Database(url).close()
    db = Database(url)  # a second start must not fail or re-create anything
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0003"
    db.close()


def test_0002_gives_existing_facts_a_fresh_learning_state(tmp_path):
    from alembic import command
    from alembic.config import Config

    from feedback_db.db import MIGRATIONS

    db = Database(f"sqlite:///{tmp_path / 'kaizen.db'}", run_migrations=False)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("INSERT INTO knowledge_items (question, answer, category, origin, verbatim, enabled, "
                          "hit_count, created_at, updated_at) VALUES ('q', 'a', '', 'import', 0, 1, 0, "
                          "'2026-01-01', '2026-01-01')"))
        command.upgrade(cfg, "head")
        row = conn.execute(text("SELECT train_attempts, learned_version, parked FROM knowledge_items")).one()
    assert tuple(row) == (0, None, 0)
    db.close()


def test_the_models_and_the_migrated_schema_agree(tmp_path: Path) -> None:
    """Alembic's autogenerate finds nothing to change between the models and a database migrated
    from empty: a model change without a migration (or the reverse) fails here."""
    db = Database(f"sqlite:///{tmp_path / 'kaizen.db'}")
    try:
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        db.close()
    assert diff == []
