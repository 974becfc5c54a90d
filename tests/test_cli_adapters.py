"""`kaizen adapters` prints reliability, generality, locality and retention for every version."""

import launch
from feedback_db import store
from feedback_db.db import Database
from kaizen.metrics import RoundMetrics


def test_adapters_lists_the_editing_figures(tmp_path, capsys):
    db = Database(f"sqlite:///{tmp_path / 'kaizen.db'}")
    metrics = RoundMetrics(new_recall=0.8, paraphrase_recall=0.25, locality=0.9731, retention=1.0, learned=8, parked=2,
                           preference_auc=0.7142)
    with db.write() as s:
        store.record_adapter(session=s, version="v1", run_id=None, round_index=0, verdict="promoted", reason="ok",
                             metrics=metrics.to_dict(), path="x")
        store.record_adapter(session=s, version="v2", run_id=None, round_index=1, verdict="rejected", reason="no",
                             metrics=RoundMetrics(new_recall=0.0).to_dict(), path="y")
        store.set_active_adapter(session=s, version="v1")
    db.close()
    assert launch.main(["adapters", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[-7:] == ["reliab.", "general.", "locality", "retention", "pref.", "learned", "parked"]
    v1 = next(line for line in out if " v1 " in line)
    assert v1.startswith("*") and v1.split()[-7:] == ["0.80", "0.25", "0.97", "1.00", "0.71", "8", "2"]
    v2 = next(line for line in out if " v2 " in line)
    assert v2.split()[-7:] == ["0.00", "-", "-", "-", "-", "0", "0"]
