"""`spec.modelSource`: where the worker pods get the checkpoint from."""

from typing import Annotated, Final

from pydantic import Field, field_validator, model_validator

from dsv4_operator.api.meta import ApiModel, with_cel_rules

__all__ = [
    "DEFAULT_HUGGING_FACE_REPOS",
    "AbsolutePath",
    "HostPathSource",
    "HuggingFaceCache",
    "HuggingFaceSource",
    "ModelSource",
    "ObjectName",
    "PvcSource",
    "SecretKeyRef",
]

DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A Kubernetes object name (RFC 1123 subdomain)."""

ABSOLUTE_PATH_PATTERN: Final = r"^/[^\x00]*$"
"""An absolute POSIX path."""

DEFAULT_HUGGING_FACE_REPOS: Final[dict[tuple[str, str], str]] = {
    ("flash", "official"): "deepseek-ai/DeepSeek-V4-Flash",
    ("pro", "official"): "deepseek-ai/DeepSeek-V4-Pro",
    ("flash", "nvfp4"): "nvidia/DeepSeek-V4-Flash-NVFP4",
    ("pro", "nvfp4"): "nvidia/DeepSeek-V4-Pro-NVFP4",
    ("flash", "fp8"): "sgl-project/DeepSeek-V4-Flash-FP8",
    ("pro", "fp8"): "sgl-project/DeepSeek-V4-Pro-FP8",
}
"""Hugging Face repository per (model, weightsFormat) used when spec.modelSource is unset
(deepseek-v4-facts.md §4: official checkpoints, NVIDIA's NVFP4 and sgl-project's FP8 repacks).
bf16 and int4 have no public checkpoint, so they need an explicit modelSource."""

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
AbsolutePath = Annotated[str, Field(min_length=1, max_length=4096, pattern=ABSOLUTE_PATH_PATTERN)]


class SecretKeyRef(ApiModel):
    """A key of a Secret in the resource's namespace."""

    name: ObjectName
    """Name of the Secret (a Kubernetes object name, at most 253 characters)."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = "token"
    """Key inside the Secret whose value is the token (default `token`)."""


def _no_parent_segments(value: str) -> str:
    if ".." in value.split("/"):
        msg = "must not contain '..' segments (Kubernetes refuses them in volume paths)"
        raise ValueError(msg)
    return value


class HuggingFaceCache(ApiModel):
    """Where worker pods keep the files they download: exactly one of claimName, hostPath.

    Unset (the default), each pod gets an emptyDir sized for the checkpoint, and requests as
    much ephemeral storage, so it lands on a node with that much local disk: the download
    survives container restarts but not the pod (a recreated group downloads again).
    """

    model_config = with_cel_rules(
        {
            "rule": "(has(self.claimName) ? 1 : 0) + (has(self.hostPath) ? 1 : 0) == 1",
            "message": "spec.modelSource.huggingFace.cache must set exactly one of claimName, "
            "hostPath",
        }
    )

    claim_name: ObjectName | None = None
    """A PersistentVolumeClaim (ReadWriteMany, in the resource's namespace) shared by every
    pod: the checkpoint is downloaded once and kept across pods and restarts."""
    host_path: AbsolutePath | None = None
    """A directory on each GPU node (created if missing; no `..` segments): kept across pods on
    that node. Pod Security's baseline and restricted levels refuse hostPath volumes."""

    @field_validator("host_path")
    @classmethod
    def _no_parent(cls, value: str | None) -> str | None:
        return None if value is None else _no_parent_segments(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> "HuggingFaceCache":
        if (self.claim_name is None) == (self.host_path is None):
            msg = "must set exactly one of claimName, hostPath"
            raise ValueError(msg)
        return self


class HuggingFaceSource(ApiModel):
    """Download the checkpoint from the Hugging Face Hub into each worker pod's cache."""

    repo: Annotated[
        str,
        Field(
            max_length=96,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$",
        ),
    ]
    """Repository id `owner/name`, e.g. `deepseek-ai/DeepSeek-V4-Flash` (at most 96 characters)."""
    revision: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._/-]+$")] = (
        "main"
    )
    """Branch, tag or commit hash to download (default `main`); pin a commit for reproducibility."""
    token_secret_ref: SecretKeyRef | None = None
    """Secret key holding a Hugging Face access token, for gated or private repositories."""
    cache: HuggingFaceCache | None = None
    """Where the download is kept (`HF_HOME`): a shared PVC or a node directory; unset, an
    emptyDir per pod sized for the checkpoint (ephemeral storage requested to match)."""


class PvcSource(ApiModel):
    """Read the checkpoint from a PersistentVolumeClaim mounted read-only in every worker pod."""

    claim_name: ObjectName
    """Name of the PersistentVolumeClaim in the resource's namespace (ReadOnlyMany or
    ReadWriteMany across nodes)."""
    path: AbsolutePath = "/"
    """Absolute directory inside the volume that holds config.json and the safetensors shards
    (no `..` segments)."""

    @field_validator("path")
    @classmethod
    def _inside_the_volume(cls, value: str) -> str:
        return _no_parent_segments(value)


class HostPathSource(ApiModel):
    """Read the checkpoint from a directory already present on every GPU node."""

    path: AbsolutePath
    """Absolute directory on the node that holds config.json and the safetensors shards (no
    `..` segments: Kubernetes refuses such hostPath volumes)."""

    @field_validator("path")
    @classmethod
    def _no_parent(cls, value: str) -> str:
        return _no_parent_segments(value)


class ModelSource(ApiModel):
    """Where the checkpoint comes from: exactly one of huggingFace, pvc, hostPath."""

    model_config = with_cel_rules(
        {
            "rule": (
                "(has(self.huggingFace) ? 1 : 0) + (has(self.pvc) ? 1 : 0)"
                " + (has(self.hostPath) ? 1 : 0) == 1"
            ),
            "message": ("spec.modelSource must set exactly one of huggingFace, pvc, hostPath"),
        }
    )

    hugging_face: HuggingFaceSource | None = None
    """Download from the Hugging Face Hub."""
    pvc: PvcSource | None = None
    """Read from a PersistentVolumeClaim."""
    host_path: HostPathSource | None = None
    """Read from a directory on the node."""

    @model_validator(mode="after")
    def _exactly_one(self) -> "ModelSource":
        count = sum(source is not None for source in (self.hugging_face, self.pvc, self.host_path))
        if count != 1:
            msg = f"must set exactly one of huggingFace, pvc, hostPath (got {count})"
            raise ValueError(msg)
        return self
