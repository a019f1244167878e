"""References from a spec to objects the pods read: Secrets and ConfigMaps, and their keys."""

from __future__ import annotations

from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.kube import ApiError, KubeClient, TransientApiError

__all__ = ["missing_references"]


def missing_references(
    kube: KubeClient, namespace: str, spec: DeepSeekV4DeploymentSpec
) -> tuple[str, ...]:
    """Secrets and ConfigMaps (and their keys) the pods read that do not exist.

    Pods that reference them never start (CreateContainerConfigError), which the
    LeaderWorkerSet's counts do not say. A reference the operator may not read (403) is
    not reported.

    Raises:
        TransientApiError: a retryable failure.
    """
    refs: list[tuple[str, str, str, str]] = []
    hub = spec.effective_model_source.hugging_face
    if hub is not None and hub.token_secret_ref is not None:
        ref = hub.token_secret_ref
        refs.append(("Secret", ref.name, ref.key, "spec.modelSource.huggingFace.tokenSecretRef"))
    for var in spec.engine.env:
        source = var.value_from
        if source is not None and source.secret_key_ref is not None:
            sref = source.secret_key_ref
            refs.append(("Secret", sref.name, sref.key, f"spec.engine.env {var.name}"))
        elif source is not None and source.config_map_key_ref is not None:
            cref = source.config_map_key_ref
            refs.append(("ConfigMap", cref.name, cref.key, f"spec.engine.env {var.name}"))
    missing = []
    for kind, name, key, field_path in refs:
        try:
            found = kube.get("v1", kind, namespace, name)
        except TransientApiError:
            raise
        except ApiError:  # forbidden or otherwise unreadable: not ours to judge
            continue
        if found is None:
            missing.append(f"{kind} {name} ({field_path}) does not exist")
        elif key not in (found.get("data") or {}) | (found.get("binaryData") or {}):
            missing.append(f"{kind} {name} has no key {key} ({field_path})")
    return tuple(dict.fromkeys(missing))
