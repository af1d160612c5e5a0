"""The ppml command line: conventions, bad input, and the demo end to end."""

import json

import dp_accounting
import pytest
from typer.testing import CliRunner

from ppml.cli.main import app

runner = CliRunner()


def _err(result) -> str:
    return result.stderr if hasattr(result, "stderr") else result.output


def test_help_everywhere():
    for args in ([], ["demo"], ["run"], ["datasets"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["demo", "--rounds", "0"],
            "'rounds' parameter of ppml demo must be an int in the range [1, inf). Got 0",
        ),
        (
            ["demo", "--epsilon", "-1"],
            "'epsilon' parameter of ppml demo must be a float in the range (0, inf)",
        ),
        (
            ["demo", "--vehicles", "3"],
            "'vehicles' parameter of ppml demo must be an int in the range [20, inf)",
        ),
    ],
)
def test_bad_demo_options_exit_2_with_one_line(args, fragment, tmp_path):
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 2
    err = _err(result)
    assert fragment in " ".join(err.split())
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "report.json").exists()


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        (
            "fl.fraction_fit=1.5",
            "'fl.fraction_fit' parameter of the experiment file must be a float in the range (0, 1]",
        ),
        (
            "fl.local_epochs=0",
            "'fl.local_epochs' parameter of the experiment file must be an int in the range [1,",
        ),
        (
            "privacy.delta=1.5",
            "'privacy.delta' parameter of the experiment file must be a float in the range (0, 1)",
        ),
        (
            "privacy.epsilon=0",
            "'privacy.epsilon' parameter of the experiment file must be a float in the range (0, inf)",
        ),
        ("data.name='nosuch'", "nosuch"),
    ],
)
def test_bad_experiment_values_exit_2(override, fragment, tmp_path):
    result = runner.invoke(
        app,
        ["run", "examples/adas_dp_fedavg.toml", "--set", override, "--out", str(tmp_path / "o"), "--quiet"],
    )
    assert result.exit_code == 2, result.output
    assert fragment in " ".join(_err(result).split())
    assert "Traceback" not in _err(result)


def test_missing_data_directory_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PPML_DATA", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        app,
        [
            "run",
            "examples/digits_fedavg.toml",
            "--set",
            "data.name='mnist'",
            "--out",
            str(tmp_path / "o"),
            "-q",
        ],
    )
    assert result.exit_code == 2
    err = " ".join(_err(result).split())
    assert "train-images-idx3-ubyte" in err and "Traceback" not in err


def test_datasets_lists_bundled_and_synthetic():
    result = runner.invoke(app, ["datasets"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in ("adas", "digits", "mnist", "adult"):
        assert name in result.output


@pytest.mark.slow
def test_demo_end_to_end_report_and_independent_epsilon(tmp_path):
    out = tmp_path / "demo"
    args = [
        "demo",
        "--vehicles",
        "60",
        "--rounds",
        "4",
        "--epsilon",
        "8",
        "--seed",
        "3",
        "--out",
        str(out),
        "-q",
    ]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, _err(result) + result.output
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").exists()
    names = [r["name"] for r in report["runs"]]
    assert names == ["central", "fedavg", "dp-fedavg", "pate"]
    pate = report["runs"][3]["privacy"]
    assert pate["mechanism"] == "PATE" and 0 < pate["epsilon"] < float("inf")
    assert pate["n_teachers"] == 6  # one teacher per 8 of the 48 training vehicles
    for run in report["runs"]:
        assert 0.0 <= run["utility"]["test_accuracy"] <= 1.0
        assert run["cost"]["bytes_up_per_client"] > 0 and run["cost"]["wall_time_s"] > 0
        assert {"auc", "tpr_at_1pct_fpr"} <= set(run["attacks"][0]["metrics"])
    assert 0.0 <= report["findings"]["central_collection_risk"]["share_homes_within_250m"] <= 1.0
    assert {"python", "torch", "numpy", "dp-accounting"} <= set(report["versions"])
    assert report["seed"] == 3 and report["config"]["experiments"]["dp-fedavg"]["privacy"]["epsilon"] == 8

    # The printed epsilon equals an independent recomputation from the logged parameters.
    priv = report["runs"][2]["privacy"]
    steps = sum(e["count"] for e in priv["ledger"])
    params = priv["ledger"][0]["params"]
    assert steps == 4 and all(e["params"] == params for e in priv["ledger"])
    acc = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(
        params["sampling_rate"], dp_accounting.GaussianDpEvent(params["noise_multiplier"])
    )
    acc.compose(event, steps)
    independent = acc.get_epsilon(priv["delta"])
    assert priv["epsilon"] == pytest.approx(independent, rel=1e-6)
    assert priv["epsilon"] <= 8.0
    assert f"{priv['epsilon']:.2f}" in result.output
    # The history has one entry per round with the epsilon spent so far, rising.
    eps_hist = [h["epsilon"] for h in report["runs"][2]["history"]]
    assert len(eps_hist) == 4 and eps_hist == sorted(eps_hist)

    # A second run into the same directory is refused and leaves the report intact.
    before = (out / "report.json").read_text()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in _err(again)
    assert (out / "report.json").read_text() == before
