"""kopf handlers (the only kopf code): lifecycle, DeepSeekV4Deployment reconcile, and `run`.

Importing this package registers nothing; `run` builds a registry, and the `registered` module
registers on kopf's default registry for `kopf run -m dsv4_operator.handlers.registered`.
"""

from dsv4_operator.handlers.reconciler import Outcome, Reconciler
from dsv4_operator.handlers.runner import build_registry, run

__all__ = ["Outcome", "Reconciler", "build_registry", "run"]
