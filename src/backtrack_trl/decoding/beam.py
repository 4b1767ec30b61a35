"""Beam search (deterministic or stochastic) through ``model.generate``, behind the same interface as the engine.

Used by the beam-search baseline (N beams, batched over problems) and by the search's ``sampling="beam"`` option,
which draws each state's N outputs the way the released code does (``num_beams=N, num_return_sequences=N,
do_sample=True``) but stops rows with :class:`BacktrackStoppingCriteria`, takes log-probs from the generation
logits (``output_logits`` + ``beam_indices``; no second pass) and rolls back in token space.

Usage:

```python
engine = BeamEngine(model, TaskTokens.from_tokenizer(tokenizer), do_sample=False, max_new_tokens=64)
out = engine.run(prompt_ids, [Expansion(problem=0, state=State())], n=16)
```
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteriaList

from backtrack_trl.decoding.engine_io import EngineOutput, Expansion, ModelEngine, Sample
from backtrack_trl.decoding.processors import BacktrackBudgetLogitsProcessor, TabuLogitsProcessor
from backtrack_trl.decoding.sampling import _mix32
from backtrack_trl.decoding.stopping import BacktrackStoppingCriteria
from backtrack_trl.decoding.tokens import TaskTokens, stock_generate


# ``output_logits`` keeps one float32 (rows, vocabulary) tensor per generated step until ``generate`` returns: with
# Llama-3's 128k vocabulary, 64 steps and 1,024 beam rows (beam:n=16 x batch 64) that is 34 GB. A generate call gets
# at most as many rows as fit in this budget (4 GiB: 130 rows, i.e. 8 problems of 16 beams, at 64 steps and 128k ids).
LOGITS_BUDGET_BYTES = 4 << 30


def beam_rows_per_call(n: int, steps: int, vocab: int, budget: int = LOGITS_BUDGET_BYTES) -> int:
    """Rows (``n`` beams per expansion, a whole number of expansions, at least one) one ``generate`` call may hold
    so that its ``steps`` x rows x ``vocab`` float32 logits fit in ``budget`` bytes."""
    expansions = budget // max(1, steps * vocab * 4 * n)
    return n * max(1, expansions)


class MaskPastVocabLogitsProcessor(LogitsProcessor):
    """A logits processor that forbids the ids past the tokenizer (an embedding padded to a multiple of 64), for any
    ``generate`` call on such a model: ``LogitsProcessorList([MaskPastVocabLogitsProcessor(len(tokenizer))])``."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __call__(self, input_ids, scores):
        if scores.shape[-1] > self.vocab_size:
            scores[:, self.vocab_size :] = -float("inf")
        return scores


class BeamEngine(ModelEngine):
    """``run(prompts, expansions, n, keep_prefix)`` like :class:`SamplingEngine`, with N beams per expansion.

    Deterministic beam search batches every expansion with the same remaining length into ``generate`` calls of at
    most :func:`beam_rows_per_call` rows (``logits_budget_bytes``); stochastic beam search runs one call per
    expansion, seeded from (problem seed, round, state index), so its samples do not depend on which other problems
    share the batch.
    """

    def __init__(
        self,
        model,
        tokens: TaskTokens,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        do_sample: bool = True,
        max_backtracks: int | None = None,
        tabu_tokens: int = 0,
        logits_budget_bytes: int = LOGITS_BUDGET_BYTES,
    ):
        super().__init__(model, tokens, temperature, top_p, max_new_tokens, max_backtracks, tabu_tokens)
        self.logits_budget_bytes = logits_budget_bytes
        self.do_sample = do_sample and temperature > 0

    def _groups(self, expansions: list[Expansion], n: int) -> list[list[int]]:
        if self.do_sample:
            return [[i] for i in range(len(expansions))]
        groups: dict[int, list[int]] = {}
        for index, expansion in enumerate(expansions):
            groups.setdefault(len(expansion.state.tokens), []).append(index)
        vocab = max(self.tokens.vocab_size, getattr(self.model.config, "vocab_size", 0) or 0)
        chunks = []
        for length, group in groups.items():
            size = beam_rows_per_call(n, self.max_new_tokens - length, vocab, self.logits_budget_bytes) // n
            chunks += [group[i : i + size] for i in range(0, len(group), size)]
        return chunks

    @torch.no_grad()
    def run(self, prompts, expansions: list[Expansion], n: int, keep_prefix=None) -> EngineOutput:
        tokens = self.tokens
        device = self.device
        samples: list[Sample] = []
        forward_passes: dict[int, int] = {}
        generated: dict[int, int] = {}
        for group in self._groups(expansions, n):
            group = [i for i in group if self.room(expansions[i]) > 0]
            if not group:
                continue
            states = [expansions[i].state for i in group]
            contexts = [list(prompts[expansions[i].problem]) + list(expansions[i].state.tokens) for i in group]
            ids, mask = self.left_padded(contexts)
            width = ids.shape[1]
            processors = LogitsProcessorList([MaskPastVocabLogitsProcessor(tokens.vocab_size)])
            if self.max_backtracks is not None:
                used = torch.tensor([s.rollbacks for s in states], device=device).repeat_interleave(n)
                processors.append(
                    BacktrackBudgetLogitsProcessor(tokens.backtrack_id, self.max_backtracks, used=used, start=width)
                )
            if self.tabu_tokens and any(s.tabu for s in states):
                processors.append(TabuLogitsProcessor([list(s.tabu) for s in states], width, self.tabu_tokens))
            stopping = StoppingCriteriaList(
                [BacktrackStoppingCriteria(tokens.backtrack_id, list(tokens.eos_ids), tokens.goal_ids, tokens=tokens)]
            )
            remaining = self.room(expansions[group[0]])
            sampling_kwargs = {"do_sample": False}
            if self.do_sample:
                first = expansions[group[0]]
                seed = _mix32(torch.tensor([first.seed * 1000003 + first.round * 7919 + first.state.index]))
                torch.manual_seed(int(seed))
                sampling_kwargs = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
            output = stock_generate(
                self.model,
                input_ids=ids,
                attention_mask=mask,
                num_beams=n,
                num_return_sequences=n,
                max_new_tokens=remaining,
                pad_token_id=tokens.pad_id,
                eos_token_id=list(tokens.eos_ids),
                logits_processor=processors,
                stopping_criteria=stopping,
                return_dict_in_generate=True,
                output_logits=True,
                top_k=None,
                **sampling_kwargs,
            )
            sequences = output.sequences[:, width:]
            steps = sequences.shape[1]
            # Scores over the tokenizer's ids only (the padding ids of a padded embedding are not tokens).
            # (compute_transition_scores cannot take them: it reshapes by config.vocab_size.)
            step_logits = tuple(logits[:, : tokens.vocab_size] for logits in output.logits)
            logprobs = torch.zeros(sequences.shape, dtype=torch.float32, device=device)
            no_backtrack = torch.zeros(sequences.shape, dtype=torch.float32, device=device)
            beam_rows = output.beam_indices.clamp(min=0)
            for step in range(min(steps, len(step_logits), beam_rows.shape[1])):
                logits = step_logits[step][beam_rows[:, step]].float()
                logprobs[:, step] = torch.log_softmax(logits, -1).gather(1, sequences[:, step : step + 1]).squeeze(1)
                others = logits.clone()
                others[:, tokens.backtrack_id] = -float("inf")
                no_backtrack[:, step] = torch.logsumexp(others, -1) - torch.logsumexp(logits, -1)
            ended = output.beam_indices[:, : logprobs.shape[1]] < 0  # past a beam's end (as compute_transition_scores)
            logprobs[:, : ended.shape[1]][ended] = 0.0
            for row in range(sequences.shape[0]):
                expansion_index = group[row // n]
                state = expansions[expansion_index].state
                new, end = self._trim(sequences[row].tolist())
                sample = Sample.after(
                    state,
                    expansion_index,
                    row % n,
                    new,
                    logprobs[row, : len(new)].tolist(),
                    no_backtrack[row, : len(new)].tolist(),
                    end,
                )
                if keep_prefix is not None:
                    sample.kv_keep = keep_prefix(sample)
                samples.append(sample)
            for index in group:
                problem = expansions[index].problem
                forward_passes[problem] = forward_passes.get(problem, 0) + steps
                generated[problem] = generated.get(problem, 0) + steps * n
        return EngineOutput(samples, forward_passes, generated)

    def _trim(self, new: list[int]) -> tuple[list[int], str]:
        """Cut a generated row at its first stop (the stop token kept) and name the reason."""
        goal = list(self.tokens.goal_ids)
        for index, token in enumerate(new):
            if token == self.tokens.backtrack_id:
                return new[: index + 1], "backtrack"
            if token in self.tokens.eos_ids:
                return new[: index + 1], "eos"
            if goal and index + 1 >= len(goal) and new[index + 1 - len(goal) : index + 1] == goal:
                return new[: index + 1], "goal"
            if token in self.tokens.goal_end_ids and self.tokens.ends_with_goal(new[: index + 1]):
                return new[: index + 1], "goal"
        while new and new[-1] == self.tokens.pad_id:
            new = new[:-1]
        return new, "length"
