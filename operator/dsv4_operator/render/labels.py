"""Names, labels and owner references shared by every child object of a DeepSeekV4Deployment.

Labels follow Kubernetes' recommended `app.kubernetes.io/*` set
(kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from dsv4_operator.api import API_VERSION, KIND

__all__ = [
    "FIELD_MANAGER",
    "LABEL_DEPLOYMENT",
    "LABEL_ROLE",
    "MANAGED_BY",
    "Owner",
    "child_names",
    "label_value",
    "pod_selector",
    "standard_labels",
]

FIELD_MANAGER: Final = "dsv4-operator"
"""Server-side-apply field manager of everything the operator writes."""
MANAGED_BY: Final = "dsv4-operator"
"""`app.kubernetes.io/managed-by` value on every child."""
LABEL_DEPLOYMENT: Final = "dsv4.io/deployment"
"""Label naming the owning DeepSeekV4Deployment on children and worker pods."""
LABEL_ROLE: Final = "dsv4.io/role"
"""Label on worker pods: `leader` (LWS worker index 0, serves the API) or `worker`."""
_LABEL_VALUE_MAX: Final = 63


def label_value(text: str) -> str:
    """`text` as a label value: unchanged up to 63 characters, else cut and suffixed with a hash.

    Label values are at most 63 characters (Kubernetes' label syntax); object names may be 253.
    """
    if len(text) <= _LABEL_VALUE_MAX:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: _LABEL_VALUE_MAX - 9].rstrip('-.')}-{digest}"


@dataclass(frozen=True)
class Owner:
    """The DeepSeekV4Deployment that owns the rendered objects.

    Attributes:
        name: metadata.name.
        namespace: metadata.namespace.
        uid: metadata.uid (garbage collection follows it).
        generation: metadata.generation (0 when unknown).
    """

    name: str
    namespace: str
    uid: str
    generation: int = 0

    @classmethod
    def from_body(cls, body: Any) -> Owner:
        """Read name, namespace, uid and generation from an object mapping (kopf's `body`)."""
        meta = body["metadata"]
        return cls(
            name=str(meta["name"]),
            namespace=str(meta.get("namespace") or "default"),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
        )

    def reference(self) -> dict[str, Any]:
        """The ownerReference every child carries (controller, blocks foreground deletion)."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class ChildNames:
    """Names of the child objects (all in the owner's namespace).

    Attributes:
        leaderworkerset: the LeaderWorkerSet; LWS names its headless Service after it.
        service: the OpenAI API Service (leaders only); distinct from LWS's headless Service.
        config_map: the ConfigMap holding the plan JSON.
        pod_disruption_budget: the PodDisruptionBudget of the worker pods.
        admin_secret: the Secret holding the runtimes' drain token (`render.admin`).
    """

    leaderworkerset: str
    service: str
    config_map: str
    pod_disruption_budget: str
    admin_secret: str


def child_names(owner: Owner) -> ChildNames:
    """The deterministic child names: the same owner always maps to the same objects."""
    return ChildNames(
        leaderworkerset=owner.name,
        service=f"{owner.name}-api",
        config_map=f"{owner.name}-plan",
        pod_disruption_budget=owner.name,
        admin_secret=f"{owner.name}-admin",
    )


def pod_selector(owner: Owner) -> dict[str, str]:
    """Labels that select every worker pod of the owner (leaders and workers)."""
    return {
        "app.kubernetes.io/name": "deepseek-v4",
        "app.kubernetes.io/instance": label_value(owner.name),
        LABEL_DEPLOYMENT: label_value(owner.name),
    }


def standard_labels(owner: Owner, model: str, component: str) -> dict[str, str]:
    """`app.kubernetes.io/*` labels plus `dsv4.io/deployment`, for a child or a pod template.

    Args:
        owner: the owning resource.
        model: `flash` or `pro` (becomes part of `app.kubernetes.io/version`-free labels).
        component: `inference` for worker pods and the LWS, `api` for the Service, `plan`...
    """
    return {
        **pod_selector(owner),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "dsv4",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "dsv4.io/model": model,
    }
