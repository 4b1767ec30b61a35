"""backtrack_trl.training.task_check: the recipe's task must be the dataset's (its prompts) and the model's (its card
tags or task tokenizer)."""

import pytest
from _training_utils import char_tokenizer

from backtrack_trl.tasks.sudoku.format import EXAMPLE_PROMPT as SUDOKU_PROMPT
from backtrack_trl.tasks.tokenizer import build_task_tokenizer
from backtrack_trl.training.task_check import check_dataset_task, check_model_task, dataset_task, model_task


COUNTDOWN_PROMPT = "###Question: numbers [2, 39, 45, 10]->target 62\n###Response:\n"


def test_the_dataset_task_is_read_from_its_prompts():
    assert dataset_task({"prompt": COUNTDOWN_PROMPT}) == "countdown"
    assert dataset_task({"prompt": SUDOKU_PROMPT}) == "sudoku"
    assert dataset_task({"prompt": "Translate to French:"}) is None and dataset_task({"text": "x"}) is None


def test_a_dataset_of_another_task_is_refused_with_the_fix():
    check_dataset_task("countdown", {"prompt": COUNTDOWN_PROMPT}, "data/cd")
    check_dataset_task("sudoku", {"prompt": SUDOKU_PROMPT}, "data/sd")
    check_dataset_task("countdown", None, "data/empty")  # nothing to read: the loaders report an empty split
    with pytest.raises(ValueError) as error:
        check_dataset_task("countdown", {"prompt": SUDOKU_PROMPT}, "data/sudoku-tiny/backtrack")
    message = str(error.value)
    assert message.startswith("--dataset_name 'data/sudoku-tiny/backtrack' holds sudoku problems")
    assert "but --task is 'countdown'" in message and "Set `task: sudoku`" in message
    with pytest.raises(ValueError, match=r"--preference_dataset 'p' is not a sudoku dataset: its prompts .* are in "
                       r"no registered task's format"):  # fmt: skip
        check_dataset_task("sudoku", {"prompt": "Translate to French:"}, "p", option="preference_dataset")


def test_the_model_task_is_read_from_its_card_or_its_task_tokenizer(tmp_path):
    card = "---\nlibrary_name: transformers\ntags:\n- trl\n- sft\n- self-backtracking\n- sudoku\n---\n# m\n"
    (tmp_path / "README.md").write_text(card)
    assert model_task(str(tmp_path)) == ("sudoku", f"the tags of its model card {str(tmp_path / 'README.md')!r}")
    assert model_task(None, build_task_tokenizer("countdown"))[0] == "countdown"
    assert model_task(None, build_task_tokenizer("sudoku", numbers=True))[0] == "sudoku"
    # A tokenizer that spells everything by characters (or a pretrained one) names no task.
    assert model_task(None, char_tokenizer()) is None and model_task("org/hub-model") is None
    with pytest.raises(ValueError, match=r"--model_name_or_path '.*' is a sudoku model \(the tags of its model card"
                       r".*but --task is 'countdown'\. Start from a countdown model"):  # fmt: skip
        check_model_task("countdown", str(tmp_path))
    check_model_task("sudoku", str(tmp_path))
    with pytest.raises(ValueError, match=r"is a countdown model \(its tokenizer, the countdown task tokenizer"):
        check_model_task("sudoku", "models/init", build_task_tokenizer("countdown"))
