"""The admin tab shows each version's locality and which knowledge items the weights left to the memory."""

import datetime as dt

from bot.admin_models import AdaptersView, AdapterVersionView, KnowledgeList, KnowledgeView
from bot.admin_views import ADAPTER_COLUMNS, adapters_frame, knowledge_frame
from kaizen.metrics import RoundMetrics


def _item(item_id, **state):
    return KnowledgeView(id=item_id, question="Q?", answer="A.", category="", origin="teach", verbatim=True,
                         enabled=True, hit_count=0, feedback_id=None, updated_at=None, **state)


def test_parked_items_are_listed_as_memory_only():
    frame = knowledge_frame(KnowledgeList(items=[
        _item(1, parked=True, train_attempts=3), _item(2, learned_version="v4"), _item(3, train_attempts=1),
        _item(4)]))
    assert frame["weights"].tolist() == ["memory only", "learned (v4)", "queued (1 tries)", "queued"]


def test_the_versions_table_has_a_locality_column():
    version = AdapterVersionView(version="v1", verdict="promoted", reason="passed",
                                 metrics=RoundMetrics(locality=0.9731, new_recall=0.8, learned=8, parked=1),
                                 round_index=0, run_id=1, created_at=dt.datetime(2026, 12, 3), active=True)
    frame = adapters_frame(AdaptersView(active="v1", serving="v1", follower_error=None, versions=[version]))
    row = frame.iloc[1]
    assert list(frame.columns) == ADAPTER_COLUMNS
    assert (row["locality"], row["reliability"], row["learned"], row["parked"]) == ("0.973", "0.800", "8", "1")
    assert frame.iloc[0]["locality"] == ""  # the base model
