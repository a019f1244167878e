"""The bearer token that guards a runtime's `POST /drain` and `/undrain`.

The runtime refuses both without `Authorization: Bearer <token>` matching its
`DSV4_RUNTIME_ADMIN_TOKEN` (`dsv4_runtime.server`); otherwise any client that reaches a pod IP
could take every replica group out of service. The operator sets the variable in the pod
template and sends the header when its autoscaler drains a group.

The token is derived, not stored: HMAC-SHA256 keyed by the DeepSeekV4Deployment's uid. So the
operator needs no Secret permissions and no state to find it again after a restart; it is stable
for the resource's lifetime (a re-created resource gets a new uid, so a new token) and
unguessable to a client that can only reach pod IPs (a uid is a random 122-bit UUID). Who can
read the resource or its pods in the namespace can read the token too, but could already delete
the pods.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from dsv4_operator.api.v1alpha1.engine import ADMIN_TOKEN_ENV

__all__ = ["ADMIN_TOKEN_ENV", "admin_token", "bearer_header"]

_CONTEXT: Final = b"dsv4 runtime admin token v1"


def admin_token(uid: str) -> str:
    """The admin token of the DeepSeekV4Deployment with metadata.uid `uid`: 64 hex characters.

    Raises:
        ValueError: `uid` is empty (a resource read from the API server always has one).
    """
    if not uid:
        msg = "metadata.uid is empty: the admin token is derived from it"
        raise ValueError(msg)
    return hmac.new(uid.encode(), _CONTEXT, hashlib.sha256).hexdigest()


def bearer_header(uid: str) -> dict[str, str]:
    """`{"Authorization": "Bearer <admin_token(uid)>"}`."""
    return {"Authorization": f"Bearer {admin_token(uid)}"}
