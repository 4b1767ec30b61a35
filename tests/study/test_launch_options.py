"""The study's accelerate launches and the GPU accelerate configs: --num_processes reaches every launch, the
shipped GPU configs match the documented 4 GPUs, and `None` on the command line disables an optional config."""

from __future__ import annotations

from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]


def _study_for_commands(tmp_path, **options):
    """The study's sub-recipe launcher (building a real Study checks every sub-config)."""
    from backtrack_trl.study.commands import RecipeLauncher
    from backtrack_trl.study.config import SelfImproveArguments

    return RecipeLauncher.from_args(SelfImproveArguments(output_dir=str(tmp_path), **options), tmp_path, "python")


def test_study_passes_num_processes_to_every_launch(tmp_path, monkeypatch):
    from backtrack_trl.study import commands as self_improve

    commands = []
    monkeypatch.setattr(self_improve, "run_logged", lambda cmd, log, fds=(): commands.append(cmd))
    study = _study_for_commands(tmp_path, num_processes=4, eval_accelerate_config="accelerate_configs/ddp.yaml")
    study.run("sft.py", "c.yaml", {}, tmp_path / "sft.log", launch=True)
    study.run("evaluate_decoders.py", "e.yaml", {}, tmp_path / "eval.log", launch=True)
    study.run("build_dataset.py", "d.yaml", {}, tmp_path / "data.log")  # not launched: no accelerate options
    for cmd in commands[:2]:
        assert cmd[cmd.index("--num_processes") + 1] == "4"
        script = next(i for i, part in enumerate(cmd) if part.endswith(".py"))
        assert cmd.index("--num_processes") < script  # a launcher option, before the script
    assert "--num_processes" not in commands[2]
    commands.clear()
    # unset: the accelerate config's count
    _study_for_commands(tmp_path).run("sft.py", "c.yaml", {}, tmp_path / "sft.log", launch=True)
    assert "--num_processes" not in commands[0]
    with pytest.raises(ValueError, match="num_processes"):
        _study_for_commands(tmp_path, num_processes=0)


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "fsdp"])
def test_gpu_accelerate_configs_match_the_documented_four_gpus(name):
    import yaml

    config = yaml.safe_load((REPO / "accelerate_configs" / f"{name}.yaml").read_text())
    # The Llama recipes: 16 per device x 4 GPUs = the paper's global batch of 64.
    assert config["num_processes"] == 4


def test_none_on_the_command_line_disables_an_optional_config():
    from trl import TrlParser

    from backtrack_trl.study.config import SelfImproveArguments

    (args,) = TrlParser(SelfImproveArguments).parse_args_and_config(
        args=["--optimal_data_config", "None", "--optimal_sft_config", "none", "--init_model_config", "null"]
    )
    assert args.optimal_data_config is None and args.optimal_sft_config is None and args.init_model_config is None
    assert args.backtrack_data_config == SelfImproveArguments().backtrack_data_config  # required ones untouched
