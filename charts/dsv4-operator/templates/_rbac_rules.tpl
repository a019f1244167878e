{{/*
Cluster-scoped permissions, always granted by the ClusterRole: kopf scans CRDs and namespaces to
find what to serve, and keeps its ClusterKopfPeering record when it watches every namespace
(kopf docs: deployment RBAC; kopf/_core/engines/peering.py); the operator creates that object at
startup when it is missing (operator/dsv4_operator/kube/peering.py: create only, 409 if there).
*/}}
{{- define "dsv4-operator.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- if include "dsv4-operator.clusterWide" . }}
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [list, watch, patch, create]
{{- end }}
{{- end }}

{{/*
Namespaced permissions: by the ClusterRole when watchNamespaces is empty, else by a Role in each
watched namespace. Our client (operator/dsv4_operator/kube/client.py) reads the resource, patches
its status and (native autoscaler) its spec.replicas, and reads + server-side applies each child,
the KEDA ScaledObject or HPA included (apply needs create for a new object); it deletes its
own ScaledObject or HPA when the autoscaling mode no longer renders it, and deletes and creates
again its own Service, ConfigMap or PodDisruptionBudget when an update is refused
(kube/apply.py, uid precondition; never the LeaderWorkerSet); it creates each
resource's admin Secret (the runtimes' drain token, render/admin.py) once and reads it, and
reads the Secrets, ConfigMaps and PersistentVolumeClaims the spec names for the pods to tell
whether they (and their keys) exist (no list, watch or patch on Secrets and claims: it reads only
the objects it names);
the native autoscaler reads a replica group's leader pod by name (`get` on pods, no list or watch)
when that leader's runtime does not answer it, to tell a group that still serves (pod Ready)
from one that is restarting or gone (handlers/autoscaler.py); the children's
ownerReferences set
blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement admission plugin (on in
OpenShift) allows only with update on the owner's finalizers subresource;
kopf watches the resource, patches its progress annotations and posts Events, and lists and
watches the children (not the admin Secret: that would read every Secret) to reconcile an owner
at once when one is deleted (handlers/deployment.py WATCHED_CHILDREN); in namespaced
mode the operator creates its KopfPeering in each watched namespace at startup when missing.
*/}}
{{- define "dsv4-operator.namespacedRules" -}}
- apiGroups: [dsv4.io]
  resources: [deepseekv4deployments]
  verbs: [get, list, watch, patch]
- apiGroups: [dsv4.io]
  resources: [deepseekv4deployments/status]
  verbs: [patch]
- apiGroups: [dsv4.io]
  resources: [deepseekv4deployments/finalizers]
  verbs: [update]
- apiGroups: [leaderworkerset.x-k8s.io]
  resources: [leaderworkersets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
- apiGroups: [""]
  resources: [persistentvolumeclaims, pods]
  verbs: [get]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if not (include "dsv4-operator.clusterWide" .) }}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch, patch, create]
{{- end }}
{{- end }}
