"""Rewards from a task's checker for TRL's ``GRPOTrainer``: a name-to-function registry, as open-r1's ``rewards.py``.

Each reward takes TRL's ``(prompts, completions, **kwargs)`` and returns one float per completion. The problem is read
from the prompt (``task.parse_prompt``), so any registered task works. TRL decodes completions with
``skip_special_tokens=True``, which deletes ``<backtrack>`` from the text a reward sees; give the reward the
tokenizer and it reads TRL's ``completion_ids`` keyword instead (EOS and padding ids dropped, the rest decoded as is).

Rewards (``get_reward(name, task, tokenizer, **options)``):

- ``strict``: 1 for an answer the task's strict checker accepts, else 0: a completion with ``<backtrack>`` or one that
  stops without an answer scores 0.
- ``step_validity``: the share of the answer's step lines before the first line the strict checker rejects (a shaped
  reward for legal steps; 0 without a step).
- ``backtrack_aware``: 1 for a correct answer; ``backtrack_credit`` (default 0) for ``<backtrack>`` right after the
  first wrong step (a positive credit is hackable: GRPO learns to write a wrong step on purpose and back off, see
  docs/grpo.md); ``-backtrack_credit`` for ``<backtrack>`` after steps that, claimed as the goal, would be correct;
  ``-false_goal_penalty`` for "Goal Reached!" on a wrong answer; ``-no_answer_penalty`` (default 0) for an answer
  that stops without "Goal Reached!" and without ``<backtrack>``, or rolls back before any step (with both penalties
  > 0, ``<backtrack>`` after a step is the only failure that costs nothing, as the method wants); 0 otherwise (a rollback from a legal partial path, which may be a
  dead end the checker cannot see, or one later than the first wrong step). With ``--rollout search`` TRL passes
  ``search_value`` (:mod:`backtrack_trl.training.rollouts`): a rollback right after the first wrong step with a
  value (not None) scores ``search_credit * search_value`` instead (default 0.5: half the reward of an answer, times
  the share of the search's samples from the rolled-back state that solve the problem), so a rollback earns what
  the search makes of it, not a fixed credit to hack.

Usage:

```python
from backtrack_trl.tasks import get_task
from backtrack_trl.training.rewards import get_reward

task = get_task("countdown")
prompt = task.format_prompt(task.problem_from_row({"numbers": [3, 5, 2], "target": 16}))
reward = get_reward("backtrack_aware", task, backtrack_credit=0.2)
texts = ["3+5=8\\n8*2=16\\nGoal Reached!", "3+5=8\\n8*2=17\\n<backtrack>", "3+5=8\\n8*2=17\\nGoal Reached!"]
print(reward([prompt] * 3, texts))  # [1.0, 0.2, -0.5]
```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backtrack_trl.tasks import BACKTRACK_TOKEN, GOAL_MARKER
from backtrack_trl.tasks.frame import clean_response
from backtrack_trl.tasks.wrong_steps import first_wrong_line


RewardFunction = Callable[..., list[float]]
REWARDS: dict[str, Callable[..., RewardFunction]] = {}


def register_reward(name: str):
    """Decorator: make a reward factory ``factory(task, tokenizer=None, **options) -> reward`` available by name."""

    def register(factory):
        REWARDS[name] = factory
        return factory

    return register


def get_reward(name: str, task, tokenizer=None, **options) -> RewardFunction:
    """The reward ``name`` for ``task`` (a :class:`~backtrack_trl.tasks.Task`), named as TRL logs it."""
    if name not in REWARDS:
        raise ValueError(f"--reward_funcs: unknown reward {name!r}; the rewards are {', '.join(sorted(REWARDS))}.")
    reward = REWARDS[name](task, tokenizer, **options)
    reward.__name__ = name  # TRL logs each reward under its function's name
    return reward


@dataclass(frozen=True)
class Judged:
    """One completion as the rewards see it."""

    correct: bool
    gave_up: bool  # it wrote <backtrack>
    claims_goal: bool
    steps: list[str]
    first_wrong: int | None  # the index of the first step the strict checker rejects
    goal_would_be_correct: bool  # it gave up after steps that, claimed as the goal, would be correct


def _text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"]  # a conversational completion: the assistant message


def completion_texts(completions: list, tokenizer=None, completion_ids: list[list[int]] | None = None) -> list[str]:
    """The completions' text with ``<backtrack>`` kept: decoded from ``completion_ids`` when a tokenizer is given."""
    if tokenizer is None or completion_ids is None:
        return [clean_response(_text(c)) for c in completions]
    dropped = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    return [
        clean_response(tokenizer.decode([i for i in ids if i not in dropped], skip_special_tokens=False))
        for ids in completion_ids
    ]


def judge(task, problem, text: str) -> Judged:
    """What :data:`REWARDS` need to know of one answer ``text`` to ``problem``."""
    lines = [line.strip() for line in text.strip().split("\n") if line.strip()]
    gave_up = BACKTRACK_TOKEN in text
    if gave_up:
        lines = lines[: next(i for i, line in enumerate(lines) if BACKTRACK_TOKEN in line)]
    claims_goal = not gave_up and bool(lines) and lines[-1] == GOAL_MARKER
    steps = lines[:-1] if claims_goal else lines
    wrong = first_wrong_line(task, problem, steps)
    claimed = "\n".join([*steps, GOAL_MARKER])
    return Judged(
        correct=not gave_up and task.check(problem, text, mode="strict").correct,
        gave_up=gave_up,
        claims_goal=claims_goal,
        steps=steps,
        first_wrong=None if wrong is None else wrong[0],
        goal_would_be_correct=gave_up
        and bool(steps)
        and wrong is None
        and task.check(problem, claimed, mode="strict").correct,
    )


def _per_completion(task, tokenizer, score: Callable[[Judged], float]) -> RewardFunction:
    def reward(prompts: list, completions: list, completion_ids=None, **kwargs) -> list[float]:
        texts = completion_texts(completions, tokenizer, completion_ids)
        return [score(judge(task, task.parse_prompt(_text(p)), t)) for p, t in zip(prompts, texts, strict=True)]

    return reward


@register_reward("strict")
def strict_reward(task, tokenizer=None) -> RewardFunction:
    return _per_completion(task, tokenizer, lambda j: float(j.correct))


@register_reward("step_validity")
def step_validity_reward(task, tokenizer=None) -> RewardFunction:
    def score(j: Judged) -> float:
        if not j.steps:
            return 0.0
        legal = len(j.steps) if j.first_wrong is None else j.first_wrong
        return legal / len(j.steps)

    return _per_completion(task, tokenizer, score)


@register_reward("backtrack_aware")
def backtrack_aware_reward(
    task,
    tokenizer=None,
    backtrack_credit: float = 0.0,
    false_goal_penalty: float = 0.5,
    no_answer_penalty: float = 0.0,
    search_credit: float = 0.5,
) -> RewardFunction:
    if min(backtrack_credit, false_goal_penalty, no_answer_penalty, search_credit) < 0:
        raise ValueError(
            f"backtrack_aware: backtrack_credit={backtrack_credit}, false_goal_penalty={false_goal_penalty}, "
            f"no_answer_penalty={no_answer_penalty} and search_credit={search_credit} must be >= 0 (they are "
            "magnitudes; the sign comes from the case)."
        )

    def score(j: Judged, value: float | None = None) -> float:
        if j.correct:
            return 1.0
        if j.claims_goal:
            return -false_goal_penalty
        if not j.gave_up:
            return -no_answer_penalty
        if not j.steps:
            return -no_answer_penalty  # a rollback from the root tells the search nothing: a give-up too
        if j.first_wrong == len(j.steps) - 1:  # rolled back right after the first wrong step
            return backtrack_credit if value is None else search_credit * value
        if j.goal_would_be_correct:
            return -backtrack_credit  # rolled back from a solved problem
        return 0.0

    def reward(prompts: list, completions: list, completion_ids=None, search_value=None, **kwargs) -> list[float]:
        texts = completion_texts(completions, tokenizer, completion_ids)
        values = search_value if search_value is not None else [None] * len(texts)
        return [
            score(judge(task, task.parse_prompt(_text(p)), t), v)
            for p, t, v in zip(prompts, texts, values, strict=True)
        ]

    return reward


__all__ = ["REWARDS", "Judged", "completion_texts", "get_reward", "judge", "register_reward"]
