"""Choosing the answer among a search's candidates.

Scores of one candidate (all read from the sampling pass, no extra forward):

- ``mean_logprob``: mean log-probability of the response tokens (the paper's rule: -log perplexity);
- ``backtrack_value``: the model's own log-probability of *not* emitting ``<backtrack>`` after each of the
  response's lines, ``sum_i log(1 - p_i(<backtrack>))``, where ``p_i`` is read at the position right after the
  ``i``-th line end (the point where a trained model emits ``<backtrack>`` after a wrong step, the last step
  included, so it judges the step that "reaches" the target).

Rules (``selection=``): ``"likelihood"`` (paper), ``"backtrack_value"`` (ties broken by likelihood),
``"combined"``: ``mean_logprob + backtrack_weight * backtrack_value``, or ``"vote"``: the answer that most samples
reached (self-consistency, Wang et al. 2022; ties broken by likelihood; not the paper's rule, and it ignores
``duplicates``). Vote suits tasks whose right answers are one text (Sudoku's reading-order paths); a Countdown
answer has many right texts.

Duplicates (same response text reached several times, ``duplicates=``): ``"sum"`` adds their scores (the released
code; scores are negative, so frequent answers are *penalised*), ``"mean"`` or ``"max"``.

Usage:

```python
from backtrack_trl.decoding.selection import aggregate_samples, select_index

candidates = aggregate_samples(raw, rule="combined", duplicates="mean")
best = select_index(candidates)
```
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from backtrack_trl.decoding.results import Candidate


SELECTION_RULES = ("likelihood", "backtrack_value", "combined", "vote")
DUPLICATE_AGGREGATIONS = ("sum", "mean", "max")


@dataclass
class RawSample:
    """One output before duplicates are merged. ``state`` / ``rolled_to``: the search state it was sampled from and
    the state its ``<backtrack>`` rolled back to (None: not rolled back), ids into ``SearchResult.tree["states"]``."""

    text: str
    end_reason: str
    mean_logprob: float
    backtrack_value: float
    num_tokens: int
    round: int = 0
    token_ids: tuple[int, ...] = ()
    state: int = 0
    rolled_to: int | None = None

    @property
    def reached_goal(self) -> bool:
        return self.end_reason == "goal"


def check_rule(rule: str, duplicates: str) -> None:
    if rule not in SELECTION_RULES:
        raise ValueError(f"selection={rule!r} is not one of {SELECTION_RULES}.")
    if duplicates not in DUPLICATE_AGGREGATIONS:
        raise ValueError(f"duplicates={duplicates!r} is not one of {DUPLICATE_AGGREGATIONS}.")


def mean_logprob(logprobs: Sequence[float]) -> float:
    return sum(logprobs) / len(logprobs) if logprobs else -math.inf


def backtrack_value(tokens: Sequence[int], no_backtrack: Sequence[float], is_newline) -> float:
    """Sum of ``log(1 - p(<backtrack>))`` at the positions that follow a line end inside the response.

    ``no_backtrack[i]`` belongs to the distribution that produced ``tokens[i]``, so the value after the line that
    ends with ``tokens[i - 1]`` is ``no_backtrack[i]``.
    """
    return float(sum(no_backtrack[i] for i in range(1, len(tokens)) if is_newline(tokens[i - 1])))


def sample_score(mean_lp: float, bt_value: float, rule: str, backtrack_weight: float = 1.0) -> float:
    if rule == "likelihood":
        return mean_lp
    if rule == "backtrack_value":
        return bt_value
    if rule == "vote":  # one vote per sample; the candidate's score is its count
        return 1.0
    return mean_lp + backtrack_weight * bt_value


def aggregate_scores(values: Sequence[float], duplicates: str) -> float:
    """One score for the duplicates of an answer: their ``sum`` (released), ``mean`` or ``max``."""
    if duplicates == "sum":
        return float(sum(values))
    if duplicates == "mean":
        return float(sum(values) / len(values))
    return float(max(values))


def aggregate_samples(
    samples: Sequence[RawSample], rule: str = "likelihood", duplicates: str = "mean", backtrack_weight: float = 1.0
) -> list[Candidate]:
    """Merge samples with the same text into candidates (first-seen order) and score them."""
    check_rule(rule, duplicates)
    groups: dict[str, list[RawSample]] = {}
    for sample in samples:
        groups.setdefault(sample.text, []).append(sample)
    candidates = []
    for text, group in groups.items():
        first = group[0]
        scores = [sample_score(s.mean_logprob, s.backtrack_value, rule, backtrack_weight) for s in group]
        candidates.append(
            Candidate(
                text=text,
                reached_goal=first.reached_goal,
                end_reason=first.end_reason,
                mean_logprob=float(sum(s.mean_logprob for s in group) / len(group)),
                backtrack_value=float(sum(s.backtrack_value for s in group) / len(group)),
                score=float(len(group)) if rule == "vote" else aggregate_scores(scores, duplicates),
                count=len(group),
                num_tokens=first.num_tokens,
                round=min(s.round for s in group),
            )
        )
    return candidates


def rescore(
    candidates: Sequence[Candidate], rule: str, duplicates: str = "mean", backtrack_weight: float = 1.0
) -> list[float]:
    """Selection scores of already-merged candidates under another rule (used by the evaluation to compare rules
    on one search run); duplicates of one text share the candidate's mean scores, so ``sum`` is count x score."""
    check_rule(rule, duplicates)
    scores = []
    for candidate in candidates:
        score = sample_score(candidate.mean_logprob, candidate.backtrack_value, rule, backtrack_weight)
        if rule == "vote":
            score = float(candidate.count)
        scores.append(score * candidate.count if duplicates == "sum" and rule != "vote" else score)
    return scores


def select_index(
    candidates: Sequence[Candidate], scores: Sequence[float] | None = None, tie_break: str = "likelihood"
) -> int | None:
    """Index of the best candidate that reached the goal (None when none did); ties go to higher likelihood, then
    to the earlier candidate."""
    best = None
    for index, candidate in enumerate(candidates):
        if not candidate.reached_goal:
            continue
        score = candidate.score if scores is None else scores[index]
        key = (score, candidate.mean_logprob if tie_break == "likelihood" else 0.0)
        if best is None or key > best[0]:
            best = (key, index)
    return None if best is None else best[1]


def fallback_index(candidates: Sequence[Candidate]) -> int | None:
    """When nothing reached the goal: the most likely output that did not end in ``<backtrack>`` (else any)."""
    pool = [i for i, c in enumerate(candidates) if c.end_reason != "backtrack"] or list(range(len(candidates)))
    if not pool:
        return None
    return max(pool, key=lambda i: (candidates[i].mean_logprob, -i))
