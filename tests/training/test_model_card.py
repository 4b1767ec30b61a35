"""backtrack_trl.training.model_card: the SFT card is a template shipped as package data, its task parts from the
task plug-in."""

from types import SimpleNamespace

import pytest
from trl import ModelConfig, SFTConfig

from backtrack_trl.tasks import get_task
from backtrack_trl.tasks.countdown import CountdownTask
from backtrack_trl.training.model_card import card_task_fields, model_card_template
from backtrack_trl.training.sft import BacktrackSFTTrainer
from backtrack_trl.training.sft_config import SFTScriptArguments


def _render(tmp_path, task="countdown", use_peft=False, train_rows=None) -> str:
    """``create_model_card`` on a stand-in trainer (the attributes the card reads), without training anything."""
    args = SFTConfig(str(tmp_path / "model"), use_cpu=True, bf16=False, max_steps=20)
    fake = SimpleNamespace(
        args=args,
        script_args=SFTScriptArguments(dataset_name="data/countdown-tiny/backtrack", task=task),
        model_args=ModelConfig(model_name_or_path="models/countdown-tiny/init", use_peft=use_peft),
        is_world_process_zero=lambda: True,
        state=SimpleNamespace(log_history=[{"loss": 1.5}, {"loss": 0.25}], global_step=20),
        train_dataset=train_rows if train_rows is not None else [{"numbers": [1, 2, 3], "target": 6}] * 5,
        processing_class=SimpleNamespace(convert_tokens_to_ids=lambda token: 3),
    )
    BacktrackSFTTrainer.create_model_card(fake)
    return (tmp_path / "model" / "README.md").read_text(encoding="utf-8")


def test_template_is_package_data_with_every_field_filled(tmp_path):
    assert "${task_text}" in model_card_template().template
    card = _render(tmp_path)
    assert "${" not in card and "$" not in card
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["README.md"]  # written atomically, nothing left


def test_countdown_card_reads_as_before(tmp_path):
    card = _render(tmp_path)
    for text in (
        "- self-backtracking\n- countdown\n---\n",
        "A Countdown reasoning model fine-tuned with **backtrack-masked SFT**",
        "It was trained on optimal solutions and backtrack examples",
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "from backtrack_trl.decoding import SelfBacktrackingDecoder\n"
        "from backtrack_trl.tasks.countdown.format import Problem\n\n",
        "decoder = SelfBacktrackingDecoder(model, tokenizer, n=32, b=1)\n"
        "print(decoder.solve([Problem(numbers=(2, 39, 45, 10), target=62)]))\n",
        get_task("countdown").card_text(),
        "Prompt format: `###Question: numbers [2, 39, 45, 10]->target 62\\n###Response:\\n`",
        "`<backtrack>` (one special token, id 3) right after a wrong step",
        "```text\n45-39=6\n10*6=60\n60+2=62\nGoal Reached!\n```",
        "- Dataset: `data/countdown-tiny/backtrack` (split `train`, 5 rows)",
        "- Final training loss: 0.2500 after 20 steps.",
        "@inproceedings{yang2025selfbacktracking,\n  title     = {Step Back to Leap Forward:",
    ):
        assert text in card, text
    assert "AutoPeftModelForCausalLM" in _render(tmp_path, use_peft=True)


def test_another_task_fills_the_card_from_its_plug_in():
    class Renamed(CountdownTask):
        name = "my_countdown"

        def card_text(self):
            return "My task: a paragraph of its own."

    rows = [{"numbers": [3, 5, 2], "target": 16}, {"numbers": [1, 2, 3], "target": 6}]
    fields = card_task_fields(Renamed(), rows)
    assert fields["task_text"] == "My task: a paragraph of its own."
    assert fields["task_title"] == "My countdown" and fields["task_tag"] == "my_countdown"
    assert fields["task_option"] == ", task='my_countdown'"
    assert fields["prompt"] == "###Question: numbers [3, 5, 2]->target 16\\n###Response:\\n"  # the first row
    assert Renamed().check(Renamed().parse_prompt("###Question: numbers [3, 5, 2]->target 16\n###Response:\n"),
                           fields["answer"]).correct  # fmt: skip


def test_unknown_task_is_refused_before_training():
    from backtrack_trl.training.sft import train

    with pytest.raises(ValueError, match="Unknown task 'nope'"):
        train(SFTScriptArguments(dataset_name="x", task="nope"), SFTConfig("out", use_cpu=True), ModelConfig("m"))
