"""Self-contained fixtures for the training tests: tiny tokenizers, contract rows, a tiny model, a Hub-layout dataset.

Kept independent of the data helpers' modules on purpose, so the collator is tested against tokenizers whose
behaviour the tests control: a character-level tokenizer (optionally with BOS / a post-processor EOS) and a BPE
tokenizer trained here with NO pre-tokenizer, so its merges cross line and segment edges ("\\n###Response:\\n4",
"\\n10", "2\\nGoal Reached!").
"""

from __future__ import annotations

import os
import random
import string
from pathlib import Path

import datasets
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from backtrack_trl.data.builder import backtrack_row, optimal_row  # noqa: F401 (the row contract, re-exported to the tests)
from backtrack_trl.data.hub_layout import content_fingerprint
from backtrack_trl.tasks.countdown.format import (
    Problem,
    Step,
    format_backtrack_response,
    format_prompt,
    format_response,
)


SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<backtrack>"]
PROBLEM = Problem((3, 5, 7), 22)
STEPS = [Step(7, "*", 3, 21), Step(21, "+", 5, 26)]  # not a real solution; the collator does not care


def _wrap(backend: Tokenizer, bos: bool, specials: list[str] = SPECIALS, **kwargs) -> PreTrainedTokenizerFast:
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>" if bos else None,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=["<backtrack>"] if "<backtrack>" in specials else [],
        clean_up_tokenization_spaces=False,
        **kwargs,
    )


def char_tokenizer(bos: bool = False, eos_suffix: bool = False, backtrack: bool = True) -> PreTrainedTokenizerFast:
    """One token per printable character. No BOS by default; ``eos_suffix`` makes ``tokenizer(text)`` end in EOS."""
    chars = list(dict.fromkeys(string.printable))
    specials = SPECIALS if backtrack else SPECIALS[:-1]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    template = ("<s> " if bos else "") + "$A" + (" </s>" if eos_suffix else "")
    backend.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])]
    )
    return _wrap(backend, bos, specials)


def countdown_corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        nums = [rng.randint(1, 60) for _ in range(3)]
        a, b = sorted(nums[:2], reverse=True)
        first = Step(a, "+", b, a + b)
        c = nums[2]
        second = Step(a + b, "-", c, a + b - c) if a + b >= c else Step(c, "-", a + b, c - a - b)
        problem = Problem(tuple(nums), second.result)
        texts.append(format_prompt(problem) + format_response([first, second]))
        texts.append(format_prompt(problem) + format_backtrack_response([first], Step(a, "*", b, a * b + 1)))
    return texts


def bpe_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-pair tokenizer trained on Countdown text, BOS via its post-processor, no pre-tokenizer (merges cross
    newlines and the prompt/response edge)."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    backend.train_from_iterator(countdown_corpus(), trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    return _wrap(backend, bos=True)


def tiny_llama(tokenizer, hidden_size: int = 64, layers: int = 2, seed: int = 0, tie: bool = False):
    import torch

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(config)


def sample_rows(n_problems: int, seed: int = 0) -> list[dict]:
    """One optimal and one backtrack row per problem (3 numbers, two steps), like the contract's datasets."""
    rng = random.Random(seed)
    rows = []
    kinds = ["exploration", "computational", "rule_violation"]
    for i in range(n_problems):
        nums = [rng.randint(1, 20) for _ in range(3)]
        a, b = sorted(nums[:2], reverse=True)
        first = Step(a, "+", b, a + b)
        c = nums[2]
        second = Step(a + b, "*", c, (a + b) * c)
        problem = Problem(tuple(nums), second.result)
        rows.append(optimal_row(problem, [first, second]))
        kind = kinds[i % 3]
        if kind == "exploration":
            wrong = Step(a + b, "+", c, a + b + c)
        elif kind == "computational":
            wrong = Step(a + b, "*", c, (a + b) * c + 1)
        else:
            wrong = Step(a + b, "*", 99, (a + b) * 99)
        rows.append(backtrack_row(problem, [first], wrong, kind))
    return rows


def write_hub_folder(folder: str, splits: dict[str, list[dict]]) -> str:
    """Write ``splits`` in the layout push_to_hub produces (data/<split>-00000-of-00001.parquet + README configs)."""
    os.makedirs(os.path.join(folder, "data"), exist_ok=True)
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split, rows in splits.items():
        datasets.Dataset.from_list(rows).to_parquet(os.path.join(folder, "data", f"{split}-00000-of-00001.parquet"))
        lines += [f"  - split: {split}", f"    path: data/{split}-*"]
    # datasets caches a local folder by its name and card YAML only: without the content's fingerprint, two tests'
    # folders named "data" with the same splits would load whichever was cached first (as write_hub_dataset does).
    lines.append(f"  description: backtrack-trl content fingerprint {content_fingerprint(Path(folder, 'data'))}")
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write("\n".join(lines + ["---", "", "Tiny test dataset.", ""]))
    return folder


def save_tiny_model(folder: str, tokenizer, **kwargs) -> str:
    """Save a tiny Llama and its tokenizer with save_pretrained (what recipes/init_model.py produces)."""
    model = tiny_llama(tokenizer, **kwargs)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
