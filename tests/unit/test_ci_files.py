"""The CI files in ci/ are valid for their CI and only call what exists: make targets and klab commands.

Every `make TARGET` must be a Makefile target, and every `klab ...` line must
parse with lab.cli.parser() (CI expressions and shell variables stand in as
placeholder words), so renaming a command or an option breaks this test, not CI.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import cli
from lab.cli import ci_cmds
from lab.paths import REPO_ROOT
from lab.run import matrix

GITHUB = REPO_ROOT / "ci" / "github-actions.yml"
GITLAB = REPO_ROOT / "ci" / "gitlab-ci.yml"

# GitLab keywords (docs.gitlab.com/ee/ci/yaml): a typo'd key is silently a job or an error there.
GITLAB_JOB_KEYS = {
    "after_script", "allow_failure", "artifacts", "before_script", "cache", "coverage", "dependencies",
    "environment", "extends", "id_tokens", "image", "inherit", "interruptible", "needs", "parallel",
    "release", "resource_group", "retry", "rules", "script", "secrets", "services", "stage", "tags",
    "timeout", "trigger", "variables", "when",
}  # fmt: skip
GITLAB_GLOBAL_KEYS = {"default", "include", "stages", "variables", "workflow"}
GITHUB_JOB_KEYS = {
    "name", "needs", "runs-on", "container", "services", "outputs", "env", "steps", "strategy", "if",
    "timeout-minutes", "permissions", "environment", "concurrency", "defaults", "continue-on-error",
}  # fmt: skip
GITHUB_STEP_KEYS = {"name", "id", "if", "uses", "run", "with", "env", "shell", "working-directory", "continue-on-error"}
GITHUB_STEP_KEYS |= {"timeout-minutes"}

_KLAB = re.compile(r"(?:\.venv/bin/|^|\s)klab\s+([^\n|;&>)]*)")
# `make` as a command (line start, after && ; or `then`), not as a package name in an apt-get line.
_MAKE = re.compile(r"(?:^|&&|;|\bthen)\s*make((?:[ \t]+[a-z][\w-]*)+)", re.MULTILINE)
_EXPR = re.compile(r"\$\{\{[^}]*\}\}|\"\$\{?\w+\}?\"|\$\{?\w+\}?")


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.load(path.read_text(), Loader=yaml.BaseLoader)  # BaseLoader: GitHub's `on:` stays a string key
    assert isinstance(doc, dict), path
    return doc


def _shell_texts(node: Any) -> list[str]:
    """Every run:/script: string in a workflow, wherever it sits."""
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("run", "script", "before_script", "after_script"):
                out += [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
            else:
                out += _shell_texts(value)
    elif isinstance(node, list):
        for item in node:
            out += _shell_texts(item)
    return out


def _klab_commands(text: str) -> list[list[str]]:
    commands = []
    for match in _KLAB.finditer(text):
        words = shlex.split(_EXPR.sub("X", match.group(1)).replace("'", ""), comments=True)
        commands.append([w for w in words if w != "\\"])
    return commands


def _makefile_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.MULTILINE))


def _all_texts() -> list[tuple[str, str]]:
    return [(path.name, text) for path in (GITHUB, GITLAB) for text in _shell_texts(_load(path))]


def test_github_workflow_schema() -> None:
    doc = _load(GITHUB)
    assert {"name", "on", "jobs"} <= set(doc)
    jobs = doc["jobs"]
    assert set(jobs) == {"matrix", "cell", "merge"}
    for name, job in jobs.items():
        assert set(job) <= GITHUB_JOB_KEYS, (name, set(job) - GITHUB_JOB_KEYS)
        assert job["runs-on"] and job["steps"], name
        for step in job["steps"]:
            assert set(step) <= GITHUB_STEP_KEYS, (name, step)
            assert ("uses" in step) != ("run" in step), (name, step)
    cell = jobs["cell"]
    assert cell["needs"] == "matrix"
    assert cell["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.cells) }}"
    assert cell["strategy"]["fail-fast"] == "false"
    assert "always()" in jobs["merge"]["if"] and jobs["merge"]["needs"] == ["matrix", "cell"]


def test_github_keeps_reports_even_on_failure() -> None:
    steps = _load(GITHUB)["jobs"]["cell"]["steps"]
    by_use = {s.get("uses", "").split("@")[0]: s for s in steps if "uses" in s}
    for action in ("actions/upload-artifact", "mikepenz/action-junit-report"):
        assert by_use[action].get("if") == "always()", action
    assert "actions/cache/restore" in by_use
    assert any("udev" in s.get("run", "") and "kvm" in s.get("run", "") for s in steps)
    assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") and s.get("if") == "always()" for s in steps)
    paths = by_use["actions/upload-artifact"]["with"]["path"]
    for name in ("results.json", "junit.xml", "console-*.log", "report.html", "compare.txt"):
        assert name in paths


def test_gitlab_schema() -> None:
    doc = _load(GITLAB)
    assert doc["stages"] == list(ci_cmds.GITLAB_STAGES)
    for name, job in doc.items():
        if name in GITLAB_GLOBAL_KEYS:
            continue
        assert isinstance(job, dict), name
        assert set(job) <= GITLAB_JOB_KEYS, (name, set(job) - GITLAB_JOB_KEYS)
        if not name.startswith("."):
            assert job["stage"] in doc["stages"], name
            assert "script" in job or "trigger" in job or "script" in doc.get(job.get("extends", ""), {}), name
    cell = doc[".klab-cell"]
    assert cell["artifacts"]["when"] == "always" and "junit" in cell["artifacts"]["reports"]
    assert cell["cache"]["paths"] == [".klab-cache/", ".apt-cache/"]
    assert doc["cells"]["trigger"]["include"] == [{"artifact": "cells.yml", "job": "matrix"}]


def test_gitlab_child_pipeline_resolves_against_the_file_it_includes() -> None:
    parent = _load(GITLAB)
    child = yaml.safe_load(ci_cmds.gitlab_child(matrix.load(REPO_ROOT / "lab.yaml")))
    assert child["include"] == [{"local": "ci/gitlab-ci.yml"}]
    assert child["stages"] == parent["stages"]
    for name, job in child.items():
        if name in GITLAB_GLOBAL_KEYS:
            continue
        assert set(job) <= GITLAB_JOB_KEYS, name
        assert job["extends"] in parent and job["stage"] in parent["stages"], name
    # The parent's own jobs must stay out of the child that includes them.
    for name in ("matrix", "cells"):
        assert parent[name]["rules"][0] == {"if": '$CI_PIPELINE_SOURCE == "parent_pipeline"', "when": "never"}


def test_every_make_target_exists() -> None:
    targets = _makefile_targets()
    used = {(f, t) for f, text in _all_texts() for m in _MAKE.finditer(text) for t in m.group(1).split()}
    assert {t for _, t in used} >= {"setup", "setup-python"}
    assert not {(f, t) for f, t in used if t not in targets}, sorted(targets)


def test_every_klab_command_parses() -> None:
    commands = [(f, argv) for f, text in _all_texts() for argv in _klab_commands(text)]
    assert {tuple(argv[:2]) for _, argv in commands} >= {("ci", "matrix"), ("ci", "run"), ("ci", "merge")}
    assert {f for f, argv in commands if argv[0] == "compare"} == {GITHUB.name, GITLAB.name}
    parser = cli.parser()
    for where, argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: `klab {shlex.join(argv)}` does not parse with lab.cli.parser()")


LAST_GREEN = ".klab-last-green/results.json"


def test_github_compares_with_the_cached_last_green_run() -> None:
    """Compare only when a green run is cached; keep this run's results.json only when it is green, in the cache."""
    steps = _load(GITHUB)["jobs"]["cell"]["steps"]
    names = [s.get("name", s.get("uses", "")) for s in steps]
    by_name = dict(zip(names, steps, strict=True))
    test, keep, save = (
        "Build, boot and test ${{ matrix.name }}",
        "Keep this run as the last green one",
        "Save the last green run",
    )
    assert names.index(test) < names.index(keep) < names.index(save)
    script = by_name[test]["run"]  # in the lab's container: its Python, no extra install
    ran, compared = script.index("klab ci run"), script.index("klab compare")
    assert ran < compared < script.index('exit "$status"')
    assert '--results "$3" || status=$?' in script  # a red run still gets compared, then fails the step
    assert f"if [ -f {LAST_GREEN} ]" in script[ran:compared]
    assert by_name[keep]["if"] == "success()" and by_name[save]["if"] == "success()"
    assert by_name[keep]["run"].endswith(f'cp "$RESULTS/results.json" {LAST_GREEN}')
    assert by_name[save]["with"]["path"] == ".klab-last-green"
    assert "compare.txt" in next(s["run"] for s in steps if s.get("name") == "Job summary")


def test_gitlab_compares_with_the_cached_last_green_run() -> None:
    cell = _load(GITLAB)[".klab-cell"]
    script = cell["script"]
    run = next(i for i, line in enumerate(script) if "klab ci run" in line)
    compare = next(i for i, line in enumerate(script) if "klab compare" in line)
    keep = next(i for i, line in enumerate(script) if "last-green" in line and "cp " in line)
    assert run < compare < keep < len(script) - 1 and script[-1] == 'exit "$status"'
    assert script[run].endswith("|| status=$?")  # a red run still gets compared, then fails the job
    assert script[compare].startswith('if [ -f "$KLAB_CACHE/last-green/results.json" ]')
    assert script[keep].startswith('if [ "$status" = 0 ]; then')
    assert _load(GITLAB)["variables"]["KLAB_CACHE"] == "$CI_PROJECT_DIR/.klab-cache"
    assert cell["cache"]["paths"] == [".klab-cache/", ".apt-cache/"] and cell["cache"]["when"] == "always"


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=lambda p: p.name)
def test_compare_needs_no_network(path: Path) -> None:
    texts = [t for t in _shell_texts(_load(path)) if "klab compare" in t]
    assert texts and not any(word in t for t in texts for word in ("curl", "wget", "gh ", "git fetch", "http"))


def test_github_lab_cache_is_keyed_by_content_not_by_run() -> None:
    """A run id in the key stores a new multi-GB entry every run; the content key reuses one, saved on a miss."""
    steps = _load(GITHUB)["jobs"]["cell"]["steps"]
    restore = next(s for s in steps if s.get("name") == "Restore the lab cache")
    save = next(s for s in steps if str(s.get("name", "")).startswith("Save the lab cache"))
    assert "run_id" not in restore["with"]["key"] and restore["with"]["key"] == save["with"]["key"]
    assert "hashFiles('lab.yaml'" in restore["with"]["key"]
    assert save["if"] == f"always() && steps.{restore['id']}.outputs.cache-hit != 'true'"
    assert ".apt-cache" in restore["with"]["path"] and ".apt-cache" in save["with"]["path"]


def test_cell_jobs_do_not_install_lava_and_keep_their_debs() -> None:
    github = next(s["run"] for s in _load(GITHUB)["jobs"]["cell"]["steps"] if "klab ci run" in s.get("run", ""))
    gitlab = _load(GITLAB)[".klab-cell"]["before_script"]
    for text in (github, "\n".join(gitlab)):
        assert "make setup WITH_LAVA=" in text and "rm -f /etc/apt/apt.conf.d/docker-clean" in text
    assert '-v "$PWD/.apt-cache:/var/cache/apt/archives"' in github
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "WITH_LAVA ?= $(CI)" in makefile and "$(if $(WITH_LAVA),setup-lava)" in makefile


def test_readme_says_how_to_install_the_workflows() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "cp ci/github-actions.yml .github/workflows/kernel-lab.yml" in readme
    assert "ci/gitlab-ci.yml" in readme


@pytest.mark.parametrize(
    ("path", "schema", "break_it"),
    [
        (GITHUB, "vendor.github-workflows", lambda doc: doc["jobs"][next(iter(doc["jobs"]))].pop("runs-on")),
        (GITLAB, "vendor.gitlab-ci", lambda doc: doc[next(k for k in doc if "script" in doc[k])].update(when="often")),
    ],
)
def test_the_published_schema_passes_the_file_and_catches_a_broken_one(
    tmp_path: Path, path: Path, schema: str, break_it: Any
) -> None:
    """`make lint` checks both files against their CI's schema, offline (check-jsonschema carries them)."""
    tool = [str(Path(sys.executable).with_name("check-jsonschema")), "--builtin-schema", schema]
    good = subprocess.run([*tool, str(path)], capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr
    doc = yaml.safe_load(path.read_text())
    break_it(doc)
    broken = tmp_path / path.name
    broken.write_text(yaml.safe_dump(doc))
    bad = subprocess.run([*tool, str(broken)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "Schema validation errors" in bad.stdout, bad.stdout + bad.stderr
