"""kopf's diff-base annotation stays within the API server's limit on annotations."""

from __future__ import annotations

import json
from typing import Any

import kopf
import pytest

from dsv4_operator.handlers.lifecycle import (
    ANNOTATIONS_LIMIT_BYTES,
    BoundedAnnotationsDiffBaseStorage,
    configure_kopf,
)
from dsv4_operator.settings import OperatorSettings

KEY = "kopf.zalando.org/last-handled-configuration"


def _body(spec: dict[str, Any], **annotations: str) -> kopf.Body:
    meta = {"name": "d", "namespace": "ns", "annotations": dict(annotations)}
    raw: Any = {"metadata": meta, "spec": spec}  # kopf types it as a TypedDict
    return kopf.Body(raw)


def _big_spec(kib: int) -> dict[str, Any]:
    """A spec of about `kib` KiB: spec.pod.annotations of 4 KiB values."""
    notes = {f"example.com/note-{i:02d}": "x" * 4096 for i in range(kib // 4)}
    return {"model": "flash", "pod": {"annotations": notes}}


def test_a_diff_base_that_fits_is_stored_as_kopf_stores_it() -> None:
    storage, body, patch = BoundedAnnotationsDiffBaseStorage(), _body({"replicas": 1}), kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    stored = patch.metadata.annotations[KEY]
    assert stored is not None
    assert json.loads(stored) == {"spec": {"replicas": 1}}


def test_a_diff_base_that_would_pass_the_annotation_limit_is_not_written() -> None:
    """Day-2 finding (local control plane): a spec of about 132 KiB (spec.pod.annotations at
    32 x 4,096, which the operator accepts) applied with `kubectl apply`, whose
    last-applied-configuration annotation holds a copy of it: kopf's own copy pushed the
    object's annotations past the API server's 256 KiB, every kopf patch was refused (422
    `metadata.annotations: Too long`), and since the finalizer's removal goes in such a patch,
    `kubectl delete` never completed."""
    spec = _big_spec(128)
    applied = json.dumps({"spec": spec})
    body = _body(spec, **{"kubectl.kubernetes.io/last-applied-configuration": applied})
    storage, patch = BoundedAnnotationsDiffBaseStorage(), kopf.Patch()
    essence = storage.build(body=body)
    plain = kopf.Patch()  # what kopf's own storage writes: over the limit
    kopf.AnnotationsDiffBaseStorage().store(body=body, patch=plain, essence=essence)
    assert _size_after(body, plain) > ANNOTATIONS_LIMIT_BYTES
    storage.store(body=body, patch=patch, essence=essence)
    assert KEY not in patch.metadata.annotations
    assert _size_after(body, patch) <= ANNOTATIONS_LIMIT_BYTES


def _size_after(body: kopf.Body, patch: kopf.Patch) -> int:
    """Bytes of the annotations once `patch` is applied to `body`."""
    after = dict(body.metadata.annotations)
    for key, value in patch.metadata.annotations.items():
        if value is None:
            after.pop(key, None)
        else:
            after[key] = value
    return sum(len(k.encode()) + len(v.encode()) for k, v in after.items())


def test_a_stale_diff_base_is_removed_when_the_new_one_does_not_fit() -> None:
    spec = _big_spec(260)  # beyond the limit alone (server-side apply: no kubectl copy)
    body = _body(spec, **{KEY: '{"spec":{}}\n'})
    storage, patch = BoundedAnnotationsDiffBaseStorage(), kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert patch.metadata.annotations[KEY] is None  # an old spec would make a wrong diff


@pytest.mark.parametrize("kib", [0, 64])
def test_the_operator_uses_the_bounded_storage(kib: int) -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorSettings())
    storage = settings.persistence.diffbase_storage
    assert isinstance(storage, BoundedAnnotationsDiffBaseStorage)
    patch = kopf.Patch()
    body = _body(_big_spec(kib))
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert KEY in patch.metadata.annotations  # small and mid-sized specs are stored
