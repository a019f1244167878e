{{/*
Cluster-scoped permissions, always granted by the ClusterRole.
- kopf scans CRDs and namespaces to find what to watch (kopf docs: deployment RBAC).
- ClusterKopfPeering: kopf's keep-alives when the operator watches every namespace.
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
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}

{{/*
Namespaced permissions: cluster-wide (ClusterRole) when watchNamespaces is empty, else a Role in
each watched namespace.
*/}}
{{- define "dsv4-operator.namespacedRules" -}}
- apiGroups: [dsv4.io]
  resources: [deepseekv4deployments]
  verbs: [get, list, watch, patch]
- apiGroups: [dsv4.io]
  resources: [deepseekv4deployments/status]
  verbs: [get, patch]
- apiGroups: [leaderworkerset.x-k8s.io]
  resources: [leaderworkersets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, watch, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if not (include "dsv4-operator.clusterWide" .) }}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}
