"""A scripted causal LM, the decoding tests' double (kept out of the package): its next-token distribution follows
a planted policy over lines.

The policy maps (prompt, completed response lines) to a distribution over the next *line*: a step such as
``"5+3=8"`` (the model writes it followed by a newline), ``"Goal Reached!"`` or ``"<backtrack>"`` (after either the
model writes EOS). Within a line the model spells the chosen line token by token, so a search over its outputs
has known answers. The model stores the token ids themselves as its KV cache (one ``DynamicCache`` layer) and
rebuilds each row's history from the cache slots and the attention mask, so any mistake in cache surgery,
masking or ``position_ids`` shows up as a wrong history (and ``position_ids`` that disagree with the mask raise).

Usage:

```python
from _scripted_lm import ScriptedLM  # tests/ on sys.path, as pytest sets it
from backtrack_trl.tasks.tokenizer import build_countdown_tokenizer

def policy(prompt, lines):
    if not lines:
        return {"5+3=8": 0.6, "5-3=2": 0.4}
    return {"Goal Reached!": 1.0} if lines[-1] == "5+3=8" else {"<backtrack>": 1.0}

tokenizer = build_countdown_tokenizer()
model = ScriptedLM.build(tokenizer, policy)
out = model.generate(**tokenizer(["###Question: numbers [5, 3]->target 8\\n###Response:\\n"], return_tensors="pt"))
```
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from transformers import DynamicCache, GenerationConfig, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from backtrack_trl.tasks.base import BACKTRACK_TOKEN, GOAL_MARKER, RESPONSE_HEADER


TERMINAL_LINES = (GOAL_MARKER, BACKTRACK_TOKEN)
Policy = Callable[[str, tuple[str, ...]], dict[str, float]]


class ScriptedConfig(PretrainedConfig):
    model_type = "backtrack_scripted"

    def __init__(self, vocab_size: int = 128, num_hidden_layers: int = 1, **kwargs):
        self.vocab_size = vocab_size
        self.num_hidden_layers = num_hidden_layers
        self.hidden_size = 1
        self.num_attention_heads = 1
        super().__init__(**kwargs)


class ScriptedLM(PreTrainedModel, GenerationMixin):
    """See the module docstring. Build with :meth:`build` (needs the tokenizer to spell lines)."""

    config_class = ScriptedConfig
    _supports_cache_class = True
    _is_stateful = False

    def __init__(self, config: ScriptedConfig, tokenizer=None, policy: Policy | None = None):
        super().__init__(config)
        # One parameter so `.device`, `.parameters()` and `.eval()` behave like a real model.
        self.dummy = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        self.embed = torch.nn.Embedding(config.vocab_size, 1)
        self.tokenizer = tokenizer
        self.policy = policy
        self.calls = 0
        self._memo: dict[tuple[int, ...], torch.Tensor] = {}
        if tokenizer is not None:
            self._pieces = [tokenizer.decode([i], skip_special_tokens=False) for i in range(len(tokenizer))]
            self._skip = {tokenizer.bos_token_id, tokenizer.pad_token_id}
            self._newline = {i for i, piece in enumerate(self._pieces) if piece.endswith("\n")}
            self._eos = tokenizer.eos_token_id
        self.post_init()

    @classmethod
    def build(cls, tokenizer, policy: Policy) -> ScriptedLM:
        config = ScriptedConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = cls(config, tokenizer=tokenizer, policy=policy)
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        return model.eval()

    def get_input_embeddings(self):
        return self.embed

    def _line_tokens(self, line: str) -> tuple[int, ...]:
        text = line if line in TERMINAL_LINES else line + "\n"
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def next_distribution(self, history: tuple[int, ...]) -> torch.Tensor:
        """Log-probabilities of the next token after ``history`` (token ids, specials included)."""
        cached = self._memo.get(history)
        if cached is not None:
            return cached
        vocab = self.config.vocab_size
        probs = torch.zeros(vocab, dtype=torch.float64)
        text = "".join(self._pieces[i] for i in history if i not in self._skip)
        if RESPONSE_HEADER not in text or (history and history[-1] == self._eos):
            probs[self._eos] = 1.0
        else:
            prompt, _, _ = text.partition(RESPONSE_HEADER)
            prompt += RESPONSE_HEADER
            response_ids = []
            seen_header = False
            running = ""
            for i in history:  # the response tokens: everything after the header
                if i in self._skip:
                    continue
                if seen_header:
                    response_ids.append(i)
                else:
                    running += self._pieces[i]
                    seen_header = running.endswith(RESPONSE_HEADER)
            last_break = max((k for k, i in enumerate(response_ids) if i in self._newline), default=-1)
            completed = "".join(self._pieces[i] for i in response_ids[: last_break + 1])
            partial = tuple(response_ids[last_break + 1 :])
            lines = tuple(completed.split("\n")[:-1]) if completed else ()
            options = self.policy(prompt, lines) if self.policy is not None else {}
            for line, weight in options.items():
                spelled = self._line_tokens(line)
                if weight <= 0:
                    continue
                if spelled[: len(partial)] == partial and len(spelled) > len(partial):
                    probs[spelled[len(partial)]] += weight
                elif spelled == partial and line in TERMINAL_LINES:
                    probs[self._eos] += weight
            if probs.sum() <= 0:
                probs[self._eos] = 1.0
        probs = probs / probs.sum()
        # Impossible tokens get a finite, negligible log-probability so log-softmax stays finite.
        logits = torch.where(probs > 0, probs.log(), torch.full_like(probs, -1e4)).float()
        self._memo[history] = logits
        return logits

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
        return_dict: bool = True,
        **kwargs,
    ):
        self.calls += 1
        batch, length = input_ids.shape
        if past_key_values is None and use_cache:
            past_key_values = DynamicCache()
        states = input_ids.to(torch.float32)[:, None, :, None]
        if past_key_values is not None:
            keys, _ = past_key_values.update(states, states, 0)
        else:
            keys = states
        all_ids = keys[:, 0, :, 0].round().long()
        total = all_ids.shape[1]
        mask = torch.ones(batch, total, dtype=torch.long) if attention_mask is None else attention_mask.long().cpu()
        if mask.shape[1] != total:
            raise ValueError(f"attention_mask has {mask.shape[1]} columns but the cache + input hold {total} slots.")
        keep = length if not logits_to_keep else min(logits_to_keep, length)
        logits = torch.full((batch, length, self.config.vocab_size), -1e4)
        for row in range(batch):
            valid = mask[row].nonzero().flatten().tolist()
            for query in range(length - keep, length):
                slot = total - length + query
                if not mask[row, slot]:
                    continue
                history = tuple(all_ids[row, [s for s in valid if s <= slot]].tolist())
                if position_ids is not None:
                    expected = len(history) - 1
                    got = int(position_ids[row, query])
                    if got != expected:
                        raise ValueError(f"position_ids[{row}, {query}] = {got}, expected {expected} from the mask.")
                logits[row, query] = self.next_distribution(history)
        logits = logits[:, length - keep :] if logits_to_keep else logits
        return CausalLMOutputWithPast(logits=logits.to(self.dummy.device), past_key_values=past_key_values)


def line_policy(table: dict[tuple[str, ...], dict[str, float]], default: dict[str, float] | None = None) -> Policy:
    """A policy from a table ``{completed lines: {next line: probability}}`` shared by every prompt."""
    default = default if default is not None else {GOAL_MARKER: 1.0}

    def policy(prompt: str, lines: tuple[str, ...]) -> dict[str, float]:
        return table.get(tuple(lines), default)

    return policy


def uniform_logprob(k: int) -> float:
    return -math.log(k)
