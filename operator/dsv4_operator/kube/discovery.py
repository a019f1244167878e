"""What the cluster serves: the LeaderWorkerSet API and the PodDisruptionBudget version."""

from __future__ import annotations

from dataclasses import dataclass

from dsv4_operator.kube.client import KubeClient
from dsv4_operator.render import LWS_API_VERSION, PDB_API_VERSION
from dsv4_operator.render.autoscaler import HPA_API_VERSION

KEDA_API_VERSION = "keda.sh/v1alpha1"

__all__ = ["ClusterApis", "discover"]

_PDB_FALLBACK = "policy/v1beta1"
"""PodDisruptionBudget version of servers older than 1.21 (e.g. the 1.20 test server)."""


@dataclass(frozen=True)
class ClusterApis:
    """API versions found by discovery.

    Attributes:
        lws: the LeaderWorkerSet kind is served in `leaderworkerset.x-k8s.io/v1`.
        pdb_api_version: `policy/v1` when served, else `policy/v1beta1`.
        keda: KEDA's ScaledObject is served in `keda.sh/v1alpha1`.
        hpa_api_version: `autoscaling/v2` when served, else `autoscaling/v2beta2`.
    """

    lws: bool
    pdb_api_version: str
    keda: bool = False
    hpa_api_version: str = "autoscaling/v2"


def discover(kube: KubeClient) -> ClusterApis:
    """Ask the API server which of the versions the operator renders it serves.

    Raises:
        TransientApiError: discovery failed transiently.
        ApiError: discovery failed otherwise.
    """
    lws_kinds = kube.served_kinds(LWS_API_VERSION) or set()
    pdb_kinds = kube.served_kinds(PDB_API_VERSION) or set()
    hpa_kinds = kube.served_kinds(HPA_API_VERSION) or set()
    return ClusterApis(
        lws="LeaderWorkerSet" in lws_kinds,
        pdb_api_version=PDB_API_VERSION if "PodDisruptionBudget" in pdb_kinds else _PDB_FALLBACK,
        keda="ScaledObject" in (kube.served_kinds(KEDA_API_VERSION) or set()),
        hpa_api_version=(
            HPA_API_VERSION if "HorizontalPodAutoscaler" in hpa_kinds else "autoscaling/v2beta2"
        ),
    )
