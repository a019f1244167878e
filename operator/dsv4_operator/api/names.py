"""The rule for a DeepSeekV4Deployment's `metadata.name`: what its children's names allow.

The name becomes the LeaderWorkerSet's name (and the headless Service LWS creates from it),
`<name>-api` (our Service), `<name>-plan` (ConfigMap) and, through LWS, the StatefulSets
`<name>` (leaders) and `<name>-<group index>` (each group's workers).

- **DNS-1035 label** (lowercase letters, digits and '-', starting with a letter, ending with a
  letter or digit): the LWS webhook validates its name with `NameIsDNS1035Label` because it
  names a headless Service (kubernetes-sigs/lws `pkg/webhooks/leaderworkerset_webhook.go`), and
  Service names are DNS-1035 labels (Kubernetes API conventions). A CR name with a dot or a
  leading digit would pass the API server and fail only when the LWS is applied.
- **StatefulSet names of at most 52 characters**: a StatefulSet's pods carry the label
  `controller-revision-hash: <statefulset name>-<hash of up to 10 characters>`, and label
  values are at most 63 characters, so a StatefulSet name over 52 characters gets no pods
  (kubernetes/kubernetes#64023). The worker StatefulSet `<name>-<group index>` therefore needs
  `len(name) + 1 + digits(highest group index) <= 52`. The CRD refuses names over 50
  characters, which fail even with one group (`<name>-0`); `check_name_for_groups` checks the
  exact bound for the groups a spec can have (replicas, autoscaling maxReplicas, surge), in the
  operator, so a name that works today is never refused by the schema on update. The operator
  applies it only to plans of several pods per group: LWS creates no worker StatefulSet for a
  one-pod group.
"""

import re
from typing import Final

from dsv4_operator.api.errors import FieldError, InvalidSpecError

__all__ = [
    "NAME_MAX_LENGTH",
    "NAME_PATTERN",
    "STATEFULSET_NAME_MAX_LENGTH",
    "check_name",
    "check_name_for_groups",
]

STATEFULSET_NAME_MAX_LENGTH: Final = 52
"""Longest StatefulSet name whose pods can be created (63 - 1 - a 10-character hash)."""
NAME_MAX_LENGTH: Final = STATEFULSET_NAME_MAX_LENGTH - len("-0")
"""Longest `metadata.name` of any use: 50 (the worker StatefulSet of group 0 is `<name>-0`)."""
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
            f"'<name>-<group index>' need at most {STATEFULSET_NAME_MAX_LENGTH} for their pods "
            "to be created"
        )
    if problems:
        raise InvalidSpecError([FieldError("metadata.name", "; ".join(problems))])


def check_name_for_groups(name: str, groups: int) -> None:
    """Check that every worker StatefulSet `<name>-<index>`, index < `groups`, can have pods.

    Args:
        name: the resource's `metadata.name`.
        groups: the most replica groups the resource can have at once (replicas or autoscaling
            maxReplicas, plus rollout surge groups), >= 1.

    Raises:
        InvalidSpecError: a `metadata.name` error naming both lengths.
    """
    longest = f"{name}-{max(groups, 1) - 1}"
    if len(longest) > STATEFULSET_NAME_MAX_LENGTH:
        allowed = STATEFULSET_NAME_MAX_LENGTH - (len(longest) - len(name))
        message = (
            f"{len(name)} characters: with up to {groups} replica groups (replicas or "
            f"autoscaling maxReplicas, plus rollout surge) the worker StatefulSet "
            f"'{longest}' has {len(longest)} characters, more than "
            f"{STATEFULSET_NAME_MAX_LENGTH}, and would get no pods; use at most {allowed} "
            "characters or fewer groups"
        )
        raise InvalidSpecError([FieldError("metadata.name", message)])
