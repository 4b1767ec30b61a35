"""Shared plumbing of every decoder: inputs (problems or prompts), validation, batching, seeds, result building.

Usage (subclasses implement ``_solve_batch``):

```python
decoder = SomeDecoder(model, tokenizer, batch_size=16, seed=0)
results = decoder.solve([Problem((3, 5, 2), 16), "###Question: numbers [1, 2]->target 3\\n###Response:\\n"])
```
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Iterable, Sequence

import torch

from backtrack_trl.decoding.results import SearchResult
from backtrack_trl.decoding.selection import (
    RawSample,
    aggregate_samples,
    backtrack_value,
    check_rule,
    fallback_index,
    mean_logprob,
    select_index,
)
from backtrack_trl.decoding.tokens import TaskTokens
from backtrack_trl.tasks import get_task


def to_prompt(item, validate: bool = True, task=None) -> str:
    """A prompt string from a task problem, a mapping with ``prompt`` or the task's problem columns, or a prompt.

    ``task`` is a :class:`~backtrack_trl.tasks.Task` or its name (default Countdown); with ``validate`` a prompt
    string must parse as one of its problems.
    """
    task = get_task(task or "countdown")
    if isinstance(item, dict):
        if "prompt" in item and item["prompt"] is not None:
            item = item["prompt"]
        elif all(column in item for column in task.problem_columns):
            return task.format_prompt(task.problem_from_row(item))
        else:
            raise ValueError(
                f"A problem mapping needs 'prompt' or {list(task.problem_columns)}; got keys {sorted(item)}."
            )
    if not isinstance(item, str):
        try:
            return task.format_prompt(item)
        except (AttributeError, TypeError):
            raise TypeError(
                f"Expected a {task.name} problem, a mapping or a prompt string, got {type(item).__name__}."
            ) from None
    if validate:
        task.parse_prompt(item)  # ValueError naming the prompt and the expected format
    return item


def _integer_in(low: int, high: int, none_means: str | None = None):
    """A test and its wording for an integer option in ``[low, high]`` (a bool is not an integer here); with
    ``none_means``, None is accepted too (it means ``none_means``)."""
    words = f"an integer in [{low}, {high}]"
    if none_means is not None:
        words = f"None ({none_means}) or {words}"

    def ok(value) -> bool:
        if value is None:
            return none_means is not None
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    return ok, words


# The options the decoders share: keyword -> (name in the error, test, what the option accepts). One table and one
# check (:func:`check_options`), so every decoder words a bad value the same way: "<option> must be <what it
# accepts>, got <value>." The accepted values are the fix.
_OPTIONS = {
    "n": ("n (samples per state, N)", *_integer_in(1, 4096)),
    "beams": ("n (beams)", *_integer_in(1, 4096)),
    "b": ("b (backtracking rounds)", *_integer_in(0, 64)),
    "max_new_tokens": ("max_new_tokens", *_integer_in(1, 1 << 16)),
    "max_length": ("max_length", *_integer_in(2, 1 << 16)),
    "tabu_tokens": ("tabu_tokens", *_integer_in(1, 1 << 16)),
    "max_backtracks": ("max_backtracks", *_integer_in(0, 1 << 16, none_means="no limit")),
    "batch_size": ("batch_size", *_integer_in(1, 1 << 20)),
    "temperature": ("temperature", lambda v: v >= 0, ">= 0"),
    # A decoder that always samples (the released one) has no greedy mode.
    "sampling_temperature": ("temperature", lambda v: v > 0, "> 0 (the released decoder samples)"),
    "top_p": ("top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    "sampling": ("sampling", lambda v: v in ("independent", "beam"), "'independent' or 'beam'"),
    "search_method": (
        "search_method",
        lambda v: v in ("self_backtracking", "best_of_n", "greedy"),
        "'self_backtracking', 'best_of_n' or 'greedy'",
    ),
}


def check_options(**options) -> None:
    """Raise a ValueError naming the first bad option among ``options`` and what it accepts.

    Keywords are those of ``_OPTIONS`` (``beams`` is the beam decoder's ``n``, ``sampling_temperature`` the temperature
    of a decoder that always samples) plus ``selection`` / ``duplicates``, checked together by
    :func:`~backtrack_trl.decoding.selection.check_rule` (which names the rules).
    """
    for key, value in options.items():
        if key in ("selection", "duplicates"):
            continue
        name, ok, accepts = _OPTIONS[key]
        if not ok(value):
            raise ValueError(f"{name} must be {accepts}, got {value!r}.")
    if "selection" in options or "duplicates" in options:
        check_rule(options.get("selection", "likelihood"), options.get("duplicates", "mean"))


def _is_generation_client(model) -> bool:
    from backtrack_trl.decoding.vllm_client import VLLMClient

    return isinstance(model, VLLMClient)


class Decoder(abc.ABC):
    """Base class: turns problems into prompts, batches them, seeds them, and returns :class:`SearchResult` s.

    Args:
        model: a causal LM (e.g. ``AutoModelForCausalLM.from_pretrained(path)``), put in eval mode.
        tokenizer: its tokenizer; must have ``<backtrack>`` and a vocabulary the model covers.
        batch_size: problems decoded together (None: the decoder's default).
        seed: base seed; problem ``i`` of a ``solve`` call gets ``seed + i`` unless ``seeds`` are passed.
        validate_prompts: reject prompt strings that are not in the task's format.
        task: the :class:`~backtrack_trl.tasks.Task` (or its registered name) the prompts belong to; default Countdown.
    """

    method = "base"
    default_batch_size = 16

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int | None = None,
        seed: int = 0,
        validate_prompts: bool = True,
        task="countdown",
    ):
        self.model = model
        self.tokenizer = tokenizer
        # A vLLM client has no embedding matrix to check the tokenizer against (the server checks its own), and no
        # training mode to leave.
        client = _is_generation_client(model)
        self.tokens = TaskTokens.from_tokenizer(tokenizer, None if client else model)
        self.batch_size = batch_size or self.default_batch_size
        check_options(batch_size=self.batch_size)
        self.seed = int(seed)
        self.validate_prompts = validate_prompts
        self.task = get_task(task)
        if not client:
            model.eval()

    # -- text <-> ids ----------------------------------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def decode_response(self, ids: Iterable[int]) -> str:
        """Response text: bos/eos/pad dropped, ``<backtrack>`` kept."""
        kept = [i for i in ids if i not in self.tokens.strip_ids]
        return self.tokenizer.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def raw_sample(self, tokens, logprobs, no_backtrack, end, round_index=0) -> RawSample:
        return RawSample(
            text=self.decode_response(tokens),
            end_reason=end,
            mean_logprob=mean_logprob(logprobs),
            backtrack_value=backtrack_value(tokens, no_backtrack, self.tokens.is_newline),
            num_tokens=len(tokens),
            round=round_index,
            token_ids=tuple(tokens),
        )

    # -- solving ---------------------------------------------------------------------------------------------------
    def solve(
        self,
        problems: Sequence,
        seeds: Sequence[int] | None = None,
        progress: bool = False,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list:
        """Decode every problem; returns one :class:`SearchResult` per problem, in order.

        ``token_ids`` (optional) are the prompts already tokenized (BOS included), used as given instead of
        re-tokenizing the prompt texts (e.g. by ``generate``, whose inputs are ids)."""
        problems = list(problems)
        prompts = [to_prompt(item, self.validate_prompts, self.task) for item in problems]
        if seeds is None:
            seeds = [self.seed + i for i in range(len(prompts))]
        if len(seeds) != len(prompts):
            raise ValueError(f"Got {len(seeds)} seeds for {len(prompts)} problems.")
        results = []
        batches = range(0, len(prompts), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=math.ceil(len(prompts) / self.batch_size), desc=self.method)
        for start in batches:
            chunk = prompts[start : start + self.batch_size]
            if token_ids is not None:
                ids = [list(row) for row in token_ids[start : start + self.batch_size]]
            else:
                ids = [self.encode_prompt(prompt) for prompt in chunk]
            began = time.perf_counter()
            batch_results = self._solve_batch(chunk, ids, list(seeds[start : start + self.batch_size]))
            elapsed = time.perf_counter() - began
            for result in batch_results:
                result.method = result.method or self.method
                result.wall_time = elapsed / len(chunk)
            results.extend(batch_results)
        return results

    __call__ = solve

    @abc.abstractmethod
    def _solve_batch(self, prompts: list[str], prompt_ids: list[list[int]], seeds: list[int]) -> list[SearchResult]:
        """The one method a decoder implements: one :class:`SearchResult` per prompt of the batch."""

    def build_result(
        self,
        prompt: str,
        samples: list[RawSample],
        rule: str = "likelihood",
        duplicates: str = "mean",
        backtrack_weight: float = 1.0,
        choose_first: bool = False,
        states: list[dict] | None = None,
        **counters,
    ) -> SearchResult:
        """Merge duplicates, score, and choose (the best goal-reaching candidate, else the fallback); with the
        search's ``states``, the result's ``tree`` links every sample to its state and candidate."""
        candidates = aggregate_samples(samples, rule, duplicates, backtrack_weight)
        if choose_first:
            index = 0 if candidates else None
        else:
            index = select_index(candidates)
            if index is None:
                index = fallback_index(candidates)
        completion = candidates[index].text if index is not None else ""
        completion_ids = None
        if index is not None:
            first = next(sample for sample in samples if sample.text == candidates[index].text)
            completion_ids = [i for i in first.token_ids if i not in self.tokens.strip_ids]
        tree = None
        if states is not None:
            index_of = {candidate.text: i for i, candidate in enumerate(candidates)}
            tree = {"states": states, "samples": [[s.state, index_of[s.text], s.rolled_to] for s in samples]}
        return SearchResult(
            prompt=prompt,
            completion=completion,
            candidates=candidates,
            chosen_index=index,
            completion_ids=completion_ids,
            tree=tree,
            **counters,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device
