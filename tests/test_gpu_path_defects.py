"""Issue 14: defects of the GPU code paths and of Llama-3-style tokenizers, each reproduced on CPU.

Every test here failed before its fix (or documents that an earlier fix already holds; see the issue's closing note).
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch


REPO = Path(__file__).resolve().parents[1]


# -- item 4: the study passes --num_processes; the GPU accelerate configs match the documented 4 GPUs ---------------
def _study_for_commands(tmp_path, **options):
    """A Study object with just what ``recipe()`` needs (building a real one checks every sub-config)."""
    from backtrack_trl.self_improve import SelfImproveArguments, Study

    study = Study.__new__(Study)
    study.args = SelfImproveArguments(output_dir=str(tmp_path), **options)
    study.python, study.recipes, study.out, study.lock_fds = "python", tmp_path, tmp_path, ()
    return study


def test_study_passes_num_processes_to_every_launch(tmp_path, monkeypatch):
    from backtrack_trl import self_improve

    commands = []
    monkeypatch.setattr(self_improve, "run_logged", lambda cmd, log, fds=(): commands.append(cmd))
    study = _study_for_commands(tmp_path, num_processes=4, eval_accelerate_config="accelerate_configs/ddp.yaml")
    study.recipe("sft.py", "c.yaml", {}, "sft", launch=True)
    study.recipe("evaluate_decoders.py", "e.yaml", {}, "eval", launch=True)
    study.recipe("build_dataset.py", "d.yaml", {}, "data")  # not launched: no accelerate options
    for cmd in commands[:2]:
        assert cmd[cmd.index("--num_processes") + 1] == "4"
        script = next(i for i, part in enumerate(cmd) if part.endswith(".py"))
        assert cmd.index("--num_processes") < script  # a launcher option, before the script
    assert "--num_processes" not in commands[2]
    commands.clear()
    _study_for_commands(tmp_path).recipe("sft.py", "c.yaml", {}, "sft", launch=True)  # unset: the config's count
    assert "--num_processes" not in commands[0]
    with pytest.raises(ValueError, match="num_processes"):
        _study_for_commands(tmp_path, num_processes=0)


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "fsdp"])
def test_gpu_accelerate_configs_match_the_documented_four_gpus(name):
    import yaml

    config = yaml.safe_load((REPO / "accelerate_configs" / f"{name}.yaml").read_text())
    # The Llama recipes: 16 per device x 4 GPUs = the paper's global batch of 64.
    assert config["num_processes"] == 4


# -- item 6: `--optimal_data_config None` disables the baseline; the harvest frees GPU memory -------------------------
def test_none_on_the_command_line_disables_an_optional_config():
    from trl import TrlParser

    from backtrack_trl.self_improve import SelfImproveArguments

    (args,) = TrlParser(SelfImproveArguments).parse_args_and_config(
        args=["--optimal_data_config", "None", "--optimal_sft_config", "none", "--init_model_config", "null"]
    )
    assert args.optimal_data_config is None and args.optimal_sft_config is None and args.init_model_config is None
    assert args.backtrack_data_config == SelfImproveArguments().backtrack_data_config  # required ones untouched


def test_harvest_frees_the_decoder_and_empties_the_cuda_cache(tmp_path, monkeypatch):
    import backtrack_trl.decoding as decoding
    from backtrack_trl.decoding.results import SearchResult
    from backtrack_trl.harvest import EmptyHarvestError, harvest

    alive, emptied = [], []

    class FakeDecoder:
        @classmethod
        def from_pretrained(cls, path, device=None, **options):
            decoder = cls()
            alive.append(weakref.ref(decoder))
            return decoder

        def solve(self, problems, progress=False):
            return [SearchResult(prompt="p", completion="", candidates=[]) for _ in problems]

    def empty_cache():
        gc.collect()
        emptied.append(alive[0]() is None)  # the decoder (and its model) is gone when the cache is emptied

    monkeypatch.setattr(decoding, "SelfBacktrackingDecoder", FakeDecoder)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    with pytest.raises(EmptyHarvestError):
        harvest(tmp_path / "model", [{"numbers": [3, 5, 2], "target": 16}], tmp_path / "rounds", "round_1", {"n": 2},
                progress=False)  # fmt: skip
    assert emptied == [True]


# -- item 3: the collator's counters survive DataLoader worker processes ----------------------------------------------
def test_collator_counters_survive_dataloader_workers():
    from _training_utils import sample_rows

    from backtrack_trl.collator import BacktrackMaskingCollator
    from backtrack_trl.tokenization import build_countdown_tokenizer

    rows = sample_rows(6)  # 12 rows
    # max_length=10 cuts every example inside its prompt: all are truncated and none has a trained token.
    collator = BacktrackMaskingCollator(build_countdown_tokenizer(), max_length=10)
    loader = torch.utils.data.DataLoader(rows, batch_size=4, num_workers=2, collate_fn=collator)
    assert sum(len(batch["input_ids"]) for batch in loader) == 12
    # The recipes' dataloader_num_workers: 2 ran the collator in the workers; the main process read 0 before.
    assert (collator.num_examples, collator.num_truncated, collator.num_untrained) == (12, 12, 12)
    collator([rows[0]])  # and in the main process, added to the same totals
    assert (collator.num_examples, collator.num_truncated, collator.num_untrained) == (13, 13, 13)
