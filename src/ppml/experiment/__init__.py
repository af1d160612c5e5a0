"""Experiment files, the runner behind ``ppml run``, and ``ppml demo``."""

from .config import ExperimentConfig, apply_overrides, load_config, parse_config
from .demo import demo_configs, run_demo
from .runner import PreparedData, prepare_data, run_experiment

__all__ = [
    "ExperimentConfig",
    "PreparedData",
    "apply_overrides",
    "demo_configs",
    "load_config",
    "parse_config",
    "prepare_data",
    "run_demo",
    "run_experiment",
]
