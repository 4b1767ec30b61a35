"""Baselines behind the same interface as the search: greedy, beam search (N beams), best-of-N by likelihood.

Usage:

```python
from backtrack_trl.decoding import BeamSearchDecoder, BestOfNDecoder, GreedyDecoder

greedy = GreedyDecoder(model, tokenizer).solve(problems)
beam = BeamSearchDecoder(model, tokenizer, n=16).solve(problems)  # chosen = the top beam
best_of_8 = BestOfNDecoder(model, tokenizer, n=8).solve(problems)  # best mean log-prob among answers
orm_8 = BestOfNDecoder(model, tokenizer, n=8, reward_model="results/countdown-tiny/reward-model").solve(problems)
```
"""

from __future__ import annotations

from pathlib import Path

from backtrack_trl.decoding.base import Decoder, check_options
from backtrack_trl.decoding.beam import BeamEngine
from backtrack_trl.decoding.engine_io import Expansion, State
from backtrack_trl.decoding.results import SearchResult
from backtrack_trl.decoding.reward_scorer import RewardModelScorer, check_reward_folder
from backtrack_trl.decoding.search import SelfBacktrackingDecoder
from backtrack_trl.decoding.selection import fallback_index, select_index


class GreedyDecoder(SelfBacktrackingDecoder):
    """One greedy output per problem (batched, cached, rows stop on ``<backtrack>``/EOS/goal marker)."""

    method = "greedy"

    def __init__(self, model, tokenizer, max_new_tokens: int = 64, batch_size: int | None = 64, **kwargs):
        super().__init__(
            model, tokenizer, n=1, b=0, temperature=0.0, max_new_tokens=max_new_tokens, batch_size=batch_size, **kwargs
        )


class BestOfNDecoder(SelfBacktrackingDecoder):
    """N independent samples; the answer (goal marker reached) with the best score wins.

    ``forbid_backtrack=True`` bans ``<backtrack>`` while sampling (the model cannot veto its own samples), which
    isolates what the token adds as a filter. Same selection options as the search.

    ``reward_model``: an outcome reward model folder (``recipes/reward_model.py``) or any object with
    ``score(prompts, responses) -> list[float]``. Every candidate's ``score`` is then the ORM's scalar (``mean_logprob``
    and ``backtrack_value`` are kept, so other rules can still be replayed) and the goal-reaching candidate with the
    highest ORM score wins (ties: likelihood). The folder's config is checked here; its weights load on first use, on
    the decoder's device and dtype.
    """

    method = "best_of_n"

    def __init__(self, model, tokenizer, n: int = 8, forbid_backtrack: bool = False, reward_model=None, **kwargs):
        kwargs.setdefault("max_backtracks", 0 if forbid_backtrack else None)
        super().__init__(model, tokenizer, n=n, b=0, **kwargs)
        self.reward_model, self._scorer = reward_model, None
        if reward_model is None:
            return
        if self.selection != "likelihood":
            raise ValueError(
                f"selection={self.selection!r} with reward_model: the reward model is the selection rule; drop one."
            )
        if isinstance(reward_model, (str, Path)):
            check_reward_folder(str(reward_model))
        elif callable(getattr(reward_model, "score", None)):
            self._scorer = reward_model
        else:
            raise ValueError(
                f"reward_model must be a reward model folder or an object with score(prompts, responses), "
                f"got {type(reward_model).__name__}."
            )

    @property
    def scorer(self):
        if self._scorer is None:
            dtype = next(self.model.parameters()).dtype
            self._scorer = RewardModelScorer.from_folder(str(self.reward_model), device=self.device, dtype=dtype)
        return self._scorer

    def build_result(self, prompt, samples, *args, **kwargs) -> SearchResult:
        result = super().build_result(prompt, samples, *args, **kwargs)
        if self.reward_model is not None:
            self._pending.append((result, samples))
        return result

    def _solve_batch(self, prompts, prompt_ids, seeds) -> list[SearchResult]:
        self._pending = []
        results = super()._solve_batch(prompts, prompt_ids, seeds)
        if self.reward_model is not None:
            self._rerank(self._pending)
        self._pending = []
        return results

    def _rerank(self, pending) -> None:
        """Score every candidate of the batch in one batched ORM pass, then choose again by that score."""
        pairs = [(result.prompt, candidate) for result, _ in pending for candidate in result.candidates]
        scores = self.scorer.score([prompt for prompt, _ in pairs], [c.text for _, c in pairs]) if pairs else []
        for (_, candidate), score in zip(pairs, scores, strict=True):
            candidate.score = float(score)
        for result, samples in pending:
            index = select_index(result.candidates)
            if index is None:
                index = fallback_index(result.candidates)
            result.chosen_index = index
            result.completion = result.candidates[index].text if index is not None else ""
            result.completion_ids = None
            if index is not None:
                first = next(sample for sample in samples if sample.text == result.completion)
                result.completion_ids = [i for i in first.token_ids if i not in self.tokens.strip_ids]


class BeamSearchDecoder(Decoder):
    """Deterministic beam search with N beams through ``model.generate`` (batched over problems).

    The chosen completion is the top beam (``generate``'s length-normalised beam score); every returned beam is a
    candidate, scored by its mean token log-probability.
    """

    method = "beam"

    def __init__(self, model, tokenizer, n: int = 16, max_new_tokens: int = 64, batch_size: int | None = None, **kw):
        check_options(beams=n)
        self.n = n
        self.default_batch_size = max(1, 256 // n)  # 256 beam rows (16 problems at n=16)
        super().__init__(model, tokenizer, batch_size=batch_size, **kw)
        # Large vocabularies: each generate call is capped further so its logits fit in memory (beam.py).
        self.engine = BeamEngine(model, self.tokens, max_new_tokens=max_new_tokens, do_sample=False)

    def _solve_batch(self, prompts, prompt_ids, seeds) -> list[SearchResult]:
        expansions = [Expansion(problem=p, state=State(), seed=seeds[p]) for p in range(len(prompts))]
        output = self.engine.run(prompt_ids, expansions, self.n)
        samples = {p: [] for p in range(len(prompts))}
        for sample in sorted(output.samples, key=lambda s: (s.expansion, s.sample)):
            samples[sample.expansion].append(
                self.raw_sample(sample.tokens, sample.logprobs, sample.no_backtrack, sample.end)
            )
        return [
            self.build_result(
                prompts[p],
                samples[p],
                choose_first=True,
                method=self.method,
                tokens_generated=output.tokens_generated.get(p, 0),
                forward_passes=output.forward_passes.get(p, 0),
            )
            for p in range(len(prompts))
        ]
