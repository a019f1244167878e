"""References from a spec to objects the pods use: claims, Secrets, ConfigMaps and their keys."""

from __future__ import annotations

from typing import Any

from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.kube import ApiError, KubeClient, TransientApiError

__all__ = ["missing_references"]


def _claims(spec: DeepSeekV4DeploymentSpec) -> list[tuple[str, str]]:
    """(PersistentVolumeClaim name, the spec field that names it)."""
    source = spec.effective_model_source
    out = []
    if source.pvc is not None:
        out.append((source.pvc.claim_name, "spec.modelSource.pvc.claimName"))
    hub = source.hugging_face
    if hub is not None and hub.cache is not None and hub.cache.claim_name is not None:
        out.append((hub.cache.claim_name, "spec.modelSource.huggingFace.cache.claimName"))
    return out


def _keys(spec: DeepSeekV4DeploymentSpec) -> list[tuple[str, str, str, str]]:
    """(kind, name, key, the spec field) of each Secret or ConfigMap key the pods read."""
    out = []
    hub = spec.effective_model_source.hugging_face
    if hub is not None and hub.token_secret_ref is not None:
        ref = hub.token_secret_ref
        out.append(("Secret", ref.name, ref.key, "spec.modelSource.huggingFace.tokenSecretRef"))
    for var in spec.engine.env:
        if var.value_from is None:
            continue
        kind, key_ref = var.value_from.kind_and_ref
        if not key_ref.optional:  # pods start without an optional variable
            out.append((kind, key_ref.name, key_ref.key, f"spec.engine.env {var.name}"))
    return out


def _read(kube: KubeClient, kind: str, namespace: str, name: str) -> tuple[bool, dict[str, Any]]:
    """(whether it exists, the object) — True and an empty dict when it may not be read (403...).

    Raises:
        TransientApiError: a retryable failure.
    """
    try:
        found = kube.get("v1", kind, namespace, name)
    except TransientApiError:
        raise
    except ApiError:  # forbidden (e.g. an older chart's RBAC): not ours to judge
        return True, {}
    return found is not None, found or {}


def missing_references(
    kube: KubeClient, namespace: str, spec: DeepSeekV4DeploymentSpec
) -> tuple[str, ...]:
    """PersistentVolumeClaims, Secrets and ConfigMaps (and keys) the pods use that do not exist.

    Pods that reference them never start (Pending on a claim, CreateContainerConfigError on a
    Secret or ConfigMap), which the LeaderWorkerSet's counts do not say. A reference the
    operator may not read (403) is not reported.

    Raises:
        TransientApiError: a retryable failure.
    """
    missing = []
    for name, field_path in _claims(spec):
        if not _read(kube, "PersistentVolumeClaim", namespace, name)[0]:
            missing.append(f"PersistentVolumeClaim {name} ({field_path}) does not exist")
    for kind, name, key, field_path in _keys(spec):
        exists, found = _read(kube, kind, namespace, name)
        keys = (found.get("data") or {}) | (found.get("binaryData") or {})
        if not exists:
            missing.append(f"{kind} {name} ({field_path}) does not exist")
        elif found and key not in keys:
            missing.append(f"{kind} {name} has no key {key} ({field_path})")
    return tuple(dict.fromkeys(missing))
