"""`spec.modelSource`: where the worker pods get the checkpoint from."""

from typing import Annotated, Final

from pydantic import Field, model_validator

from dsv4_operator.api.meta import ApiModel, with_cel_rules

__all__ = [
    "DEFAULT_HUGGING_FACE_REPOS",
    "AbsolutePath",
    "HostPathSource",
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


class HuggingFaceSource(ApiModel):
    """Download the checkpoint from the Hugging Face Hub (cached on the node)."""

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


class PvcSource(ApiModel):
    """Read the checkpoint from a PersistentVolumeClaim mounted read-only in every worker pod."""

    claim_name: ObjectName
    """Name of the PersistentVolumeClaim in the resource's namespace (ReadOnlyMany or
    ReadWriteMany across nodes)."""
    path: AbsolutePath = "/"
    """Absolute directory inside the volume that holds config.json and the safetensors shards."""


class HostPathSource(ApiModel):
    """Read the checkpoint from a directory already present on every GPU node."""

    path: AbsolutePath
    """Absolute directory on the node that holds config.json and the safetensors shards."""


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
