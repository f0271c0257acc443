"""`klab report` and `klab compare` through lab.cli.main: outputs, exit codes, and the one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lab import cli
from lab.results import store, summary
from lab.results.model import Status
from lab.results.store import RunMeta
from tests.unit._results_data import cells


def results_dir(tmp_path: Path, name: str = "run", fix: bool = False) -> Path:
    """The golden cells as a results dir; `fix` makes every failing test pass (a later, better run)."""
    out = tmp_path / name
    out.mkdir()
    cs = cells()
    if fix:
        for cell in cs:
            for test in cell.tests:
                test.status = Status.PASS if test.status in (Status.FAIL, Status.ERROR) else test.status
    store.write(out / "results.json", cs, RunMeta(argv=("klab", "test")))
    return out


def klab(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_report_prints_the_summary_text_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = results_dir(tmp_path)
    code, out, _ = klab(capsys, "report", str(run))
    assert code == 0  # rendered: the run's own verdict was its exit status when it ran
    assert out == summary.table(store.load(run / "results.json").cells)


def test_report_markdown_and_results_json_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = results_dir(tmp_path)
    code, out, _ = klab(capsys, "report", str(run / "results.json"), "--format", "markdown")
    assert code == 0 and out == summary.markdown(store.load(run / "results.json").cells)


def test_report_html_writes_the_page_and_prints_no_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = results_dir(tmp_path)
    code, out, err = klab(capsys, "report", str(run), "--html", str(tmp_path / "page.html"))
    assert code == 0 and out == ""
    assert f"wrote {tmp_path / 'page.html'}" in err
    assert 'id="grid"' in (tmp_path / "page.html").read_text()
    code, out, _ = klab(capsys, "report", str(run), "--html", str(tmp_path), "--format", "text")
    assert code == 0 and out.startswith(summary.totals_line(cells()))
    assert (tmp_path / "report.html").is_file()  # a dir: report.html inside it


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "nowhere", "RESULTS_DIR: {d}/nowhere does not exist; give a results dir written by klab test"),
        (lambda d: d, "RESULTS_DIR: {d} has no results.json; give a results dir"),
        (
            lambda d: _write(d / "results.json", "{not json"),
            "{d}/results.json: not a kernel-lab results file: it is not JSON",
        ),
        (lambda d: _write(d / "results.json", '{"format": "other"}'), "not a kernel-lab results file"),
    ],
)
def test_report_refuses_a_missing_or_malformed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Path], message: str
) -> None:
    target = make(tmp_path)
    code, out, err = klab(capsys, "report", str(target))
    assert code == 2 and out == ""
    assert message.format(d=tmp_path) in err and len(err.strip().splitlines()) == 1


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_report_html_into_a_missing_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = klab(capsys, "report", str(results_dir(tmp_path)), "--html", str(tmp_path / "no" / "r.html"))
    assert code == 2 and "does not exist; create it" in err


def test_compare_exits_1_on_a_new_failure_and_0_on_fixes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad, good = results_dir(tmp_path, "bad"), results_dir(tmp_path, "good", fix=True)
    code, out, _ = klab(capsys, "compare", str(good), str(bad))
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith(f"compare {good} -> {bad}: 6 new failures")
    assert "  x86_64.6.12.default fsdemo.open_denied: PASS -> FAIL: open(/etc/passwd) errno" in out
    code, out, _ = klab(capsys, "compare", str(bad), str(good / "results.json"))
    assert code == 0 and "0 new failures, 6 fixed" in out.splitlines()[0]


def test_compare_threshold_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = results_dir(tmp_path)
    code, _, _ = klab(capsys, "compare", str(run), str(run), "--threshold", "10%")
    assert code == 0
    code, _, err = klab(capsys, "compare", str(run), str(run), "--threshold", "soon")
    assert code == 2 and "--threshold 'soon': give seconds" in err
    code, _, err = klab(capsys, "compare", str(tmp_path / "old"), str(run))
    assert code == 2 and "BASE_RESULTS:" in err and "does not exist" in err
    code, _, err = klab(capsys, "compare", str(run), str(tmp_path / "new"))
    assert code == 2 and "NEW_RESULTS:" in err


@pytest.mark.parametrize("command", ["report", "compare"])
def test_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    assert f"examples: klab {command} " in capsys.readouterr().out
