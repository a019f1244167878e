"""The rule for a DeepSeekV4Deployment's `metadata.name`: what its children's names allow.

The name becomes the LeaderWorkerSet's name (and the headless Service LWS creates from it),
`<name>-api` (our Service), `<name>-plan` (ConfigMap) and, through LWS, the StatefulSets
`<name>` (leaders) and `<name>-<group index>` (each group's workers).

- **DNS-1035 label** (lowercase letters, digits and '-', starting with a letter, ending with a
  letter or digit): the LWS webhook validates its name with `NameIsDNS1035Label` because it
  names a headless Service (kubernetes-sigs/lws `pkg/webhooks/leaderworkerset_webhook.go`), and
  Service names are DNS-1035 labels (Kubernetes API conventions). A CR name with a dot or a
  leading digit would pass the API server and fail only when the LWS is applied.
- **At most 47 characters**: a StatefulSet's pods carry the label `controller-revision-hash:
  <statefulset name>-<hash of up to 10 characters>`, and label values are at most 63 characters,
  so a StatefulSet name over 52 characters gets no pods (kubernetes/kubernetes#64023). The
  worker StatefulSet `<name>-<group index>` has group indices below 2,000 (`spec.replicas` <=
  1,000 plus at most as many surge groups), so 52 - len("-1999") = 47.
"""

import re
from typing import Final

from dsv4_operator.api.errors import FieldError, InvalidSpecError

__all__ = ["NAME_MAX_LENGTH", "NAME_PATTERN", "check_name"]

NAME_MAX_LENGTH: Final = 47
"""Longest `metadata.name` (module docstring: 52 for a StatefulSet, minus `-<group index>`)."""
NAME_PATTERN: Final = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""DNS-1035 label (Kubernetes `IsDNS1035Label`), as the CRD schema's `metadata.name` pattern."""


def check_name(name: str) -> None:
    """Check a DeepSeekV4Deployment name against `NAME_PATTERN` and `NAME_MAX_LENGTH`.

    Args:
        name: the resource's `metadata.name`.

    Raises:
        InvalidSpecError: one `metadata.name` error naming the rule that fails.
    """
    problems = []
    if not re.fullmatch(NAME_PATTERN, name):
        problems.append(
            f"{name!r} is not a DNS-1035 label (lowercase letters, digits and '-', starting "
            "with a letter and ending with a letter or digit): the LeaderWorkerSet and its "
            "Services are named after it"
        )
    if len(name) > NAME_MAX_LENGTH:
        problems.append(
            f"{len(name)} characters, more than {NAME_MAX_LENGTH}: the worker StatefulSets "
            "'<name>-<group index>' need at most 52 for their pods to be created"
        )
    if problems:
        raise InvalidSpecError([FieldError("metadata.name", "; ".join(problems))])
