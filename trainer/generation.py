"""Greedy, batched answers from a model: used for the anchor rows and by the evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from kaizen.base_model import chat_text, generate

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from kaizen.prompts import Message


@torch.no_grad()
def generate_ids(model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase,
                 conversations: Sequence[Sequence[Message]], max_new_tokens: int,
                 batch_size: int = 8) -> list[list[int]]:
    """The greedy completion token ids of each conversation (chat messages ending with a user turn),
    up to and including the end-of-turn token when the model stopped by itself.

    Batched with left padding: on two CPU cores 8 prompts in one batch decode about 3-4x faster
    than one by one, and greedy outputs match the unbatched ones on the embedded model.
    """
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    completions: list[list[int]] = []
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    try:
        for start in range(0, len(conversations), batch_size):
            chunk = conversations[start:start + batch_size]
            texts = [chat_text(tokenizer, c) for c in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = generate(model, **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad,
                           eos_token_id=eos)
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                if eos in row:
                    row = row[:row.index(eos) + 1]  # what follows the end of turn is padding
                completions.append(row)
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return completions


def generate_answers(model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase,
                     conversations: Sequence[Sequence[Message]], max_new_tokens: int,
                     batch_size: int = 8) -> list[str]:
    """Greedy answers to each conversation, as stripped text (see generate_ids)."""
    ids = generate_ids(model, tokenizer, conversations, max_new_tokens, batch_size)
    if not ids:  # transformers 5's batch_decode([]) returns [""], one answer too many
        return []
    return [a.strip() for a in tokenizer.batch_decode(ids, skip_special_tokens=True)]
