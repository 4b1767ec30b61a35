"""bench/bench_decoding.py's --device option: CPU by default, a GPU on request, one clear error for a bad device."""

import importlib.util
from pathlib import Path

import pytest
import torch


BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_decoding.py"
TINY = ["--problems", "2", "--throughput_problems", "2", "--ns", "2", "--repeats", "1", "--max_length", "30",
        "--max_new_tokens", "6"]  # fmt: skip


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_decoding", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(bench, tmp_path, *extra) -> str:
    output = tmp_path / "bench.md"
    bench.main([*TINY, "--output", str(output), *extra])
    return output.read_text()


def test_runs_on_cpu_by_default(bench, tmp_path):
    text = run_bench(bench, tmp_path)
    assert "Device: cpu." in text
    decoder_rows = [line for line in text.splitlines() if line.startswith("| ") and " | 2 | " in line]
    assert len(decoder_rows) == 3  # ours, ours with the released options, the released decoder (N=2)
    assert "| our search loop (b=0" in text


@pytest.mark.parametrize("option", ["gpu0", "cuda:x"])
def test_bad_device_is_one_clear_error(bench, option):
    with pytest.raises(SystemExit, match=f"--device '{option}' is not a device: use cpu, cuda"):
        bench.check_device(option)


def test_cpu_only_devices(bench):
    with pytest.raises(SystemExit, match="--device 'meta': this benchmark runs on cpu or cuda only"):
        bench.check_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu_names_the_fix(bench):
    with pytest.raises(SystemExit, match="--device 'cuda': no CUDA GPU is visible .*use cpu"):
        bench.check_device("cuda")
    assert bench.check_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_the_gpu(bench, tmp_path):
    text = run_bench(bench, tmp_path, "--device", "cuda")
    assert f"Device: cuda ({torch.cuda.get_device_name(0)})." in text
    assert "| released decoder (faithful re-implementation) | 2 |" in text
