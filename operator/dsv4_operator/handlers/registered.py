"""Importing this module registers the operator's handlers on kopf's default registry.

For `kopf run -m dsv4_operator.handlers.registered` and `kopf.testing.KopfRunner`; settings come
from the `DSV4_OPERATOR_*` environment variables (`OperatorSettings.from_env`).
`dsv4 operator run` does not use this module: it builds its own registry.
"""

import kopf

from dsv4_operator.handlers.runner import build_registry
from dsv4_operator.settings import OperatorSettings

__all__: list[str] = []

build_registry(OperatorSettings.from_env(), kopf.get_default_registry())
