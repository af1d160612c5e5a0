"""Reports that put utility, epsilon, attack success and cost side by side."""

from .report import OutputExistsError, Report, RunSummary, config_hash, package_versions, prepare_out_dir

__all__ = ["OutputExistsError", "Report", "RunSummary", "config_hash", "package_versions", "prepare_out_dir"]
