"""A federated run killed mid-way (SIGKILL) and resumed with --resume ends like an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from ppml.cli.main import app

ARGS = ["examples/digits_fedavg.toml", "--set", "fl.rounds=120", "--set", "fl.checkpoint_every=3", "-q"]


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppml.cli.main", "run", *ARGS, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = killed / "checkpoint" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "the run wrote no checkpoint"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "report.json").exists(), "the run finished before it could be killed"

    runner = CliRunner()
    resumed = runner.invoke(app, ["run", *ARGS, "--out", str(killed), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    whole = runner.invoke(app, ["run", *ARGS, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output

    a = json.loads((killed / "report.json").read_text())["runs"][0]
    b = json.loads((tmp_path / "whole" / "report.json").read_text())["runs"][0]
    assert [h["round"] for h in a["history"]] == list(range(1, 121))
    assert a["utility"] == b["utility"]
    assert [h.get("test_accuracy") for h in a["history"]] == [h.get("test_accuracy") for h in b["history"]]
