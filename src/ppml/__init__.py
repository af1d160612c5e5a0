"""ppml: privacy-preserving machine learning in one framework.

Federated learning (:mod:`ppml.fl`), differential privacy (:mod:`ppml.dp`), attacks that audit
what a model leaks (:mod:`ppml.attacks`), and one report that puts utility, epsilon, attack
success and cost side by side (:mod:`ppml.report`). Datasets and partitioners live in
:mod:`ppml.data`, models in :mod:`ppml.models`, experiment files and the demo in
:mod:`ppml.experiment`.

The top level keeps only what nearly every user needs::

    import ppml
    train, test = ppml.load_dataset("adas", n_vehicles=500, seed=0, test_fraction=0.2)
"""

from ._validation import ParameterError
from .data import load_dataset
from .dp import BudgetExceededError, PrivacyAccountant
from .report import Report

__version__ = "0.1.0"

__all__ = [
    "BudgetExceededError",
    "ParameterError",
    "PrivacyAccountant",
    "Report",
    "__version__",
    "load_dataset",
]
