"""The README's two set-up commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("python3 -m venv")]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    demo, tests = _commands()
    assert "trajkit.demo" in demo and "pytest" in tests
    assert "pip install torch==2.13.0" in demo and "pip install torch==2.13.0" in tests
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "CI must run the README's test command verbatim"
