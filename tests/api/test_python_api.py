"""The Python API as the README shows it: `import weightlift; weightlift.pull(...)`."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

import pytest

import weightlift
from tests.api.conftest import Served


def test_readme_example(served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                        ) -> None:
    # The README's example, with this test's manifest and output folder.
    report = weightlift.pull(str(served.manifest), tmp_path / "model",
                             expect_params=served.gen.params)
    assert report.ok
    assert report.exit_code == 0
    assert report.params == report.expected_params == served.gen.params
    assert {f.rel: f.size for f in report.files} == {r: len(d) for r, d in served.files.items()}
    assert all(re.fullmatch(r"[0-9a-f]{64}", f.sha256 or "") for f in report.files)
    assert report.source == str(served.manifest)
    assert report.model_id == "tiny-model"
    assert report.totals.bytes == sum(map(len, served.files.values()))
    check = weightlift.verify(tmp_path / "model")
    assert check.ok
    assert check.params == served.gen.params
    assert check.problems == []
    assert check.hashes_checked
    assert check.params_checked
    assert check.model_id == "tiny-model"
    assert check.source == str(served.manifest)
    # Nothing printed without progress=True.
    assert capsys.readouterr() == ("", "")


def test_no_logging_handler_installed_and_loggers_under_weightlift(served: Served,
                                                                   tmp_path: Path) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    weightlift.pull(served.manifest, str(tmp_path / "m"))  # os.PathLike source, str out_dir
    assert root.handlers == before
    ours = [name for name in logging.Logger.manager.loggerDict
            if name.startswith(("weightlift", "api", "downloader", "cli", "verify"))]
    assert ours
    assert all(name.startswith("weightlift.") or name == "weightlift" for name in ours)


def test_wrong_count_is_returned_not_raised(served: Served, tmp_path: Path) -> None:
    report = weightlift.pull(served.manifest, tmp_path / "m", expect_params=served.gen.params + 1)
    assert not report.ok
    assert report.exit_code == 1
    assert report.params == served.gen.params
    assert report.problems
    assert "does not match the expected" in report.problems[0]
    check = weightlift.verify(tmp_path / "m", expect_params=served.gen.params + 1)
    assert not check.ok
    assert check.exit_code == 1
    assert len(check.problems) == 1


def test_errors_carry_exit_codes(served: Served, tmp_path: Path) -> None:
    from weightlift.emulator.faults import Fault

    with pytest.raises(weightlift.UsageError) as bad:
        weightlift.pull("axon://models/x", tmp_path / "x")
    assert bad.value.exit_code == 2
    assert "axom://" in bad.value.one_line()
    with pytest.raises(weightlift.WeightliftError) as missing:
        weightlift.verify(tmp_path / "nope")
    assert missing.value.exit_code == 2
    rel = sorted(served.files)[0]
    served.storage.emu.inject(rel, Fault.status(500), times=10_000)
    with pytest.raises(weightlift.TransferFailed) as failed:
        weightlift.pull(served.manifest, tmp_path / "t",
                        env={"WEIGHTLIFT_RETRY_BASE": "0.001"})
    assert failed.value.exit_code == 3
    assert rel in str(failed.value)
    assert issubclass(weightlift.TransferFailed, weightlift.WeightliftError)
    assert (weightlift.VerificationFailed.exit_code, weightlift.PlatformError.exit_code,
            weightlift.BadManifest.exit_code) == (1, 4, 2)


async def test_pull_async_in_a_running_loop(served: Served, tmp_path: Path) -> None:
    report = await weightlift.pull_async([str(served.manifest)], tmp_path / "m",
                                         include="*.safetensors*", verify=True)
    assert report.ok
    assert {f.rel for f in report.files} == {
        r for r in served.files if ".safetensors" in r}
    # The blocking form says what to use instead of failing deep inside asyncio.
    with pytest.raises(weightlift.UsageError) as inside:
        weightlift.pull(served.manifest, tmp_path / "m2")
    assert "await weightlift.pull_async(...)" in inside.value.one_line()
    await asyncio.sleep(0)


def test_verify_is_callable_and_still_the_subpackage(served: Served, tmp_path: Path) -> None:
    import weightlift.verify.deep as deep_mod  # the subpackage of the same name, as before
    from weightlift.verify.header import parse_header

    assert callable(deep_mod.scan_file)
    assert callable(parse_header)
    weightlift.pull(served.manifest, tmp_path / "m")
    assert weightlift.verify(tmp_path / "m").ok


def test_version_and_exports() -> None:
    from importlib.metadata import version

    assert weightlift.__version__ == version("weightlift")
    for name in weightlift.__all__:
        assert getattr(weightlift, name) is not None, name
    with pytest.raises(AttributeError):
        weightlift.no_such_name  # noqa: B018


def test_progress_true_shows_the_clis_output_on_stderr(served: Served, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    report = weightlift.pull(served.manifest, tmp_path / "m", progress=True)
    assert report.ok
    out, err = capsys.readouterr()
    assert out == ""
    assert "pulling 4 file(s)" in err  # not a terminal here: plain lines instead of bars
    assert f"verified: {served.gen.params:,} parameters" in err


def test_dry_run_returns_the_plan_or_raises_diskfull(served: Served, tmp_path: Path) -> None:
    plan = weightlift.pull(served.manifest, tmp_path / "m", dry_run=True)
    assert plan.dry_run
    assert plan.disk is not None
    assert plan.disk.fits
    assert {f.status for f in plan.files} == {"to-fetch"}
    assert not (tmp_path / "m").exists()
    big = tmp_path / "big.json"
    doc = served.storage.manifest(sorted(served.files))
    doc["files"][0]["size"] = 1 << 60
    big.write_text(json.dumps(doc))
    with pytest.raises(weightlift.DiskFull) as full:
        weightlift.pull(big, tmp_path / "m", dry_run=True)
    assert full.value.exit_code == 3
