"""Countdown accuracy: rule-checked answers (strict and/or the paper's official checker), with failure reasons.

Loadable offline from its folder:

```python
import evaluate

metric = evaluate.load("metrics/countdown_accuracy")  # config_name: "strict" (default), "official" or "both"
prompt = "###Question: numbers [2, 39, 45, 10]->target 62\\n###Response:\\n"
result = metric.compute(predictions=["45-39=6\\n10*6=60\\n60+2=62\\nGoal Reached!"], references=[prompt])
assert result["accuracy"] == 1.0
```
"""

import datasets
import evaluate

from backtrack_trl.tasks.countdown.checkers import MODES, REASONS, check
from backtrack_trl.tasks.countdown.format import Problem, parse_prompt


_CITATION = """\
@inproceedings{yang2025step,
  title={Step Back to Leap Forward: Self-Backtracking for Boosting Reasoning of Language Models},
  author={Yang, Xiao-Wen and Zhu, Xuan-Yi and Wei, Wen-Da and Zhang, Ding-Chu and Shao, Jie-Jing and Zhou, Zhi and
          Guo, Lan-Zhe and Li, Yu-Feng},
  booktitle={International Conference on Machine Learning},
  year={2025}
}
"""

_DESCRIPTION = """\
Fraction of Countdown answers that a rule checker accepts. "strict": exact arithmetic, every number used exactly once,
last result equals the target, then "Goal Reached!" and nothing else. "official": the lenient checker the paper's
accuracies were measured with (floor division, value-based removal, unused numbers allowed, trailing text ignored).
Also returns, for every failure reason, its count and fraction.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): responses, i.e. the text after "###Response:\\n" (a trailing "</s>" is ignored).
    references (`list[str]` or `list[dict]`): the prompts ("###Question: numbers [...]->target T\\n###Response:\\n"),
        or dicts {"numbers": [...], "target": T}.
    mode (`str`, optional): "strict", "official" or "both"; overrides the config name.
Returns:
    One mode: `accuracy`, `count`, and for each reason R in REASONS `num_R` and `frac_R`.
    "both": the same keys prefixed with "strict_" and "official_".
Examples:
    >>> metric = evaluate.load("metrics/countdown_accuracy", "both")
    >>> prompt = "###Question: numbers [116, 32, 7]->target 10\\n###Response:\\n"
    >>> result = metric.compute(predictions=["116/32=3\\n7+3=10\\nGoal Reached!"], references=[prompt])
    >>> result["strict_accuracy"], result["official_accuracy"]
    (0.0, 1.0)
"""

_CONFIGS = (*MODES, "both")


def _to_problem(reference) -> Problem:
    if isinstance(reference, str):
        return parse_prompt(reference)
    if isinstance(reference, dict) and "numbers" in reference and "target" in reference:
        return Problem(tuple(reference["numbers"]), reference["target"])
    raise ValueError(
        f"countdown_accuracy reference {reference!r} is neither a prompt string nor a dict with 'numbers' and 'target'."
    )


def _score(problems, predictions, mode: str, prefix: str = "") -> dict:
    counts = dict.fromkeys(REASONS, 0)
    for problem, prediction in zip(problems, predictions):
        counts[check(problem, prediction, mode=mode).reason] += 1
    total = len(problems)
    out = {f"{prefix}accuracy": counts["correct"] / total if total else 0.0, f"{prefix}count": total}
    for reason in REASONS:
        out[f"{prefix}num_{reason}"] = counts[reason]
        out[f"{prefix}frac_{reason}"] = counts[reason] / total if total else 0.0
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CountdownAccuracy(evaluate.Metric):
    def _info(self):
        if self.config_name not in _CONFIGS and self.config_name != "default":
            raise ValueError(f"countdown_accuracy config {self.config_name!r} is unknown; use one of {_CONFIGS}.")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": {
                            "numbers": datasets.Sequence(datasets.Value("int64")),
                            "target": datasets.Value("int64"),
                        },
                    }
                ),
            ],
            reference_urls=["https://arxiv.org/abs/2502.04404"],
        )

    def _compute(self, predictions, references, mode=None):
        mode = mode or (self.config_name if self.config_name in _CONFIGS else "strict")
        if mode not in _CONFIGS:
            raise ValueError(f"countdown_accuracy mode {mode!r} is unknown; use one of {_CONFIGS}.")
        problems = [_to_problem(reference) for reference in references]
        if mode == "both":
            return {
                **_score(problems, predictions, "strict", "strict_"),
                **_score(problems, predictions, "official", "official_"),
            }
        return _score(problems, predictions, mode)
