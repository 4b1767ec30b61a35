"""The study folder layout: one place for every path the stages write."""

from pathlib import Path

from backtrack_trl.study.layout import StudyLayout


def test_paths_of_a_study_folder():
    layout = StudyLayout("out")
    assert layout.data_dir("backtrack") == Path("out/data/backtrack")
    assert layout.model_dir("optimal-sft") == Path("out/models/optimal-sft")
    assert layout.eval_dir("dpo") == Path("out/eval/dpo")
    assert layout.round_dir(2) == Path("out/rounds/round_2")
    assert layout.control_dir() == Path("out/rounds/control_1")
    assert layout.round_datasets() == Path("out/round_datasets")
    assert layout.log_file("round_1_sft") == Path("out/logs/round_1_sft.log")
    assert layout.report_dir() == Path("out/report")


def test_round_models_chain_from_the_backtrack_model():
    layout = StudyLayout("out")
    assert layout.round_model(0) == Path("out/models/backtrack-sft")
    assert layout.round_model(3) == Path("out/rounds/round_3/model")
    given = StudyLayout("out", backtrack_model="org/trained-model")  # round 0 = an already trained model
    assert given.round_model(0) == "org/trained-model" and given.round_model(1) == Path("out/rounds/round_1/model")
