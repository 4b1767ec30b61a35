"""GRPO rollouts drawn by our decoders: TRL 1.16's experimental ``rollout_func(prompts, trainer)`` for
``GRPOTrainer`` (``recipes/grpo.py --rollout engine|search``; ``trl``, the default, keeps TRL's own ``generate``).

TRL hands the function this process's slice of the generation batch: every prompt ``num_generations`` times in a row
(its ``RepeatSampler``); the function returns one completion per entry of ``prompts``, in order. Prompts are
tokenized as TRL tokenizes a plain-text prompt (``processing_class(text=prompts)``), so the trainer's forward pass
sees the ids the completions were sampled after.

- ``engine``: our batched cached :class:`~backtrack_trl.decoding.engine.SamplingEngine`, one expansion per distinct
  prompt, ``n`` = its repeats, at the trainer's temperature / top-p / top-k and ``max_completion_length``. Seeds come
  from (``args.seed``, ``state.global_step``, process index, the prompt's position in the slice): a run is
  reproducible and every step draws new samples.
- ``search``: the self-backtracking search (``SelfBacktrackingDecoder``, N = the repeats, b = 1, K from
  ``search_k``). The group's completions are the search's G round-0 samples: drawn from the prompt by the current
  policy (the same draws as ``engine`` at the same seed), so GRPO's group baseline holds. Each completion also
  carries ``search_value`` (TRL forwards it to the rewards as a keyword): for a round-0 sample that ended in
  ``<backtrack>`` and rolled back to a state the search expanded, the share of the search's samples from that state
  (round 1; the round-0 group itself when it rolled back to the prompt) that the task's strict checker accepts; None
  otherwise. The search's own results are logged as ``search/answer_correct`` (its chosen answer is strictly correct),
  ``search/oracle`` (some candidate is), ``search/valued`` and ``search/value``.

Completion ids are what TRL's ``generate`` returns: the sampled tokens, ``<backtrack>`` kept, and EOS at the end when
the row ended on EOS (the engine keeps it). The engine stops a row at ``Goal Reached!`` and at ``<backtrack>``,
where the model's training data puts EOS next (``Goal Reached!<eos>``, ``<backtrack><eos>``): that EOS is appended,
so TRL counts the row as terminated (not clipped) and the loss sees the whole answer, as with ``generate``.
``logprobs`` has one float per completion token: the engine's log-probabilities at temperature 1 (not at the
sampling temperature, as TRL's vLLM ones are), 0.0 for an appended EOS. TRL reads them only for vLLM importance
sampling and the off-policy mask, which :func:`check_rollout_args` refuses with these rollouts.

Usage:

```python
from trl import GRPOTrainer

from backtrack_trl.tasks import get_task
from backtrack_trl.training.rollouts import make_rollout

rollout_func = make_rollout("search", get_task("countdown"), search_k="paper")  # None for "trl"
trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=prompts, rollout_func=rollout_func)
```
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Callable, Sequence

import torch
from trl.models.utils import unwrap_model_for_generation

from backtrack_trl.decoding.engine import SamplingEngine
from backtrack_trl.decoding.engine_io import Expansion, State
from backtrack_trl.decoding.search import K_RULES, SelfBacktrackingDecoder, resolve_k
from backtrack_trl.decoding.tokens import TaskTokens


ROLLOUTS = ("trl", "engine", "search")
_APPENDED_EOS = ("goal", "backtrack")  # the engine stops there; the model writes EOS next


def parse_search_k(value) -> int | str:
    """``--search_k``: ``"paper"``, ``"released"``, ``"sqrt_b"`` or an integer >= 1 (a YAML int or a digit string)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    try:
        resolve_k(value, n=4, b=1)
    except ValueError:
        raise ValueError(
            f"--search_k {value!r}: give {', '.join(repr(rule) for rule in K_RULES)} or an integer >= 1 (states the "
            "search re-expands after round 0)."
        ) from None
    return value


def check_rollout(rollout: str, search_k="paper") -> None:
    """The rollout options, checked before any work."""
    if rollout not in ROLLOUTS:
        raise ValueError(f"--rollout {rollout!r}: give one of {', '.join(ROLLOUTS)} (trl: TRL's own generate).")
    parse_search_k(search_k)


def check_rollout_args(rollout: str, args) -> None:
    """The ``GRPOConfig`` settings our rollouts cannot honour, refused with the fix (``trl`` takes them all)."""
    if rollout == "trl":
        return
    refused = [
        ("--use_vllm", getattr(args, "use_vllm", False), "vLLM generates in TRL's own path"),
        ("--use_transformers_continuous_batching", getattr(args, "use_transformers_continuous_batching", False), ""),
        ("--min_p", getattr(args, "min_p", None) is not None, "the engine samples with temperature/top_p/top_k"),
        ("--repetition_penalty", getattr(args, "repetition_penalty", 1.0) != 1.0, "the engine has none"),
        ("--generation_kwargs", bool(getattr(args, "generation_kwargs", None)), "the engine does not read them"),
        ("--off_policy_mask_threshold", getattr(args, "off_policy_mask_threshold", None) is not None,
         "it would compare temperature-1 log-probs with TRL's tempered ones"),
    ]  # fmt: skip
    for option, is_set, why in refused:
        if is_set:
            raise ValueError(
                f"{option} is set but --rollout {rollout} cannot honour it" + (f" ({why})" if why else "")
                + f": drop {option} or use --rollout trl."
            )  # fmt: skip


def rollout_seed(seed: int, step: int, process: int, position: int) -> int:
    """A non-negative int64 seed from (run seed, training step, process index, the prompt's position)."""
    digest = hashlib.blake2b(f"{seed}:{step}:{process}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


def _plan(prompts: Sequence) -> tuple[list[str], int, list[tuple[int, int]]]:
    """(distinct prompts in order, samples to draw per prompt, per entry: (its distinct prompt, which sample))."""
    if not prompts or not isinstance(prompts[0], str):
        raise ValueError(
            "--rollout engine|search takes plain-text prompts (the task datasets'); conversational prompts need "
            "--rollout trl."
        )
    distinct = list(dict.fromkeys(prompts))
    position = {prompt: index for index, prompt in enumerate(distinct)}
    seen: Counter = Counter()
    where = []
    for prompt in prompts:
        where.append((position[prompt], seen[prompt]))
        seen[prompt] += 1
    return distinct, max(seen.values()), where


def _prepare(prompts: Sequence, trainer) -> tuple[list[str], int, list[tuple[int, int]], list[list[int]]]:
    """:func:`_plan` of ``prompts`` plus the distinct prompts' ids, tokenized as TRL tokenizes a plain-text prompt."""
    distinct, n, where = _plan(prompts)
    return distinct, n, where, trainer.processing_class(text=distinct)["input_ids"]


def _seeds(trainer, count: int) -> list[int]:
    process = getattr(trainer.accelerator, "process_index", 0)
    return [rollout_seed(trainer.args.seed, trainer.state.global_step, process, i) for i in range(count)]


@contextlib.contextmanager
def _policy(trainer):
    """The trainer's model, unwrapped as TRL unwraps it for ``generate`` (gradient checkpointing off, ZeRO-3
    gathered), in eval mode without gradients; its training mode is restored afterwards."""
    args = trainer.args
    summon = getattr(getattr(trainer, "_dist", None), "summon_full_params", None)
    with (
        unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=getattr(args, "ds3_gather_for_generation", True),
            gradient_checkpointing_kwargs=getattr(args, "gradient_checkpointing_kwargs", None),
        ) as model,
        torch.no_grad(),
        summon(trainer.model_wrapped, recurse=False) if summon is not None else contextlib.nullcontext(),
    ):
        training = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(training)


def _completion(tokens: Sequence[int], logprobs: Sequence[float], end: str, eos_id: int):
    """(completion ids, log-probs) as TRL's ``generate`` would return the sample (see the module docstring)."""
    ids, values = [int(t) for t in tokens], [float(v) for v in logprobs]
    if end in _APPENDED_EOS:
        ids.append(eos_id)
        values.append(0.0)
    return ids, values


def _output(prompt_ids, where, drawn, extra: dict | None = None) -> dict:
    """TRL's rollout dict: one entry per prompt entry, ``drawn[problem][sample]`` = (completion ids, log-probs)."""
    output = {
        "prompt_ids": [list(prompt_ids[p]) for p, _ in where],
        "completion_ids": [drawn[p][s][0] for p, s in where],
        "logprobs": [drawn[p][s][1] for p, s in where],
    }
    output.update({key: [values[p][s] for p, s in where] for key, values in (extra or {}).items()})
    return output


def engine_rollout(prompts: list, trainer) -> dict:
    """``rollout_func`` of ``--rollout engine`` (see the module docstring)."""
    distinct, n, where, prompt_ids = _prepare(prompts, trainer)
    args = trainer.args
    with _policy(trainer) as model:
        tokens = TaskTokens.from_tokenizer(trainer.processing_class, model)
        engine = SamplingEngine(
            model, tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k or 0,
            max_new_tokens=args.max_completion_length,
        )  # fmt: skip
        seeds = _seeds(trainer, len(distinct))
        expansions = [Expansion(problem=i, state=State(), seed=seed) for i, seed in enumerate(seeds)]
        out = engine.run(prompt_ids, expansions, n)
    drawn = [[None] * n for _ in distinct]
    for sample in out.samples:  # one expansion per prompt: its index is the prompt's
        drawn[sample.expansion][sample.sample] = _completion(
            sample.tokens, sample.logprobs, sample.end, tokens.eos_ids[0]
        )
    return _output(prompt_ids, where, drawn)


class _RecordingSearch(SelfBacktrackingDecoder):
    """The search, keeping every raw sample of every problem (with its per-token log-probs) in ``recorded``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recorded: list[list] = []

    def raw_sample(self, tokens, logprobs, no_backtrack, end, round_index=0):
        raw = super().raw_sample(tokens, logprobs, no_backtrack, end, round_index)
        raw.logprobs = tuple(logprobs)
        return raw

    def build_result(self, prompt, samples, *args, **kwargs):
        self.recorded.append(samples)
        return super().build_result(prompt, samples, *args, **kwargs)


def search_values(task, problem, samples) -> list[float | None]:
    """``search_value`` of each round-0 sample among ``samples`` (one problem's raw samples, ``state`` /
    ``rolled_to`` set by the search): the strict-correct share of the samples drawn from the state it rolled back
    to, None when it did not roll back to an expanded state."""
    correct: dict[int, list[bool]] = {}
    for sample in samples:
        correct.setdefault(sample.state, []).append(task.check(problem, sample.text, mode="strict").correct)
    values = []
    for sample in (s for s in samples if s.round == 0):
        drawn = correct.get(sample.rolled_to) if sample.end_reason == "backtrack" else None
        values.append(sum(drawn) / len(drawn) if drawn else None)
    return values


def make_search_rollout(task, search_k="paper") -> Callable[[list, object], dict]:
    """``rollout_func`` of ``--rollout search`` for ``task`` (see the module docstring)."""
    k = parse_search_k(search_k)

    def search_rollout(prompts: list, trainer) -> dict:
        distinct, n, where, prompt_ids = _prepare(prompts, trainer)
        args = trainer.args
        with _policy(trainer) as model:
            decoder = _RecordingSearch(
                model, trainer.processing_class, n=n, b=1, k=k, temperature=args.temperature, top_p=args.top_p,
                top_k=args.top_k or 0, max_new_tokens=args.max_completion_length, batch_size=len(distinct),
                task=task,
            )  # fmt: skip
            results = decoder.solve(distinct, seeds=_seeds(trainer, len(distinct)), token_ids=prompt_ids)
        eos_id = decoder.tokens.eos_ids[0]
        drawn, values, solved, oracle = [], [], [], []
        for prompt, samples, result in zip(distinct, decoder.recorded, results, strict=True):
            problem = task.parse_prompt(prompt)
            first = [s for s in samples if s.round == 0]
            drawn.append([_completion(s.token_ids, s.logprobs, s.end_reason, eos_id) for s in first])
            values.append(search_values(task, problem, samples))
            solved.append(task.check(problem, result.completion, mode="strict").correct)
            oracle.append(any(task.check(problem, c.text, mode="strict").correct for c in result.goal_candidates))
        output = _output(prompt_ids, where, drawn, {"search_value": values})
        log = getattr(trainer, "_log_metric", None)
        if log is not None:
            valued = [v for v in output["search_value"] if v is not None]
            log("search/answer_correct", sum(solved) / len(solved))
            log("search/oracle", sum(oracle) / len(oracle))
            log("search/valued", len(valued) / len(output["search_value"]))
            if valued:
                log("search/value", sum(valued) / len(valued))
        return output

    return search_rollout


def make_rollout(rollout: str, task, search_k="paper") -> Callable[[list, object], dict] | None:
    """The ``rollout_func`` of ``--rollout`` (None for ``trl``: TRL's own generation)."""
    check_rollout(rollout, search_k)
    if rollout == "engine":
        return engine_rollout
    if rollout == "search":
        return make_search_rollout(task, search_k)
    return None


__all__ = [
    "ROLLOUTS",
    "check_rollout",
    "check_rollout_args",
    "engine_rollout",
    "make_rollout",
    "make_search_rollout",
    "parse_search_k",
    "rollout_seed",
    "search_values",
]
