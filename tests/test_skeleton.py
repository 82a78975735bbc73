import subprocess
import sys


def test_cli_version_runs_as_installed_script():
    out = subprocess.run([sys.executable, "-m", "weightlift.cli", "--version"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("weightlift ")


def test_bad_arguments_are_one_line_and_exit_2():
    out = subprocess.run([sys.executable, "-m", "weightlift.cli", "pull"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
