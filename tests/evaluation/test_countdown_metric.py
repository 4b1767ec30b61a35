"""The countdown_accuracy evaluate metric loads offline from its folder and computes the right numbers."""

from pathlib import Path

import evaluate
import pytest


METRIC_DIR = str(Path(__file__).resolve().parents[2] / "metrics" / "countdown_accuracy")
PROMPT = "###Question: numbers [2, 39, 45, 10]->target 62\n###Response:\n"
FLOOR = "###Question: numbers [116, 32, 7]->target 10\n###Response:\n"
PREDICTIONS = [
    "45-39=6\n10*6=60\n60+2=62\nGoal Reached!</s>",  # correct in both
    "45-39=6\n39+6=45\n<backtrack>",  # unknown number in both
    "45-39=6\n10*6=60\n60+2=63\nGoal Reached!",  # wrong arithmetic in both
    "116/32=3\n7+3=10\nGoal Reached!",  # floor division: official only
    "45-39=6\n10*6=60",  # no marker: strict not_reached_target, official invalid_format
]
REFERENCES = [PROMPT, PROMPT, PROMPT, FLOOR, PROMPT]


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(METRIC_DIR)


def test_strict_default(metric):
    result = metric.compute(predictions=PREDICTIONS, references=REFERENCES)
    assert result["accuracy"] == pytest.approx(1 / 5) and result["count"] == 5
    assert result["num_correct"] == 1
    assert result["num_unknown_numbers"] == 1
    assert result["num_incorrect_result"] == 2
    assert result["num_not_reached_target"] == 1
    assert result["num_invalid_format"] == 0
    assert result["frac_incorrect_result"] == pytest.approx(2 / 5)


def test_official_kwarg_and_both_config(metric):
    official = metric.compute(predictions=PREDICTIONS, references=REFERENCES, mode="official")
    assert official["accuracy"] == pytest.approx(2 / 5)
    assert official["num_invalid_format"] == 1 and official["num_incorrect_result"] == 1
    both = evaluate.load(METRIC_DIR, "both").compute(predictions=PREDICTIONS, references=REFERENCES)
    assert both["strict_accuracy"] == pytest.approx(1 / 5) and both["official_accuracy"] == pytest.approx(2 / 5)


def test_dict_references(metric):
    references = [{"numbers": [116, 32, 7], "target": 10}]
    result = metric.compute(predictions=["116/32=3\n7+3=10\nGoal Reached!"], references=references, mode="official")
    assert result["accuracy"] == 1.0


def test_bad_inputs(metric):
    with pytest.raises(ValueError, match="format_prompt"):
        metric.compute(predictions=["1+1=2"], references=["not a prompt"])
    with pytest.raises(ValueError, match="mode"):
        metric.compute(predictions=["1+1=2"], references=[PROMPT], mode="lenient")


def test_a_number_past_the_int_digit_limit_counts_as_wrong(metric):
    result = metric.compute(predictions=["45-39=6\n10*6=" + "6" * 5000 + "\nGoal Reached!"], references=[PROMPT])
    assert result["accuracy"] == 0.0 and result["num_invalid_format"] == 1
