"""A round's evaluation with the recall of each fact scripted: the tiny random model cannot learn a
sentence, so tests of the gate's bookkeeping across rounds decide which facts the weights "recall".
Everything else (training, locality, drift, leak) is measured for real.

    trainer.rounds.evaluate_adapter = scripted_evaluation(lambda fact: fact.item_id == 1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from trainer.dataset import Fact
from trainer.evaluate import answer_key, evaluate_adapter


def scripted_evaluation(recalls: Callable[[Fact], bool]) -> Callable[..., Any]:
    def evaluate(*args: Any, **kwargs: Any) -> Any:
        metrics = evaluate_adapter(*args, **kwargs)
        facts: list[Fact] = args[5]
        per = {str(f.item_id): [answer_key(f.answer), bool(recalls(f))] for f in facts}

        def share(new: bool) -> float | None:
            hits = [per[str(f.item_id)][1] for f in facts if f.new == new]
            return sum(hits) / len(hits) if hits else None

        return dataclasses.replace(metrics, facts=per, new_recall=share(True), retention=share(False))

    return evaluate
