"""backtrack_trl.training.reward_data: the ORM pairs (strict labels, train problems only)."""

from _decoding_utils import GOAL, scripted, tokenizer
from datasets import Dataset, DatasetDict, load_dataset

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.countdown.format import Problem, format_prompt
from backtrack_trl.training.reward_config import RewardModelScriptArguments
from backtrack_trl.training.reward_data import build_orm_dataset, make_pairs


TASK = get_task("countdown")


def problems_folder(tmp_path) -> str:
    """Train split: (5,3)->8 (one right and one wrong sample), (5,3)->2 (a TEST problem too) and (5,3)->15 (no
    right sample: no pair)."""
    rows = lambda problems: [TASK.problem_to_row(p) for p in problems]  # noqa: E731
    train = rows([Problem((5, 3), 8), Problem((5, 3), 2), Problem((5, 3), 15), Problem((5, 3), 8)])
    dataset = DatasetDict(
        {"train": Dataset.from_list(train), "test_seen": Dataset.from_list(rows([Problem((5, 3), 2)]))}
    )
    return str(write_hub_dataset(dataset, tmp_path / "problems"))


def test_pairs_are_strictly_labelled_and_never_use_a_test_problem(tmp_path):
    model = scripted({(): {"5+3=8": 0.5, "5-3=2": 0.5}})
    args = RewardModelScriptArguments(
        stage="data", problems_dataset=problems_folder(tmp_path), max_problems=10, eval_problems=0, num_samples=16,
        temperature=1.0, preference_dataset=str(tmp_path / "pairs"),
    )  # fmt: skip
    summary = build_orm_dataset(args, model=model, tokenizer=tokenizer())
    assert summary["problems"] == 2 and summary["test_problem_rows_skipped"] == 1
    rows = list(load_dataset(str(tmp_path / "pairs"))["train"])
    assert rows and {row["target"] for row in rows} == {8}  # (5,3)->2 is a test problem; (5,3)->15 has no right one
    for row in rows:
        problem = TASK.problem_from_row(row)
        assert row["prompt"] == format_prompt(problem)
        assert TASK.check(problem, row["chosen"], mode="strict").correct
        assert not TASK.check(problem, row["rejected"], mode="strict").correct
    assert (rows[0]["chosen"], rows[0]["rejected"]) == ("5+3=8\n" + GOAL, "5-3=2\n" + GOAL)


def test_make_pairs_spreads_the_responses():
    assert make_pairs(["a", "b"], ["x", "y", "z"], 3) == [("a", "x"), ("b", "y"), ("a", "y")]
    assert len(set(make_pairs(["a", "b"], ["x", "y", "z"], 100))) == 6
    assert make_pairs(["a"], [], 4) == []
