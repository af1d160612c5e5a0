"""The README's Python example runs as written (scaled down for speed)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs(capsys):
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    small = code.replace("n_vehicles=500", "n_vehicles=40").replace(
        "rounds, delta = 0.2, 30,", "rounds, delta = 0.2, 3,"
    )
    assert small != code
    exec(compile(small, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    accuracy, epsilon = float(printed[0]), float(printed[1])
    assert 0.0 <= accuracy <= 1.0
    assert 0.0 < epsilon <= 4.0
