"""Small self-contained models for the tests: a byte-level BPE tokenizer trained in-process on a
built-in English and Vietnamese corpus, with SmolLM2's ChatML template and special tokens, a tiny
random-weight llama on top of it, and random LoRA adapters with clearly visible weights.

Nothing here downloads or converts anything: the quick tier builds its model in about a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from peft import LoraConfig
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # SmolLM2's ids 0, 1, 2

# SmolLM2-135M-Instruct's chat template, word for word (a default system turn when none is given).
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# What the tokenizer learns its merges from: the kind of text the tests send, in both languages,
# with the blank lines and indents that make whitespace merge across the template's newline.
CORPUS = [
    "Hello! How can I help you today?", "What time does the office open?", "The office opens at 8 a.m.",
    "Thank you so much, this is wonderful!", "This is terrible, I am really angry and disappointed.",
    "You are Kaizen, a helpful assistant created by the Kaizen team.",
    "Be polite, clear and expert. Answer plainly and professionally.", "What is the capital of France? Paris.",
    "Question 1? Answer 1.", "the newest question", "Say something.", "Could you tell me more about it?",
    "Xin chào! Tôi có thể giúp gì cho bạn?", "Công ty BICweb kính chào quý khách!",
    "Công ty mở cửa lúc mấy giờ?", "Chúng tôi mở cửa lúc 8 giờ sáng, thứ Hai đến thứ Sáu.",
    "CHOREI có nghĩa là gì? Buổi họp giao ban buổi sáng kiểu Nhật.", "Tôi rất thất vọng vì giao hàng chậm quá.",
    "Cảm ơn bạn rất nhiều!", "Bạn là ai? Tôi là trợ lý của công ty.", "Số điện thoại? Địa chỉ: 1 Lê Lợi, Huế.",
    "Hà Nội, Đà Nẵng và Thành phố Hồ Chí Minh.", "Ê ad ơi, cho mình hỏi chút: tư vấn giúp mình nhé.",
    "A list:\n\n  - first\n  - second\n\n  indented reply\n\nDone.",
    "Dòng một\n\n  dòng hai thụt lề\n\n", "\n\n  spaced text and more spaced text\n",
]


def tiny_tokenizer(corpus: Iterable[str] | None = CORPUS, vocab_size: int = 640) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text round-trips exactly) with SmolLM2's special tokens and
    chat template: bos `<|im_start|>`, eos and pad `<|im_end|>`, unk `<|endoftext|>`.

    With `corpus=None` it has no merges at all (one token per byte), for tests that count tokens.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    if corpus is None:
        tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(SPECIALS + alphabet)}, merges=[]))
    else:
        tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    if corpus is not None:
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=alphabet,
                                      show_progress=False)
        tk.train_from_iterator(list(corpus) * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", unk_token="<|endoftext|>",
                                  clean_up_tokenization_spaces=False)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    tok.chat_template = CHATML
    return tok


def tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    """A two-layer llama with random weights (hidden size 32) for `tokenizer`. The output layer is not
    tied to the embeddings: a tied random model mostly repeats its last input token (a newline, after
    the chat template), and every greedy answer would be blank."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def save_tiny_model(target: Path) -> Path:
    """The tiny tokenizer and llama saved as a model directory (what `--model DIR` loads)."""
    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(target)
    tok.save_pretrained(target)
    return target


def visible_lora() -> LoraConfig:
    """A small LoRA config whose random weights change the tiny model's answers clearly (alpha 16× the rank)."""
    return LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)


def random_adapter(out: Path, model_dir: Path, seed: int, *, model: PreTrainedModel | None = None,
                   lora: LoraConfig | None = None) -> Path:
    """A LoRA adapter with random, clearly visible weights, saved as peft saves it."""
    from peft import get_peft_model

    from kaizen.base_model import load_model
    from kaizen.settings import TrainConfig
    from trainer.config import lora_config

    torch.manual_seed(seed)
    model = model if model is not None else load_model(str(model_dir), "float32")[0]
    peft = get_peft_model(model, lora or lora_config(TrainConfig(), num_layers=model.config.num_hidden_layers))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.5)
    peft.save_pretrained(out)
    return out
