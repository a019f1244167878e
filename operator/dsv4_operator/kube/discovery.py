"""What the cluster serves: the LeaderWorkerSet API and the PodDisruptionBudget version."""

from __future__ import annotations

from dataclasses import dataclass

from dsv4_operator.kube.client import KubeClient
from dsv4_operator.render import LWS_API_VERSION, PDB_API_VERSION

__all__ = ["ClusterApis", "discover"]

_PDB_FALLBACK = "policy/v1beta1"
"""PodDisruptionBudget version of servers older than 1.21 (e.g. the 1.20 test server)."""


@dataclass(frozen=True)
class ClusterApis:
    """API versions found by discovery.

    Attributes:
        lws: the LeaderWorkerSet kind is served in `leaderworkerset.x-k8s.io/v1`.
        pdb_api_version: `policy/v1` when served, else `policy/v1beta1`.
    """

    lws: bool
    pdb_api_version: str


def discover(kube: KubeClient) -> ClusterApis:
    """Ask the API server which of the versions the operator renders it serves.

    Raises:
        TransientApiError: discovery failed transiently.
        ApiError: discovery failed otherwise.
    """
    lws_kinds = kube.served_kinds(LWS_API_VERSION) or set()
    pdb_kinds = kube.served_kinds(PDB_API_VERSION) or set()
    return ClusterApis(
        lws="LeaderWorkerSet" in lws_kinds,
        pdb_api_version=PDB_API_VERSION if "PodDisruptionBudget" in pdb_kinds else _PDB_FALLBACK,
    )
