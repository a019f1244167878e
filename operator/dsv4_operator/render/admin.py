"""The bearer token that guards a runtime's `POST /drain` and `/undrain`.

The runtime refuses both without `Authorization: Bearer <token>` matching its
`DSV4_RUNTIME_ADMIN_TOKEN` (`dsv4_runtime.server`); otherwise any client that reaches a pod IP
could take every replica group out of service.

The token is random (256 bits, drawn by the reconciler when it creates the Secret) and lives only
in the Secret `<name>-admin` (key `token`), owned by the DeepSeekV4Deployment: pods read it
through `secretKeyRef`, and the operator's autoscaler reads the Secret when it drains. So
Kubernetes' `view` role, which can read pods and every child's `ownerReferences` but not
Secrets, cannot get it; deleting the Secret rotates it (the reconciler draws a new one; pods take
it when they restart).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final

from dsv4_operator.api.v1alpha1.engine import ADMIN_TOKEN_ENV
from dsv4_operator.render.labels import Owner, child_names, standard_labels

__all__ = [
    "ADMIN_TOKEN_ENV",
    "ADMIN_TOKEN_KEY",
    "admin_secret",
    "admin_token_env",
    "bearer_header",
    "token_from_secret",
]

ADMIN_TOKEN_KEY: Final = "token"  # noqa: S105  (a key name)
"""The Secret's data key holding the token."""


def admin_secret(owner: Owner, model: str, token: str) -> dict[str, Any]:
    """The Secret `<name>-admin` holding `token` (created once, never applied over).

    Args:
        owner: the owning resource (the Secret is garbage-collected with it).
        model: `flash` or `pro`, for the standard labels.
        token: the token, e.g. `secrets.token_hex(32)`.
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": child_names(owner).admin_secret,
            "namespace": owner.namespace,
            "labels": standard_labels(owner, model, "admin"),
            "ownerReferences": [owner.reference()],
        },
        "data": {ADMIN_TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def admin_token_env(owner: Owner) -> dict[str, Any]:
    """The pod template's `DSV4_RUNTIME_ADMIN_TOKEN` entry, from the Secret."""
    ref = {"name": child_names(owner).admin_secret, "key": ADMIN_TOKEN_KEY}
    return {"name": ADMIN_TOKEN_ENV, "valueFrom": {"secretKeyRef": ref}}


def token_from_secret(secret: Mapping[str, Any] | None) -> str | None:
    """The token in a Secret as read from the API server; None when absent or malformed."""
    data = (secret or {}).get("data") or {}
    try:
        token = base64.b64decode(str(data.get(ADMIN_TOKEN_KEY, "")), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return token or None


def bearer_header(token: str) -> dict[str, str]:
    """`{"Authorization": "Bearer <token>"}`."""
    return {"Authorization": f"Bearer {token}"}
