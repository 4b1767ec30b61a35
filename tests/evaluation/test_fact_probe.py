"""The single-fact probe of a model (Countdown's facts a<op>b=) and the fact probes registered by task name."""

from _decoding_utils import tokenizer
from _scripted_lm import ScriptedLM
from datasets import Dataset

from backtrack_trl.evaluation.fact_probe import (
    FACT_PROBES,
    fact_probe_for,
    probe_facts,
    register_fact_probe,
    run_fact_probe,
)
from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.countdown.arithmetic import enumerate_facts
from backtrack_trl.tasks.countdown.format import parse_prompt


def _planted_model():
    """Writes the true result of every fact except those with (a + b) % 3 == 0, where it writes result + 1."""

    def policy(prompt, lines):
        if lines:
            return {"Goal Reached!": 1.0}
        numbers = parse_prompt(prompt).numbers
        options = {}
        for fact in enumerate_facts(1, max(numbers)):
            if fact.a in numbers and fact.b in numbers:
                written = fact.result + 1 if (fact.a + fact.b) % 3 == 0 else fact.result
                options[f"{fact.a}{fact.op}{fact.b}={written}"] = 1.0
        return options

    return ScriptedLM.build(tokenizer(), policy)


def test_probe_facts_measures_the_planted_share_of_mistakes():
    facts = enumerate_facts(1, 6)
    right = probe_facts(_planted_model(), tokenizer(), facts, num_numbers=3, batch_size=16)
    expected = [(fact.a + fact.b) % 3 != 0 for fact in facts]
    assert right == expected
    assert 0 < sum(right) < len(right)


def test_run_fact_probe_reports_inside_and_held_out():
    solutions = ["3+3=6\n6*1=6\nGoal Reached!", "4+2=6\n6-1=5\nGoal Reached!"]
    report = run_fact_probe(_planted_model(), tokenizer(), solutions, min_operand=1, max_operand=4, max_facts=100)
    # inside: 3+3 (planted wrong: 6 % 3 == 0) and 4+2 (planted wrong) -> 0%; 6*1 and 6-1 are outside 1..4
    assert report["inside"]["facts"] == 2 and report["inside"]["accuracy"] == 0.0
    held = report["held_out"]
    assert held["facts"] == held["of"] == len(enumerate_facts(1, 4)) - 2
    assert 0 < held["accuracy"] < 1 and held["by_op"]["+"] is not None


def test_the_countdown_task_runs_its_fact_probe_on_the_train_split_solutions():
    rows = Dataset.from_list(
        [
            {"numbers": [3, 3, 1], "completion": "3+3=6\n6*1=6\nGoal Reached!", "kind": "optimal"},
            {"numbers": [4, 2, 1], "completion": "4+2=6\n6-1=5\nGoal Reached!", "kind": "optimal"},
            {"numbers": [4, 4, 1], "completion": "4+4=8\n<backtrack>", "kind": "backtrack"},  # not a trained fact
        ]
    )
    options = {"min_operand": 1, "max_operand": 4, "max_facts": 100, "context": "prompt", "seed": 0}
    report = fact_probe_for(get_task("countdown"))(_planted_model(), tokenizer(), rows, options)
    assert report["inside"]["facts"] == 2 and report["inside"]["accuracy"] == 0.0
    assert report == run_fact_probe(
        _planted_model(), tokenizer(), ["3+3=6\n6*1=6\nGoal Reached!", "4+2=6\n6-1=5\nGoal Reached!"], **options
    )
    assert fact_probe_for(get_task("sudoku")) is None


def test_a_task_registers_its_own_fact_probe():
    @register_fact_probe("sudoku")
    def probe(model, tokenizer, train_rows, options):
        return {"rows": len(train_rows)}

    try:
        assert fact_probe_for(get_task("sudoku")) is probe
        assert FACT_PROBES["countdown"] is not probe
    finally:
        del FACT_PROBES["sudoku"]
    assert fact_probe_for(get_task("sudoku")) is None
