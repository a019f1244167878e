"""`spec.placement` as LeaderWorkerSet metadata: LWS exclusive topology and Kueue labels.

The meaning of each key, with its upstream source, is in `dsv4_operator.api.v1alpha1.placement`.
"""

from __future__ import annotations

from dsv4_operator.api.v1alpha1.placement import (
    EXCLUSIVE_TOPOLOGY_ANNOTATION,
    KUEUE_PRIORITY_CLASS_LABEL,
    KUEUE_QUEUE_LABEL,
    PODSET_GROUP_ANNOTATION,
    PODSET_TOPOLOGY_ANNOTATIONS,
    Placement,
)

__all__ = [
    "HOSTNAME_LABEL",
    "lws_annotations",
    "lws_labels",
    "placement_error",
    "template_annotations",
]

HOSTNAME_LABEL = "kubernetes.io/hostname"
"""The well-known node label whose domains are single nodes (core/v1 `LabelHostname`)."""


def placement_error(placement: Placement, nodes: int) -> str | None:
    """Why `placement` can never schedule a planned group of `nodes` pods, or None.

    A group that must live inside one domain of the node-hostname level (LWS exclusive
    topology, or Kueue TAS with policy Required) fits only if it is one pod: every pod takes a
    whole node's GPUs, so a multi-node group would stay Pending forever.
    """
    if nodes <= 1:
        return None
    if placement.exclusive_topology_key == HOSTNAME_LABEL:
        return (
            f"spec.placement.exclusiveTopologyKey {HOSTNAME_LABEL} puts a whole group on one node, "
            f"but the plan's group spans {nodes} nodes: use a rack or network-block label"
        )
    if placement.topology_key == HOSTNAME_LABEL and placement.topology_policy == "Required":
        return (
            f"spec.placement.topologyKey {HOSTNAME_LABEL} with topologyPolicy Required puts a "
            f"whole group on one node, but the plan's group spans {nodes} nodes: use a rack or "
            "network-block level, or topologyPolicy Preferred"
        )
    return None


def lws_labels(placement: Placement) -> dict[str, str]:
    """Labels of the LeaderWorkerSet object itself, where Kueue reads them (may be empty)."""
    labels: dict[str, str] = {}
    if placement.queue_name is not None:
        labels[KUEUE_QUEUE_LABEL] = placement.queue_name
    if placement.workload_priority_class_name is not None:
        labels[KUEUE_PRIORITY_CLASS_LABEL] = placement.workload_priority_class_name
    return labels


def lws_annotations(placement: Placement) -> dict[str, str]:
    """Annotations of the LeaderWorkerSet object itself, where LWS's webhook reads them."""
    if placement.exclusive_topology_key is None:
        return {}
    return {EXCLUSIVE_TOPOLOGY_ANNOTATION: placement.exclusive_topology_key}


def template_annotations(placement: Placement, group_name: str, size: int) -> dict[str, str]:
    """Kueue TAS annotations of both pod templates of a group of `size` pods (may be empty).

    Args:
        placement: `spec.placement`.
        group_name: the PodSet group name, the LeaderWorkerSet's name (unique in the namespace).
        size: pods per group (LWS `size`). The group name is set only when the group has
            workers: with one pod the worker PodSet is empty and there is nothing to co-locate.
    """
    if placement.topology_key is None:
        return {}
    annotations = {PODSET_TOPOLOGY_ANNOTATIONS[placement.topology_policy]: placement.topology_key}
    if size > 1:
        annotations[PODSET_GROUP_ANNOTATION] = group_name
    return annotations
