{{/* Chart name, cut to 63 characters (label value limit). */}}
{{- define "dsv4-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart> unless the release name already holds the chart name. */}}
{{- define "dsv4-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dsv4-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels (app.kubernetes.io/*) on every object. */}}
{{- define "dsv4-operator.labels" -}}
helm.sh/chart: {{ include "dsv4-operator.chart" . }}
{{ include "dsv4-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dsv4
{{- end }}

{{- define "dsv4-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dsv4-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "dsv4-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dsv4-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "dsv4-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- /* An all-digit tag arrives as a number: an int64 from `--set`, a float64 from a values
       file (which toString would print as 2.0250101e+07). */}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if kindIs "float64" $tag }}{{ $tag = int64 $tag }}{{ end }}
{{- printf "%s:%s" .Values.image.repository (toString $tag) }}
{{- end }}
{{- end }}

{{/* True ("true") when the operator watches every namespace. */}}
{{- define "dsv4-operator.clusterWide" -}}
{{- if not .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/* The metrics Service: a DNS-1035 label, so at most 63 characters with its suffix. */}}
{{- define "dsv4-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "dsv4-operator.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
Space-separated paths (spec.cost, spec.gpu.types[]) of the schema properties that `live` (an
openAPIV3Schema from the cluster) declares and `ours` lacks, below `path`; recursing through
properties, items and additionalProperties schemas (crd-upgrade.yaml: no CRD downgrade). Where
`ours` keeps unknown fields (x-kubernetes-preserve-unknown-fields), the API server keeps what
it does not list, so only the properties it does list are compared (api.crd.schema_gaps).
*/}}
{{- define "dsv4-operator.propertiesMissing" -}}
{{- $ours := .ours | default dict }}
{{- $keeps := index $ours "x-kubernetes-preserve-unknown-fields" }}
{{- $ourProperties := $ours.properties | default dict }}
{{- range $name, $liveChild := (.live.properties | default dict) }}
{{- $at := ternary $name (printf "%s.%s" $.path $name) (eq $.path "") }}
{{- if hasKey $ourProperties $name }}
{{- include "dsv4-operator.propertiesMissing" (dict "live" $liveChild "ours" (get $ourProperties $name) "path" $at) }}
{{- else if not $keeps }}
{{- printf "%s " $at }}
{{- end }}
{{- end }}
{{- if and (kindIs "map" .live.items) (or (not $keeps) (kindIs "map" $ours.items)) }}
{{- include "dsv4-operator.propertiesMissing" (dict "live" .live.items "ours" $ours.items "path" (printf "%s[]" .path)) }}
{{- end }}
{{- if and (kindIs "map" .live.additionalProperties) (or (not $keeps) (kindIs "map" $ours.additionalProperties)) }}
{{- include "dsv4-operator.propertiesMissing" (dict "live" .live.additionalProperties "ours" $ours.additionalProperties "path" (printf "%s{}" .path)) }}
{{- end }}
{{- end }}
