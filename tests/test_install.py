"""A non-editable install works on its own: the package (with its model card template) is imported from the venv's
site-packages, not from src/, and a recipe runs from a folder outside the repository.

The fresh venv reuses the dependencies of the running environment (a ``.pth`` line adds its site-packages after the
venv's own), so nothing is downloaded: ``pip install --no-deps --no-build-isolation`` of a copy of the source.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
BUILD_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "LICENSE")


def _run(cmd, cwd, env, timeout=600) -> str:
    """stdout and stderr of ``cmd``, which must succeed."""
    result = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout)  # fmt: skip
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, folder outside the repository with a copy of recipes/, environment)."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy: an in-tree build would write build/ and *.egg-info into the repository
    source.mkdir()
    for name in BUILD_FILES:
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    shutil.copytree(ROOT / "recipes", root / "recipes", ignore=ignore)

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, env).strip()
    Path(site, "_test_install_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co, after
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
          "--no-build-isolation", "--no-index", str(source)], root, env)  # fmt: skip
    work = root / "work"
    work.mkdir()
    return python, Path(site), root, work, env


@pytest.mark.slow
def test_package_and_template_come_from_site_packages(installed):
    python, site, _, work, env = installed
    code = (
        "import backtrack_trl, backtrack_trl.training.model_card as t; from importlib import resources; "
        "print(backtrack_trl.__file__); "
        "print(resources.files('backtrack_trl').joinpath(t.MODEL_CARD_TEMPLATE)); "
        "print(t.card_task_fields('countdown')['prompt']); "
        "print('${task_text}' in t.model_card_template().template)"
    )
    package, template, prompt, found = _run([str(python), "-c", code], work, env).strip().splitlines()[-4:]
    assert Path(package).is_relative_to(site) and not Path(package).is_relative_to(ROOT)
    assert Path(template).is_relative_to(site) and Path(template).is_file() and found == "True"
    assert prompt == "###Question: numbers [2, 39, 45, 10]->target 62\\n###Response:\\n"


@pytest.mark.slow
def test_recipe_runs_outside_the_repository(installed):
    python, _, root, work, env = installed
    recipes = root / "recipes"
    config = recipes / "countdown-tiny" / "init_model.yaml"
    out = _run([str(python), str(recipes / "init_model.py"), "--config", str(config), "--output_dir", "models/init"],
               work, env)  # fmt: skip
    assert "<backtrack> id" in out
    saved = {p.name for p in (work / "models" / "init").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= saved

    # The study finds its sub-recipes through --recipes_dir (no source tree to fall back on): one clear error.
    result = subprocess.run(
        [str(python), str(recipes / "self_improve.py"), "--config",
         str(recipes / "countdown-tiny" / "self_improve" / "config_default.yaml"), "--output_dir", "study",
         "--recipes_dir", "nowhere"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert "error: --recipes_dir 'nowhere': no such folder" in result.stderr
    assert not (work / "study").exists()
