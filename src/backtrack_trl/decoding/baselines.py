"""Baselines behind the same interface as the search: greedy, beam search (N beams), best-of-N by likelihood.

Usage:

```python
from backtrack_trl.decoding import BeamSearchDecoder, BestOfNDecoder, GreedyDecoder

greedy = GreedyDecoder(model, tokenizer).solve(problems)
beam = BeamSearchDecoder(model, tokenizer, n=16).solve(problems)  # chosen = the top beam
best_of_8 = BestOfNDecoder(model, tokenizer, n=8).solve(problems)  # best mean log-prob among answers
```
"""

from __future__ import annotations

from .base import Decoder, check_options
from .beam import BeamEngine
from .engine import Expansion, State
from .results import SearchResult
from .search import SelfBacktrackingDecoder


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
    """

    method = "best_of_n"

    def __init__(self, model, tokenizer, n: int = 8, forbid_backtrack: bool = False, **kwargs):
        kwargs.setdefault("max_backtracks", 0 if forbid_backtrack else None)
        super().__init__(model, tokenizer, n=n, b=0, **kwargs)


class BeamSearchDecoder(Decoder):
    """Deterministic beam search with N beams through ``model.generate`` (batched over problems).

    The chosen completion is the top beam (``generate``'s length-normalised beam score); every returned beam is a
    candidate, scored by its mean token log-probability.
    """

    method = "beam"

    def __init__(self, model, tokenizer, n: int = 16, max_new_tokens: int = 64, batch_size: int | None = 16, **kw):
        check_options(beams=n)
        self.n = n
        super().__init__(model, tokenizer, batch_size=batch_size, **kw)
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
