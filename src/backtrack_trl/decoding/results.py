"""What every decoder returns: one :class:`SearchResult` per problem, with every candidate and its scores.

Usage:

```python
from backtrack_trl.decoding.results import Candidate, SearchResult

candidate = Candidate(text="5+3=8\\nGoal Reached!", reached_goal=True, end_reason="goal", mean_logprob=-0.1)
result = SearchResult(prompt="...", completion=candidate.text, candidates=[candidate], method="greedy")
assert result.to_dict()["candidates"][0]["reached_goal"]
```
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


END_REASONS = ("goal", "backtrack", "eos", "length")


@dataclass
class Candidate:
    """One distinct response a decoder produced (duplicates are merged and counted).

    - ``text``: the response (text after ``###Response:\\n``), EOS/pad stripped, ``<backtrack>`` kept;
    - ``end_reason``: ``"goal"`` (ends with the goal marker), ``"backtrack"``, ``"eos"`` or ``"length"``;
    - ``mean_logprob``: mean log-probability of the response tokens under the model (temperature 1);
    - ``backtrack_value``: log P(no ``<backtrack>`` after each step) = sum over the response's line ends of
      ``log(1 - p(<backtrack>))``, read from the logits of the sampling pass (0.0 where not available);
    - ``score``: the selection score after duplicate aggregation (what the decoder maximised);
    - ``round``: the search round in which it first appeared (0 = first expansion).
    """

    text: str
    reached_goal: bool
    end_reason: str
    mean_logprob: float
    backtrack_value: float = 0.0
    score: float = 0.0
    count: int = 1
    num_tokens: int = 0
    round: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    """The outcome for one problem.

    ``completion`` is the chosen response (no EOS); ``candidates`` holds every distinct output (reached the goal or
    not), ``chosen_index`` points into it (None when the decoder fell back to an output outside the list).
    Counters: ``tokens_generated`` (sampled tokens, all rows, all rounds), ``forward_passes`` (model calls that
    involved this problem), ``rollbacks`` (states re-expanded after a ``<backtrack>``), ``wall_time`` (seconds; for
    problems decoded together in one batch, the batch time divided by the number of problems).

    ``tree`` (the self-backtracking search; None for the other decoders) is what a view of the search needs
    (:mod:`backtrack_trl.viz.search_tree`), in plain JSON types:

    - ``states``: the expanded states, ``{"id", "parent", "round", "prefix", "num_tokens", "wrong_steps"}``; id 0 is
      the root (the prompt); a rolled-back state's ``parent`` is the state its rolled-back sample was drawn from,
      ``round`` the round that expands it, ``prefix`` its response text and ``wrong_steps`` the steps rolled back
      to reach it in the round that created it;
    - ``samples``: one ``[state, candidate, rolled_to]`` per sample in sampling order: the state it was drawn from,
      its index in ``candidates`` and the state its ``<backtrack>`` rolled back to (None: not rolled back, e.g. in
      the last round or beyond the K states kept).
    """

    prompt: str
    completion: str
    candidates: list[Candidate] = field(default_factory=list)
    method: str = ""
    chosen_index: int | None = None
    tokens_generated: int = 0
    forward_passes: int = 0
    rollbacks: int = 0
    wall_time: float = 0.0
    completion_ids: list[int] | None = None
    tree: dict | None = None

    @property
    def chosen(self) -> Candidate | None:
        return None if self.chosen_index is None else self.candidates[self.chosen_index]

    @property
    def goal_candidates(self) -> list[Candidate]:
        return [candidate for candidate in self.candidates if candidate.reached_goal]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["candidates"] = [candidate.to_dict() for candidate in self.candidates]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SearchResult:
        data = dict(data)
        data["candidates"] = [Candidate(**candidate) for candidate in data.get("candidates", [])]
        return cls(**data)
