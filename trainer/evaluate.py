"""Evaluation metrics for a trained adapter: greedy answers, exact recall, locality and drift.

The gate compares a new adapter with the base model on held-out general prompts
(`trainer/data/general_prompts.json`, never trained on: locality, leak) and counts exact recall of
the taught answers. Everything here is plain functions over a model and tokenizer, so it runs the same on the
real model, a tiny random one, or lists of strings.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kaizen.adapters import PREFERENCE_DIR, cast_weights, serving
from kaizen.base_model import chat_ids
from kaizen.metrics import RoundMetrics
from kaizen.text import normalize_answer
from trainer.cache import cached
from trainer.dataset import Fact, TrainingSet
from trainer.generation import generate_answers, generate_ids
from trainer.lora import _batch, _reply_logits, _Row
from trainer.preference import PREFERENCE_ADAPTER, Rated, auc, auc_difference_se, reward_scores

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from kaizen.ports import ScopeRouter
    from kaizen.prompts import Message

EVAL_MAX_NEW_TOKENS = 64  # length of the greedy answers compared on held-out prompts



def load_general_prompts() -> dict[str, list[str]]:
    """The fixed general prompts: {"anchor": [...], "heldout": [...]}."""
    text = resources.files("trainer.data").joinpath("general_prompts.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return {"anchor": list(data["anchor"]), "heldout": list(data["heldout"])}


def exact_recall(answers: list[str], expected: list[str]) -> float:
    """Fraction of answers equal to the expected answer after normalize_answer."""
    if len(answers) != len(expected):
        raise ValueError("answers and expected differ in length")
    if not expected:
        return 1.0
    hits = sum(normalize_answer(a) == normalize_answer(e) for a, e in zip(answers, expected, strict=True))
    return hits / len(expected)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def drift(base_answers: list[str], new_answers: list[str], tokenizer: PreTrainedTokenizerBase) -> float:
    """Token-level disagreement with the base answers: 1 - mean(common prefix / longer length).

    0 means every answer is identical to the base one; 1 means every answer differs from its
    first token. A prefix measure suits greedy decoding: once one token differs, the rest of the
    answer is a different continuation, so later chance matches mean nothing.
    """
    if len(base_answers) != len(new_answers):
        raise ValueError("base_answers and new_answers differ in length")
    if not base_answers:
        return 0.0
    total = 0.0
    for base, new in zip(base_answers, new_answers, strict=True):
        a = tokenizer(base, add_special_tokens=False)["input_ids"]
        b = tokenizer(new, add_special_tokens=False)["input_ids"]
        longest = max(len(a), len(b))
        total += 1.0 if longest == 0 else _common_prefix(a, b) / longest
    return 1.0 - total / len(base_answers)


def same_prefix_count(base_answers: list[str], new_answers: list[str], tokenizer: PreTrainedTokenizerBase,
                      tokens: int = 20) -> int:
    """How many answers share their first `tokens` tokens (or all of a shorter answer) with the base."""
    count = 0
    for base, new in zip(base_answers, new_answers, strict=True):
        a = tokenizer(base, add_special_tokens=False)["input_ids"][:tokens]
        b = tokenizer(new, add_special_tokens=False)["input_ids"][:tokens]
        count += a == b
    return count


def locality(model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase,
             conversations: Sequence[Sequence[Message]], reference_ids: Sequence[Sequence[int]],
             batch_size: int = 8) -> float:
    """The mean of `locality_scores`, in [0, 1] (1.0 with no prompts)."""
    scores = locality_scores(model, tokenizer, conversations, reference_ids, batch_size)
    return sum(scores) / len(scores) if scores else 1.0


@torch.no_grad()
def locality_scores(model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase,
                    conversations: Sequence[Sequence[Message]], reference_ids: Sequence[Sequence[int]],
                    batch_size: int = 8) -> list[float]:
    """Teacher-forced top-1 agreement with reference answers, one score per conversation, in order:
    1.0 = unchanged behaviour.

    Each conversation (ending with a user turn) is run once with its reference completion (the
    base model's own greedy token ids, `generation.generate_ids`) appended; at every completion
    position the model's argmax is compared with the reference token. The score is the mean over
    prompts of each prompt's share of agreeing positions, in [0, 1] (`locality`). This is EasyEdit's locality
    (zjunlp/EasyEdit, easyeditor/evaluate: compute_locality_quality) with the base model's own
    answer forced instead of a dataset answer, so the base model scores 1.0 by construction. Unlike
    a shared greedy prefix it does not saturate: one different token costs one position, not the
    rest of the answer.

    Raises ValueError if the two sequences differ in length. An empty completion scores 1.0.
    """
    if len(conversations) != len(reference_ids):
        raise ValueError("conversations and reference_ids differ in length")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scores = [1.0] * len(conversations)
    was_training = model.training
    model.eval()
    try:
        pairs = [(chat_ids(tokenizer, conv, add_generation_prompt=True), list(ref))
                 for conv, ref in zip(conversations, reference_ids, strict=True)]
        measured = [i for i, (_, ref) in enumerate(pairs) if ref]
        rows = [_Row(pairs[i][0] + pairs[i][1], [-100] * len(pairs[i][0]) + pairs[i][1], "anchor") for i in measured]
        for start in range(0, len(rows), batch_size):
            batch = _batch(rows[start:start + batch_size], pad_id)
            logits, targets = _reply_logits(model, batch)
            agree = (logits.argmax(-1) == targets).tolist()
            offset = 0
            for j, n in enumerate((batch["labels"][:, 1:] != -100).sum(1).tolist()):
                scores[measured[start + j]] = sum(agree[offset:offset + n]) / n
                offset += n
    finally:
        model.train(was_training)
    return scores


def has_preference(adapter_dir: Path) -> bool:
    """True if the version in `adapter_dir` has a preference adapter (served on every reply)."""
    return (Path(adapter_dir) / PREFERENCE_DIR / "adapter_config.json").is_file()


def answer_key(answer: str) -> str:
    """A short fingerprint of an answer: a fact counts as known only while its answer is unchanged."""
    return hashlib.sha1(answer.encode("utf-8")).hexdigest()[:12]


def evaluate_adapter(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_path: str, dtype: str,
                     training: TrainingSet, facts: list[Fact], adapter_dir: Path, cache_dir: Path,
                     scope: ScopeRouter | None = None, heldout_ratings: Sequence[Rated] = (),
                     active_dir: Path | None = None, max_len: int = 256) -> RoundMetrics:
    """Recall of new and old facts, paraphrase recall, locality, leak and drift, as served (dtype) without
    memory replies. With `scope` (routing by scope) a held-out prompt out of scope is answered without the
    knowledge adapter (by the base model, or with the preference adapter only when the version has one), so
    it counts as unchanged in `locality` and `leak` unless a preference adapter changes it; `locality_adapter`
    applies every adapter to all. Taught questions and their paraphrases are answered with both (in scope).
    With a preference adapter in `adapter_dir/preference`, `preference_auc` is its reward AUC on
    `heldout_ratings`, `baseline_preference_auc` that of the active version in `active_dir` (0.5 for none) and
    `preference_auc_se` the standard error of their difference (DeLong, `auc_difference_se`)."""
    from peft import PeftModel

    t0 = time.perf_counter()
    # The weights only: the rotary buffers stay float32, as in the served bfloat16 model (cast_weights).
    cast_weights(model, {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(dtype, torch.float32))
    heldout = load_general_prompts()["heldout"]
    heldout_convs = [training.conversation(p) for p in heldout]
    base_key = {"model": model_path, "prompts": heldout, "system": training.system_prompt, "dtype": dtype,
                "n": EVAL_MAX_NEW_TOKENS, "kind": "heldout_ids", "rotary": "float32"}
    # The base model's greedy token ids, as served (dtype): the reference of locality, and (decoded) of drift.
    base_ids = cached(cache_dir, base_key, lambda: generate_ids(model, tokenizer, heldout_convs, EVAL_MAX_NEW_TOKENS))
    base_answers = [a.strip() for a in tokenizer.batch_decode(base_ids, skip_special_tokens=True)]
    tuned = PeftModel.from_pretrained(model, str(adapter_dir))
    pref = has_preference(adapter_dir)
    if pref:
        tuned.load_adapter(str(adapter_dir / PREFERENCE_DIR), adapter_name=PREFERENCE_ADAPTER)
    cast_weights(tuned, next(model.parameters()).dtype)
    tuned.eval()
    paraphrases = training.paraphrases(facts)
    synthetic = training.synthetic_paraphrases(facts)
    convs = [training.conversation(q) for q in [f.question for f in facts] + [q for q, _ in paraphrases + synthetic]]
    longest = max([len(tokenizer(f.answer)["input_ids"]) for f in facts] or [16]) + 8
    with serving(tuned, knowledge=True, preference=pref):
        answers = generate_answers(tuned, tokenizer, convs, longest) if convs else []
        local = locality_scores(tuned, tokenizer, heldout_convs, base_ids)
    fact_answers = answers[:len(facts)]
    para_answers = answers[len(facts):len(facts) + len(paraphrases)]
    synthetic_answers = answers[len(facts) + len(paraphrases):]
    routed = [scope.in_scope(p) for p in heldout] if scope is not None else [True] * len(heldout)
    outside = [1.0] * len(heldout)
    if pref and not all(routed):
        with serving(tuned, knowledge=False, preference=True):
            outside = locality_scores(tuned, tokenizer, heldout_convs, base_ids)
    served = [s if r else o for s, o, r in zip(local, outside, routed, strict=True)]
    # Free-running answers only where the knowledge adapter is served: the others never get a taught answer
    # (a third of a round's time went to decoding answers that no user would get).
    sent = [i for i, r in enumerate(routed) if r]
    with serving(tuned, knowledge=True, preference=pref):
        new_answers = generate_answers(tuned, tokenizer, [heldout_convs[i] for i in sent], EVAL_MAX_NEW_TOKENS)
    sent_base = [base_answers[i] for i in sent]
    preference_auc = baseline_auc = auc_se = None
    if pref and heldout_ratings:
        labels = [r.label for r in heldout_ratings]
        active = None  # no active preference adapter: the base model's rewards (all 0)
        if active_dir is not None and has_preference(active_dir):
            tuned.load_adapter(str(active_dir / PREFERENCE_DIR), adapter_name="active_preference")
            cast_weights(tuned, next(model.parameters()).dtype)
            active = "active_preference"
        new_scores, active_scores = reward_scores(tuned, tokenizer, heldout_ratings,
                                                  adapters=[PREFERENCE_ADAPTER, active], max_len=max_len)
        preference_auc, baseline_auc = auc(new_scores, labels), auc(active_scores, labels)
        auc_se = auc_difference_se(new_scores, active_scores, labels)
    tuned.unload()

    def recall(selected: list[int]) -> float | None:
        if not selected:
            return None
        return exact_recall([fact_answers[i] for i in selected], [facts[i].answer for i in selected])

    taught = [normalize_answer(f.answer) for f in facts]
    leaks = sum(any(t and t in normalize_answer(a) for t in taught) for a in new_answers)
    per_fact = {str(f.item_id): [answer_key(f.answer), normalize_answer(a) == normalize_answer(f.answer)]
                for f, a in zip(facts, fact_answers, strict=True)}
    return RoundMetrics(
        new_facts=sum(f.new for f in facts),
        old_facts=sum(not f.new for f in facts),
        new_recall=recall([i for i, f in enumerate(facts) if f.new]),
        retention=recall([i for i, f in enumerate(facts) if not f.new]),
        paraphrase_recall=exact_recall(para_answers, [a for _, a in paraphrases]) if paraphrases else None,
        synthetic_recall=exact_recall(synthetic_answers, [a for _, a in synthetic]) if synthetic else None,
        locality=round(sum(served) / len(served), 4) if served else 1.0,
        locality_adapter=round(sum(local) / len(local), 4) if local else 1.0,
        routed=round(sum(routed) / len(routed), 4) if routed else 0.0,
        drift=round(drift(sent_base, new_answers, tokenizer), 4) if sent else None,
        heldout_unchanged=same_prefix_count(sent_base, new_answers, tokenizer) + len(heldout) - len(sent),
        leak=round(leaks / len(heldout), 4) if heldout else 0.0,
        heldout_total=len(heldout),
        facts=per_fact,
        preference_auc=None if preference_auc is None else round(preference_auc, 4),
        baseline_preference_auc=None if baseline_auc is None else round(baseline_auc, 4),
        preference_auc_se=None if auc_se is None else round(auc_se, 4),
        heldout_ratings=len(heldout_ratings) if pref else 0,
        eval_seconds=round(time.perf_counter() - t0, 2),
    )
