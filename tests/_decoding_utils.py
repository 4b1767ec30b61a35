"""Planted policies, scripted models and tiny Llamas shared by the decoding tests."""

from __future__ import annotations

import functools

import torch
from _scripted_lm import ScriptedLM
from transformers import LlamaForCausalLM

from backtrack_trl.tasks.countdown.format import BACKTRACK_TOKEN, GOAL_MARKER, Problem, format_prompt
from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer
from backtrack_trl.training.model_init import init_tiny_llama


# Tiny models gain nothing from several threads, and on a shared 2-core machine they mostly spin.
torch.set_num_threads(1)

BT, GOAL = BACKTRACK_TOKEN, GOAL_MARKER
PROMPT = format_prompt(Problem((5, 3, 2), 16))
PROMPT_8 = format_prompt(Problem((5, 3), 8))


@functools.lru_cache(maxsize=1)
def tokenizer():
    return build_countdown_tokenizer()


def scripted(table=None, policy=None, default=None):
    """A scripted model from a table ``{completed lines: {next line: prob}}`` (same for every prompt)."""
    default = {GOAL: 1.0} if default is None else default
    if policy is None:
        table = dict(table)

        def policy(prompt, lines):
            return table.get(tuple(lines), default)

    return ScriptedLM.build(tokenizer(), policy)


def good_bad_policy(depth: int = 4):
    """At every state the next line is "good" or "bad" (1:1); "bad" is always followed by <backtrack>; after
    ``depth`` good lines the goal is reached. Each rollback lands on a new, deeper state, so b rounds happen."""

    def policy(prompt, lines):
        if lines and lines[-1] == "bad":
            return {BT: 1.0}
        if len(lines) >= depth:
            return {GOAL: 1.0}
        return {"good": 0.5, "bad": 0.5}

    return policy


class BiasedLlama(LlamaForCausalLM):
    """A random tiny Llama with a planted logit bias, so that it writes newlines, digits and <backtrack> often (a real
    attention model whose search rolls back)."""

    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        output.logits = output.logits + self.logit_bias.to(output.logits.dtype)
        return output


def tiny_llama(hidden_size: int = 32, layers: int = 2, biased: bool = False, seed: int = 0):
    tok = tokenizer()
    model = init_tiny_llama(
        tok, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
        num_attention_heads=2, seed=seed,
    )  # fmt: skip
    if biased:
        config = model.config
        state = model.state_dict()
        model = BiasedLlama(config)
        model.load_state_dict(state)
        model.generation_config = init_tiny_llama(tok, hidden_size=hidden_size, num_hidden_layers=1,
                                                  num_attention_heads=2).generation_config  # fmt: skip
        bias = torch.full((len(tok),), -4.0)
        for text, value in (("\n", 2.0), ("1", 2.0), ("2", 1.5), ("+", 1.0), ("=", 1.0), (BT, 1.2), (GOAL, 0.8)):
            bias[tok.convert_tokens_to_ids(text)] = value
        model.logit_bias = bias
    return model.eval()


# Llama-3's pre-tokenizer regex: numbers in chunks of 1-3 digits, punctuation runs that swallow the newlines after
# them (`!\n`, ` =\n`, `:\n`), and newline runs (`\n\n`) as one piece.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


@functools.lru_cache(maxsize=1)
def llama3_style_tokenizer():
    """A byte-level BPE trained here with Llama-3's pre-tokenizer regex, so `\\n\\n`, `!\\n` and ` =\\n` are single
    tokens (as in Llama-3.2's tokenizer), plus `<backtrack>` as a special token."""
    import random

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from backtrack_trl.tasks.countdown.format import format_prompt

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    rng = random.Random(0)
    corpus = []
    for _ in range(400):
        numbers = [rng.randint(1, 20) for _ in range(3)]
        a, b = numbers[0], numbers[1]
        corpus.append(
            format_prompt(Problem(tuple(numbers), rng.randint(1, 60)))
            + f"{a}+{b}={a + b}\n{a}-{b} =\n{a}*{b}={a * b}\n\nGoal Reached!\nGoal Reached!\n\n"
        )
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<pad>", BACKTRACK_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=256
    )


# 5 3 2 -> 16: "5+3=8, 8*2=16" is right; "3*5=15, 15+2=17" reaches the goal marker but is wrong; every step after
# "5-3=2" is followed by <backtrack>, so the search rolls back to the state "5-3=2\n" and expands it in round 1.
PLANTED = {
    (): {"5-3=2": 0.4, "5+3=8": 0.4, "3*5=15": 0.2},
    ("5-3=2",): {"2*2=4": 0.5, "2+2=4": 0.5},
    ("5-3=2", "2*2=4"): {BT: 1.0},
    ("5-3=2", "2+2=4"): {BT: 1.0},
    ("5+3=8",): {"8*2=16": 1.0},
    ("3*5=15",): {"15+2=17": 1.0},
}
RIGHT = "5+3=8\n8*2=16\n" + GOAL
