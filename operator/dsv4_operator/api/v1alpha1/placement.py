"""`spec.placement`: where a replica's pods go as a group, and who admits them.

A multi-node replica (a LeaderWorkerSet group of 2 or more pods) runs tensor- and expert-
parallel traffic between its nodes every decode step; spread over racks or network blocks it
loses much of its throughput. Two mechanisms keep a group together:

- **Exclusive topology** (LeaderWorkerSet's own, no other component needed): the annotation
  `leaderworkerset.sigs.k8s.io/exclusive-topology: <node label key>` on the LeaderWorkerSet
  makes LWS's pod webhook give each leader a required pod affinity to its own group and a
  required anti-affinity to every other group in that topology domain, and pin the group's
  workers to the leader's domain (`pkg/webhooks/pod_webhook.go` SetExclusiveAffinities,
  kubernetes-sigs/lws). So each group gets one domain (node, rack, block) to itself. It is a
  hard constraint: with fewer free domains than groups, the extra groups stay Pending. LWS
  keeps metadata out of its template revision, so a change applies to groups created later,
  not to running ones.
- **Kueue** (`kueue.x-k8s.io/*`, Kueue's LeaderWorkerSet integration): `queueName` labels the
  LeaderWorkerSet `kueue.x-k8s.io/queue-name`, so Kueue admits each group against a
  LocalQueue's quota as one Workload (all of its pods or none); `workloadPriorityClassName`
  sets `kueue.x-k8s.io/priority-class`. `topologyKey` requests Topology Aware Scheduling: the
  pod templates get `kueue.x-k8s.io/podset-required-topology` (or `-preferred-topology`) =
  the key, and, for groups of more than one pod, the same `kueue.x-k8s.io/podset-group-name`
  on the leader and worker templates, so Kueue finds one domain of that level for the whole
  group (Kueue KEP-2724, "Co-locate Leader with Workers"). The key must be a level of the
  Kueue Topology that the queue's ResourceFlavor names.

  Kueue's LeaderWorkerSet webhook (`leaderworkerset_webhook.go` ValidateUpdate) refuses to set,
  change or remove the queue of an existing LeaderWorkerSet, so `queueName` is immutable here
  too (a CEL transition rule). While it is set, the same webhook keeps both pod templates
  immutable except the container image: a later change that alters them (engine flags, env,
  resources, `spec.pod`, a re-plan after an operator upgrade) is refused, which the operator
  reports as `Ready=False`, `ApplyFailed`, with Kueue's message, while the running groups keep
  serving. Image changes and `spec.replicas` (scaling) go through.

Nothing here changes the plan. Every key is a Kubernetes qualified name (the node label that
defines the domain); names are DNS-1123 labels (they become label values).
"""

from typing import Annotated, Final, Literal

from pydantic import Field, field_validator

from dsv4_operator.api.meta import ApiModel
from dsv4_operator.api.v1alpha1.gpu import label_key_error

__all__ = [
    "EXCLUSIVE_TOPOLOGY_ANNOTATION",
    "KUEUE_ANNOTATION_PREFIX",
    "KUEUE_PRIORITY_CLASS_LABEL",
    "KUEUE_QUEUE_LABEL",
    "PODSET_GROUP_ANNOTATION",
    "PODSET_TOPOLOGY_ANNOTATIONS",
    "Placement",
    "TopologyPolicy",
]

EXCLUSIVE_TOPOLOGY_ANNOTATION: Final = "leaderworkerset.sigs.k8s.io/exclusive-topology"
"""LeaderWorkerSet annotation for 1:1 group-to-domain placement (kubernetes-sigs/lws,
`ExclusiveKeyAnnotationKey` in api/leaderworkerset/v1)."""
KUEUE_QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
"""Label naming the LocalQueue that admits a workload (Kueue `constants.QueueLabel`)."""
KUEUE_PRIORITY_CLASS_LABEL: Final = "kueue.x-k8s.io/priority-class"
"""Label naming a WorkloadPriorityClass (Kueue `constants.WorkloadPriorityClassLabel`)."""
KUEUE_ANNOTATION_PREFIX: Final = "kueue.x-k8s.io/podset-"
"""Prefix of Kueue's pod-template topology annotations, which `topologyKey` sets."""
PODSET_TOPOLOGY_ANNOTATIONS: Final = {
    "Required": "kueue.x-k8s.io/podset-required-topology",
    "Preferred": "kueue.x-k8s.io/podset-preferred-topology",
}
"""Kueue TAS pod-template annotations per policy (Kueue `PodSetRequiredTopologyAnnotation`,
`PodSetPreferredTopologyAnnotation`)."""
PODSET_GROUP_ANNOTATION: Final = "kueue.x-k8s.io/podset-group-name"
"""Kueue annotation that puts the leader and worker PodSets in one topology domain (Kueue
`PodSetGroupName`)."""

TopologyPolicy = Literal["Required", "Preferred"]

LabelKey = Annotated[str, Field(min_length=1, max_length=317)]
"""A node label key: `[prefix/]name`, prefix a DNS subdomain of at most 253 characters, name at
most 63 (core/v1 IsQualifiedName); the format is checked by the parse."""

LabelValueName = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
"""A DNS-1123 label (at most 63 characters): an object name that is also a label value."""


class Placement(ApiModel):
    """Group placement and admission of the replicas (all optional; the plan is unchanged)."""

    exclusive_topology_key: LabelKey | None = None
    """Node label key whose values are the domains a replica group gets to itself, e.g. a
    rack label or `cloud.google.com/gce-topology-block` (`kubernetes.io/hostname` only for
    one-node groups) (set as LeaderWorkerSet's `exclusive-topology` annotation; hard: extra
    groups stay Pending; applies to groups created after a change)."""
    queue_name: LabelValueName | None = None
    """Kueue LocalQueue (in the resource's namespace) that admits each replica group as one
    Workload against its quota (`kueue.x-k8s.io/queue-name` on the LeaderWorkerSet). Immutable;
    while set, Kueue refuses pod-template changes other than the image (ApplyFailed)."""
    workload_priority_class_name: LabelValueName | None = None
    """Kueue WorkloadPriorityClass of the groups (`kueue.x-k8s.io/priority-class`)."""
    topology_key: LabelKey | None = None
    """Kueue Topology Aware Scheduling: the topology level (a node label key, e.g.
    `cloud.google.com/gce-topology-block`) within one domain of which each group is placed;
    needs Kueue with TAS and a Topology that has this level, and Kueue managing the group
    (queueName, or Kueue's default LocalQueue); otherwise the annotations do nothing."""
    topology_policy: TopologyPolicy = "Required"
    """With topologyKey: Required (the group waits until one domain fits it) or Preferred (Kueue
    falls back to spreading it)."""

    @field_validator("exclusive_topology_key", "topology_key")
    @classmethod
    def _label_key(cls, value: str | None) -> str | None:
        if value is not None and (error := label_key_error(value)) is not None:
            raise ValueError(error)
        return value
