"""`ppml pate`: a small successful run from flags, and bad input exiting with code 2 and one line."""

import json

import pytest
from typer.testing import CliRunner

from ppml.cli.main import app

runner = CliRunner()

SMALL = [
    "--data",
    "digits",
    "--teachers",
    "5",
    "--aggregator",
    "gnmax",
    "--queries",
    "60",
    "--set",
    "pate.sigma2=1.0",
    "--set",
    "pate.teacher_epochs=10",
    "--set",
    "pate.semi_supervised=false",
    "--set",
    "attack.membership=false",
    "--quiet",
]


def _err(result) -> str:
    return " ".join((result.stderr if hasattr(result, "stderr") else result.output).split())


def test_pate_small_run_writes_report_without_votes(tmp_path):
    out = tmp_path / "o"
    result = runner.invoke(app, ["pate", *SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    run = report["runs"][0]
    assert run["utility"]["test_accuracy"] > 0.5  # digits, chance 0.1
    priv = run["privacy"]
    assert priv["answered"] == 60 and priv["aggregator"]["name"] == "GNMax"
    assert float(priv["epsilon"]) > 0 and priv["epsilon_data_dependent_released"] is not None
    text = (out / "report.json").read_text() + (out / "report.md").read_text()
    assert "votes" not in text
    assert "(pate)" not in text and "Wrote" in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["--teachers", "1"],
            "'pate.n_teachers' parameter of the experiment file must be an int in the range [2,",
        ),
        (["--aggregator", "median"], "'pate.aggregator' parameter of the experiment file must be one of"),
        (["--epsilon", "0.01"], "answered none of the 60 queries"),
        (["--set", "pate.sigma1=-1"], "'pate.sigma1' parameter of the experiment file must be a float"),
    ],
)
def test_pate_bad_input_exits_2(args, fragment, tmp_path):
    result = runner.invoke(app, ["pate", *SMALL, *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert fragment in _err(result)
    assert "Traceback" not in _err(result)
    assert not (tmp_path / "o" / "report.json").exists()


def test_pate_file_without_pate_section_exits_2(tmp_path):
    result = runner.invoke(app, ["pate", "examples/adas_fedavg.toml", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "cannot be combined with [fl]" in _err(result) or "no [pate] section" in _err(result)
