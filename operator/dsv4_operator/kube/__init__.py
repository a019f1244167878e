"""The only package that talks to the API server: reads, server-side apply, status, discovery."""

from dsv4_operator.kube.apply import (
    RENDERED_HASH,
    AppliedChild,
    apply_children,
    contains,
    owner_relation,
    with_rendered_hash,
)
from dsv4_operator.kube.client import (
    ApiError,
    CredentialsError,
    KubeClient,
    TransientApiError,
    WriteCounter,
    build_api_client,
    resource_path,
)
from dsv4_operator.kube.crd_watch import watch_crd
from dsv4_operator.kube.discovery import ClusterApis, discover

__all__ = [
    "RENDERED_HASH",
    "ApiError",
    "AppliedChild",
    "ClusterApis",
    "CredentialsError",
    "KubeClient",
    "TransientApiError",
    "WriteCounter",
    "apply_children",
    "build_api_client",
    "contains",
    "discover",
    "owner_relation",
    "resource_path",
    "watch_crd",
    "with_rendered_hash",
]
