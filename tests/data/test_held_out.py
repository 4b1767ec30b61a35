"""backtrack_trl.data.held_out: the problem keys of a dataset's test splits (the test-leak guard)."""

from datasets import Dataset, DatasetDict

from backtrack_trl.data.held_out import test_problem_keys as held_out_keys
from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.tasks import get_task


TASK = get_task("countdown")


def test_the_keys_of_every_test_split_and_only_those(tmp_path):
    rows = lambda pairs: [{"numbers": n, "target": t} for n, t in pairs]  # noqa: E731
    dataset = DatasetDict(
        {
            "train": Dataset.from_list(rows([([1, 2], 3)])),
            "test_seen": Dataset.from_list(rows([([5, 3], 8), ([3, 5], 8)])),  # one problem: numbers are a multiset
            "test_new": Dataset.from_list(rows([([4, 4], 16)])),
        }
    )
    folder = write_hub_dataset(dataset, tmp_path / "data")
    key = lambda numbers, target: TASK.problem_key(TASK.problem_from_row({"numbers": numbers, "target": target}))  # noqa: E731
    assert held_out_keys(folder) == {key([5, 3], 8), key([4, 4], 16)}
    assert held_out_keys(str(folder), splits=("test_new", "test_other")) == {key([4, 4], 16)}
