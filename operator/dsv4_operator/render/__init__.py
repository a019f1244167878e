"""Rendering (pure): a parsed spec and its plan -> child manifests and the desired status.

No kopf, no Kubernetes client, no I/O: dicts in the shape the API server takes. The
`dsv4-runtime` arguments (the operator <-> runtime contract) are in `render.runtime_args`.
"""

from dsv4_operator.render.labels import FIELD_MANAGER, Owner, child_names, standard_labels
from dsv4_operator.render.leaderworkerset import LWS_API_VERSION, leaderworkerset
from dsv4_operator.render.manifests import render_children
from dsv4_operator.render.service import (
    PDB_API_VERSION,
    endpoint,
    plan_config_map,
    plan_json,
    pod_disruption_budget,
    service,
)
from dsv4_operator.render.status import Observation, desired_status, plan_status, status_patch

__all__ = [
    "FIELD_MANAGER",
    "LWS_API_VERSION",
    "PDB_API_VERSION",
    "Observation",
    "Owner",
    "child_names",
    "desired_status",
    "endpoint",
    "leaderworkerset",
    "plan_config_map",
    "plan_json",
    "plan_status",
    "pod_disruption_budget",
    "render_children",
    "service",
    "standard_labels",
    "status_patch",
]
