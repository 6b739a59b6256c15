import subprocess
import sys


def test_cli_parser_builds_without_importing_torch():
    """Every `python -m deepwide ...` job (hundreds per study) starts without torch."""
    code = (
        "import sys, deepwide.cli as c\n"
        "c.build_parser()\n"
        "heavy = [m for m in ('torch', 'torchaudio', 's3prl', 'pandas', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_error_is_one_line_exit_2(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "deepwide", "export", "hf", str(tmp_path / "missing.pt"), str(tmp_path / "out")],
        capture_output=True, text=True,
    )
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and "missing.pt" in res.stderr
    assert "Traceback" not in res.stderr
