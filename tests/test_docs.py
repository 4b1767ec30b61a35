"""The documentation stays true to the repository: a short README, links that resolve, and every recipe file and make
target the docs mention exists."""

import re
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted([README, *(ROOT / "docs").glob("*.md"), *(ROOT / "recipes").rglob("README.md")])

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
RECIPE_FILE = re.compile(r"(?<![\w/.-])recipes/[\w.-]+(?:/[\w.-]+)*\.(?:yaml|py)")
MAKE = re.compile(r"(?:^|[\s;&(|])make\s+([^\n#;&|)\\]*)", re.M)


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _code(text: str) -> str:
    """The text of every fenced block and inline code span: where commands are written."""
    fenced = FENCE.findall(text)
    rest = FENCE.sub("", text)
    return "\n".join([*fenced, *SPAN.findall(rest)])


def _make_targets() -> set:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z][\w.-]*(?:\s+[A-Za-z][\w.-]*)*)\s*:(?!=)", line)
        if match:
            targets.update(match.group(1).split())
    return targets


def test_the_pages_exist():
    names = {_rel(page) for page in PAGES}
    assert {"README.md", "docs/results.md", "docs/tasks.md", "docs/decoding.md", "docs/study.md"} <= names
    assert "recipes/countdown-tiny/README.md" in names


def test_readme_is_at_most_250_lines():
    assert len(README.read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_relative_links_point_to_existing_files(page):
    missing = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert not missing, f"{_rel(page)} links to missing files: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_recipe_files_mentioned_exist(page):
    missing = sorted({m for m in RECIPE_FILE.findall(page.read_text()) if not (ROOT / m).is_file()})
    assert not missing, f"{_rel(page)} names recipe files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_make_targets_mentioned_exist(page):
    targets = _make_targets()
    unknown = set()
    for args in MAKE.findall(_code(page.read_text())):
        for word in args.split():
            if "=" in word or word.startswith("-"):
                continue  # a variable (CONFIG=...) or a flag
            if not re.fullmatch(r"[a-z][\w-]*", word):
                break
            if word not in targets:
                unknown.add(word)
    assert not unknown, f"{_rel(page)} mentions make targets the Makefile lacks: {sorted(unknown)}"


def test_the_checks_catch_what_they_guard():
    assert {"self-improve", "test", "data", "init-model", "vllm-serve"} <= _make_targets()
    words = MAKE.findall(_code("Run `make data init-model DATA_ARGS=--overwrite` and\n```bash\nmake selfimprove\n```"))
    assert [w for args in words for w in args.split()] == [
        "selfimprove",
        "data",
        "init-model",
        "DATA_ARGS=--overwrite",
    ]
    assert RECIPE_FILE.findall("see recipes/countdown-tiny/sft/config_x.yaml, not tests/recipes/test_x.py.") == [
        "recipes/countdown-tiny/sft/config_x.yaml"
    ]
