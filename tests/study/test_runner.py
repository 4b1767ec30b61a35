"""The runner's sequencing, on fake stages: finished stages are skipped, an interrupted stage is redone from scratch,
a stage that did not write its outputs is refused; and the study's one-line error exit."""

import json
import signal
import time
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict

from backtrack_trl.data.hub_layout import write_hub_dataset
from backtrack_trl.study import runner
from backtrack_trl.study.config import SelfImproveArguments
from backtrack_trl.study.runner import Study, main, run_stage
from backtrack_trl.study.stages.base import Stage
from backtrack_trl.study.state import StudyState


ROOT = Path(__file__).resolve().parents[2]


def _writer(name: str, outputs: list[Path], ran: list[str], write: bool = True) -> Stage:
    def run():
        ran.append(name)
        for path in outputs if write else []:
            assert not path.exists(), "an output of the last try was left in place"
            path.write_text(name)

    return Stage(name, run, tuple(outputs))


@pytest.fixture
def state(tmp_path):
    return StudyState.open(tmp_path / "study", {"seed": 0})


def test_finished_stages_are_skipped(state, tmp_path, caplog):
    ran = []
    stages = [_writer(name, [tmp_path / f"{name}.txt"], ran) for name in ("one", "two")]
    for stage in stages:
        run_stage(stage, state, time.time())
    assert ran == ["one", "two"] and state.is_done("one") and state.is_done("two")
    reopened = StudyState.open(tmp_path / "study", {"seed": 0})  # a second run of the same study
    with caplog.at_level("INFO", logger="backtrack_trl"):
        for stage in stages:
            run_stage(stage, reopened, time.time())
    assert ran == ["one", "two"] and "[two] already done, skipping" in caplog.text


def test_an_interrupted_stage_is_redone_after_its_outputs_are_cleared(state, tmp_path, capsys):
    half = tmp_path / "model"
    half.mkdir()
    (half / "partial.bin").write_text("x")  # left by a killed run: the stage was never recorded
    ran = []
    folder_stage = Stage("sft", lambda: ran.append(half.exists()) or half.mkdir(), (half,))
    run_stage(folder_stage, state, time.time())
    assert ran == [False] and half.is_dir() and state.is_done("sft")  # the folder was removed before the stage ran
    assert "stage sft (study time so far" in capsys.readouterr().out
    (tmp_path / "file.txt").write_text("stale")
    run_stage(_writer("file", [tmp_path / "file.txt"], ran), state, time.time())
    assert (tmp_path / "file.txt").read_text() == "file"
    # a recorded stage whose output is gone runs again
    (tmp_path / "file.txt").unlink()
    run_stage(_writer("file", [tmp_path / "file.txt"], ran), state, time.time())
    assert ran[-2:] == ["file", "file"]


def test_a_stage_that_did_not_write_its_outputs_is_refused(state, tmp_path):
    with pytest.raises(RuntimeError, match=r"Stage lazy finished without writing \['.*out.txt'\]"):
        run_stage(_writer("lazy", [tmp_path / "out.txt"], [], write=False), state, time.time())
    assert not state.is_done("lazy")


def test_stop_after_hook_exits_once_the_stage_is_recorded(state, tmp_path, monkeypatch):
    monkeypatch.setenv("BACKTRACK_TRL_STOP_AFTER", "one")
    with pytest.raises(SystemExit, match=r"stopping after one \(BACKTRACK_TRL_STOP_AFTER\)"):
        run_stage(_writer("one", [tmp_path / "one.txt"], []), state, time.time())
    assert state.is_done("one")
    run_stage(_writer("two", [tmp_path / "two.txt"], []), state, time.time())  # another stage goes on


def test_a_finished_stage_whose_dataset_config_is_gone_runs_again(state, tmp_path):
    folder, ran = tmp_path / "round_datasets", []
    write_hub_dataset(DatasetDict({"train": Dataset.from_dict({"x": [1]})}), folder, config_name="round_1")
    stages = [
        Stage(f"round_{k}_search", lambda k=k: ran.append(k) or (tmp_path / f"{k}.json").write_text("{}"),
              (tmp_path / f"{k}.json",), dataset_config=(folder, f"round_{k}"))
        for k in (1, 2)
    ]  # fmt: skip
    for stage in stages:
        run_stage(stage, state, time.time())
    for stage in stages:  # round_2's config was never written (as if deleted by hand): redone; round_1's is there
        run_stage(stage, state, time.time())
    assert ran == [1, 2, 2]


def test_study_runs_its_stages_then_writes_the_report_and_timings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    config = yaml.safe_load((ROOT / "recipes/countdown-tiny/self_improve/config_default.yaml").read_text())
    study = Study(SelfImproveArguments(**{**config, "output_dir": str(tmp_path / "study"), "rounds": 0}))
    try:
        ran = []
        report = study.run([_writer("only", [tmp_path / "only.txt"], ran)])
    finally:
        study.close()
    assert ran == ["only"] and report == tmp_path / "study" / "report" / "report.md"
    assert sorted(json.loads((tmp_path / "study" / "timings.json").read_text())) == ["only", "report"]
    assert "\nStudy finished: " in capsys.readouterr().out


def test_main_prints_one_error_line_or_the_resume_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main's SIGTERM handler: not in the test process
    args = SelfImproveArguments(output_dir=str(tmp_path / "study"), recipes_dir=str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith("\nerror: --recipes_dir '")

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_run_study", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "\ninterrupted: rerun the same command to resume from the last finished stage.\n"
