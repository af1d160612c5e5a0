import json
import math

import pytest

from ppml.report import OutputExistsError, Report, RunSummary, config_hash


def _report(eps=1.5):
    private = RunSummary(
        name="dp",
        utility={"test_accuracy": 0.8},
        privacy={
            "accountant": "rdp",
            "conversion": "x",
            "delta": 1e-5,
            "epsilon": eps,
            "ledger": [{"label": "r", "count": 3, "params": {"sampling_rate": 0.1, "noise_multiplier": 1.0}}],
        },
        attacks=(
            {"attack": "loss-threshold", "metrics": {"auc": 0.51, "tpr_at_1pct_fpr": 0.012}},
            {"attack": "loss-threshold (per owner)", "metrics": {"auc": 0.62}},
        ),
        cost={"wall_time_s": 1.0, "bytes_up_per_client": 12345.0},
    )
    plain = RunSummary(name="central", utility={"test_accuracy": 0.9}, cost={"wall_time_s": 2.0})
    return Report(title="t", runs=(plain, private), config={"a": 1}, seed=3)


def test_table_rows_show_every_column():
    rows = _report().rows()
    assert rows[0][2] == "inf" and rows[0][3] == "-"
    assert rows[1][1] == "0.800" and rows[1][2].startswith("1.50") and rows[1][3] == "0.510"
    assert rows[1][5] == "0.620" and rows[0][5] == "-"  # the per-owner attack
    assert rows[1][6] == "12.3 KB"


def test_json_is_strict_and_complete():
    d = json.loads(_report().to_json())
    assert d["seed"] == 3 and d["config_hash"] == config_hash({"a": 1})
    assert d["runs"][1]["privacy"]["ledger"][0]["params"]["noise_multiplier"] == 1.0
    assert {"python", "torch", "dp-accounting"} <= set(d["versions"])


def test_infinite_epsilon_survives_json():
    r = RunSummary(name="x", privacy={"epsilon": math.inf, "delta": 1e-5, "accountant": "rdp", "ledger": []})
    rep = Report(title="t", runs=(r,), config={}, seed=0)
    assert json.loads(rep.to_json())["runs"][0]["privacy"]["epsilon"] == "inf"


def test_existing_report_is_never_silently_overwritten(tmp_path):
    out = tmp_path / "r"
    _report(1.5).write(out)
    before = (out / "report.json").read_text()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        _report(2.5).write(out)
    assert (out / "report.json").read_text() == before
    _report(2.5).write(out, overwrite=True)
    assert json.loads((out / "report.json").read_text())["runs"][1]["privacy"]["epsilon"] == 2.5
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert "| dp |" in (out / "report.md").read_text()


def test_history_is_written_as_csv(tmp_path):
    run = RunSummary(name="fl", history=({"round": 1, "test_accuracy": 0.5}, {"round": 2, "epsilon": 1.0}))
    Report(title="t", runs=(run,), config={}, seed=0).write(tmp_path / "o")
    lines = (tmp_path / "o" / "metrics.csv").read_text().splitlines()
    assert lines[0] == "run,round,test_accuracy,epsilon"
    assert lines[1] == "fl,1,0.5," and lines[2] == "fl,2,,1.0"
