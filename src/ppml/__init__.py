"""ppml: privacy-preserving machine learning in one framework.

Federated learning (:mod:`ppml.fl`), differential privacy (:mod:`ppml.dp`), attacks that audit
what a model leaks (:mod:`ppml.attacks`), and one report that puts utility, epsilon, attack
success and cost side by side (:mod:`ppml.report`).
"""

from ._validation import ParameterError

__version__ = "0.1.0"

__all__ = ["ParameterError", "__version__"]
