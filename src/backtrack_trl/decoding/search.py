"""Self-backtracking search (Yang et al. 2025, arXiv 2502.04404, Algorithm 1), batched and cached.

::

    frontier = [root]; visited = {root}; candidates = []
    for round in 0..b:                                   # b = 0: one expansion, no rollback
        sample N continuations of every frontier state (all states of all problems in one batch)
        outputs that end with "Goal Reached!" become candidates
        outputs that end with <backtrack>: roll back exactly one step (the last line); the first K distinct
            states not yet visited (in sample order) form the next frontier
    choose the candidate with the best score (mean token log-prob by default)

What makes it fast: the N samples of every state of every problem run as one batch; rows leave the batch as soon as
they stop; log-probs come from the sampling pass (no re-scoring pass); a rolled-back state keeps the KV cache of its
prefix (copied out of the finished row) instead of re-encoding text.

Usage:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

from backtrack_trl.decoding import SelfBacktrackingDecoder

model = AutoModelForCausalLM.from_pretrained("models/countdown-tiny/backtrack-sft")
tokenizer = AutoTokenizer.from_pretrained("models/countdown-tiny/backtrack-sft")
decoder = SelfBacktrackingDecoder(model, tokenizer, n=32, b=1)
result = decoder.solve(["###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n"])[0]
print(result.completion, result.rollbacks, len(result.candidates))
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from backtrack_trl.decoding.base import Decoder, check_options
from backtrack_trl.decoding.beam import BeamEngine
from backtrack_trl.decoding.engine import SamplingEngine
from backtrack_trl.decoding.engine_io import EngineOutput, Expansion, Sample, State
from backtrack_trl.decoding.results import SearchResult
from backtrack_trl.decoding.vllm_backend import VLLMEngine, check_vllm_options, resolve_backend
from backtrack_trl.tasks import BACKTRACK_TOKEN


K_RULES = ("paper", "released", "sqrt_b")


def resolve_k(k: int | str, n: int, b: int) -> int:
    """States re-expanded per round: ``"paper"`` and ``"released"`` floor(sqrt(N)) (the released code's
    ``self.n = int(np.sqrt(k))`` with k = N: the same rule as the paper), ``"sqrt_b"`` floor(sqrt(b)) (at least 1;
    what ``"released"`` meant before the released code was run side by side), or an int."""
    if k in ("paper", "released"):
        return max(1, math.isqrt(n))
    if k == "sqrt_b":
        return max(1, math.isqrt(b))
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(
            f"k must be 'paper', 'released' (both floor(sqrt N)), 'sqrt_b' or an integer >= 1, got {k!r}."
        )
    return k


def rollback_cut(tokens, is_newline, is_blank=None) -> int:
    """Length of the state left after removing the last non-empty line of ``tokens`` (``<backtrack>`` removed).

    The last line is the wrong step, whether it is complete (ends with a newline) or not; empty lines after it
    (``"\\n"`` tokens, or a merged ``"\\n\\n"``) belong to it. The state ends with the newline before it (0 = the
    root: the response was a single line)."""
    end = len(tokens)
    while is_blank is not None and end and is_blank(tokens[end - 1]):
        end -= 1
    if end and is_newline(tokens[end - 1]):
        end -= 1
    for index in range(end - 1, -1, -1):
        if is_newline(tokens[index]):
            return index + 1
    return 0


def _rollback_text(text: str) -> tuple[str, str]:
    """(state, wrong step) of a response text that ended in ``<backtrack>``: :func:`rollback_cut` on text (the last
    non-empty line is the wrong step; the state ends with the newline before it)."""
    body = text[: -len(BACKTRACK_TOKEN)] if text.endswith(BACKTRACK_TOKEN) else text
    cut = body.rfind("\n", 0, len(body.rstrip())) + 1
    return body[:cut], body[cut:]


def _tree_state(index: int, parent: int | None, round_index: int, prefix: str, num_tokens: int, wrong: list) -> dict:
    """One entry of ``SearchResult.tree["states"]`` (see :class:`~backtrack_trl.decoding.results.SearchResult`)."""
    return {"id": index, "parent": parent, "round": round_index, "prefix": prefix, "num_tokens": num_tokens,
            "wrong_steps": wrong}  # fmt: skip


@dataclass
class _Pending:
    order: tuple[int, int]
    sample: Sample
    cut: int
    wrong_steps: set = field(default_factory=set)


class SelfBacktrackingDecoder(Decoder):
    """The self-backtracking search; options cover the paper and the released code.

    Args:
        n: samples per expanded state (N).
        b: rounds of backtracking (0 = one expansion; the ``<backtrack>`` token then only filters samples).
        k: states re-expanded per round: ``"paper"`` or ``"released"`` (floor sqrt N, the paper's and the released
            code's rule), ``"sqrt_b"`` (floor sqrt b) or an int.
        temperature, top_p, top_k: sampling (temperature 0 = greedy rows; top_k 0 = off). The released code's options
            are ``k="released", top_k=50, duplicates="sum"`` (its generate call leaves transformers' top-k 50 on).
        max_new_tokens: response length limit in tokens (a rolled-back prefix counts towards it).
        sampling: ``"independent"`` (default) or ``"beam"`` (stochastic beam search with N beams per state, as the
            released code draws its samples; runs through ``model.generate``, re-encoding states from token ids).
        tabu: at a rolled-back state, forbid the first ``tabu_tokens`` tokens of the steps rolled back there.
        max_backtracks: forbid ``<backtrack>`` on paths that already rolled back this many times (None: never).
        selection: ``"likelihood"`` (paper), ``"backtrack_value"`` or ``"combined"`` (see ``selection.py``).
        duplicates: ``"sum"`` (released), ``"mean"`` or ``"max"``.
        backtrack_weight: weight of the backtrack value in ``"combined"``.
        reuse_cache: reuse the KV cache across rollbacks (False re-encodes the state's token ids: same results,
            used to test the cache path).
        batch_size: problems per batch (default: about 512 rows / N).
        backend: ``"hf"`` (this process's model, the default) or ``"vllm"`` (``model`` is a
            :class:`~backtrack_trl.decoding.vllm_backend.VLLMClient`: vLLM samples, the search is the same; see
            ``vllm_backend.py``); None picks it from the model's type.
        seed, validate_prompts: see :class:`~backtrack_trl.decoding.base.Decoder`.
    """

    method = "self_backtracking"

    def __init__(
        self,
        model,
        tokenizer,
        n: int = 8,
        b: int = 1,
        k: int | str = "paper",
        temperature: float = 0.7,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new_tokens: int = 64,
        sampling: str = "independent",
        tabu: bool = False,
        tabu_tokens: int = 1,
        max_backtracks: int | None = None,
        selection: str = "likelihood",
        duplicates: str = "mean",
        backtrack_weight: float = 1.0,
        reuse_cache: bool = True,
        batch_size: int | None = None,
        seed: int = 0,
        validate_prompts: bool = True,
        task="countdown",
        logits_processor=None,
        backend: str | None = None,
    ):
        backend = resolve_backend(backend, model)
        if backend == "vllm":
            check_vllm_options(
                sampling=sampling, tabu=tabu, max_backtracks=max_backtracks, logits_processor=logits_processor
            )
        check_options(
            n=n, b=b, temperature=temperature, top_p=top_p, sampling=sampling, max_new_tokens=max_new_tokens,
            tabu_tokens=tabu_tokens, max_backtracks=max_backtracks, selection=selection, duplicates=duplicates,
        )  # fmt: skip
        self.n, self.b = n, b
        self.default_batch_size = max(1, 512 // self.n)
        super().__init__(
            model, tokenizer, batch_size=batch_size, seed=seed, validate_prompts=validate_prompts, task=task
        )
        self.k = resolve_k(k, self.n, self.b)
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.max_new_tokens = max_new_tokens
        self.sampling = sampling
        self.tabu = tabu
        self.tabu_tokens = tabu_tokens
        self.selection, self.duplicates, self.backtrack_weight = selection, duplicates, backtrack_weight
        self.backend = backend
        if backend == "vllm":
            self.engine = VLLMEngine(model, self.tokens, temperature, top_p, top_k, max_new_tokens)
        elif sampling == "beam":
            self.engine = BeamEngine(
                model, self.tokens, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                do_sample=temperature > 0, max_backtracks=max_backtracks, tabu_tokens=tabu_tokens if tabu else 0,
            )  # fmt: skip
        else:
            self.engine = SamplingEngine(
                model, self.tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                max_new_tokens=max_new_tokens, reuse_cache=reuse_cache, max_backtracks=max_backtracks,
                tabu_tokens=tabu_tokens if tabu else 0, logits_processor=logits_processor,
            )  # fmt: skip

    def _solve_batch(self, prompts, prompt_ids, seeds) -> list[SearchResult]:
        problems = range(len(prompts))
        is_newline = self.tokens.is_newline
        frontier = {p: [State()] for p in problems}
        visited = {p: {()} for p in problems}
        samples = {p: [] for p in problems}
        rollbacks = dict.fromkeys(problems, 0)
        forward_passes = dict.fromkeys(problems, 0)
        generated = dict.fromkeys(problems, 0)
        # The tree a view of the search needs (SearchResult.tree): the expanded states and, per sample, its state and
        # the state it rolled back to. Ints and token-tuple keys only; a state's text is decoded once, when created.
        states = {p: [_tree_state(0, None, 0, "", 0, [])] for p in problems}
        state_ids = {p: {(): 0} for p in problems}

        for round_index in range(self.b + 1):
            expansions = [
                Expansion(problem=p, state=state, seed=seeds[p], round=round_index)
                for p in problems
                for state in frontier[p]
            ]
            if not expansions:
                break
            pending: dict[int, dict[tuple, _Pending]] = {p: {} for p in problems}
            last_round = round_index == self.b
            expansion_state = [state_ids[e.problem][e.state.tokens] for e in expansions]
            rolled_keys: dict[tuple[int, int], tuple] = {}  # (expansion, sample) -> the state it rolls back to

            def keep_prefix(
                sample: Sample, expansions=expansions, pending=pending, last_round=last_round, rolled_keys=rolled_keys
            ):
                # Called when a row finishes: returns the prefix length whose KV cache must be kept, or None.
                if last_round or sample.end != "backtrack":
                    return None
                problem = expansions[sample.expansion].problem
                body = sample.tokens[:-1]
                cut = rollback_cut(body, is_newline, self.tokens.is_blank)
                key = body[:cut]
                rolled_keys[sample.expansion, sample.sample] = key
                if key in visited[problem]:
                    return None
                wrong = tuple(body[cut:])
                order = (sample.expansion, sample.sample)
                entry = pending[problem].get(key)
                if entry is not None:
                    entry.wrong_steps.add(wrong)
                    entry.order = min(entry.order, order)
                    return None
                pending[problem][key] = _Pending(order=order, sample=sample, cut=cut, wrong_steps={wrong})
                return cut

            output: EngineOutput = self.engine.run(prompt_ids, expansions, self.n, keep_prefix)
            for p, count in output.forward_passes.items():
                forward_passes[p] += count
            for p, count in output.tokens_generated.items():
                generated[p] += count
            rolled_samples = []  # (problem, raw sample, the state key it rolls back to)
            for sample in sorted(output.samples, key=lambda s: (s.expansion, s.sample)):
                problem = expansions[sample.expansion].problem
                raw = self.raw_sample(sample.tokens, sample.logprobs, sample.no_backtrack, sample.end, round_index)
                raw.state = expansion_state[sample.expansion]
                samples[problem].append(raw)
                key = rolled_keys.get((sample.expansion, sample.sample))
                if key is not None:
                    rolled_samples.append((problem, raw, key))

            rolled_to_key: dict[tuple, list] = {}
            for p, raw, key in rolled_samples:
                rolled_to_key.setdefault((p, key), []).append(raw.text)
            for p in problems:
                chosen = sorted(pending[p].items(), key=lambda item: item[1].order)[: self.k]
                next_states = []
                for index, (key, entry) in enumerate(chosen):
                    parent = expansions[entry.sample.expansion].state
                    cut = entry.cut
                    next_states.append(
                        State(
                            tokens=key,
                            logprobs=entry.sample.logprobs[:cut],
                            no_backtrack=entry.sample.no_backtrack[:cut],
                            rollbacks=parent.rollbacks + 1,
                            tabu=tuple(sorted(entry.wrong_steps)) if self.tabu else (),
                            index=index,
                            kv=entry.sample.kv,
                        )
                    )
                    visited[p].add(key)
                    state_ids[p][key] = len(states[p])
                    # The state's text and its wrong steps come from the rolled-back samples' texts (no decoding).
                    split = [_rollback_text(text) for text in rolled_to_key[p, key]]
                    wrong = sorted({step for _, step in split})
                    parent_id = expansion_state[entry.sample.expansion]
                    states[p].append(_tree_state(len(states[p]), parent_id, round_index + 1, split[0][0], cut, wrong))
                rollbacks[p] += len(next_states)
                frontier[p] = next_states
            for p, raw, key in rolled_samples:  # None: rolled back to a state beyond the K kept
                raw.rolled_to = state_ids[p].get(key)

        return [
            self.build_result(
                prompts[p],
                samples[p],
                self.selection,
                self.duplicates,
                self.backtrack_weight,
                method=self.method,
                tokens_generated=generated[p],
                forward_passes=forward_passes[p],
                rollbacks=rollbacks[p],
                states=states[p],
            )
            for p in problems
        ]
