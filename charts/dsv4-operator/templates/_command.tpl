{{/*
The container's command: `dsv4 operator run` (settings in DSV4_OPERATOR_* variables, see
deployment.yaml; `--verbose` for logLevel debug), after deriving this pod's kopf
peering priority from its name (cksum of $HOSTNAME, 1..2^31-1), so that replicas never tie; kopf
pauses every operator of equal priority (kopf docs/peering.rst).
*/}}
{{- define "dsv4-operator.command" -}}
command:
  - /bin/sh
  - -c
  - >-
    export DSV4_OPERATOR_PRIORITY=$((
    $(printf '%s' "$HOSTNAME" | cksum | cut -d ' ' -f 1) % 2147483646 + 1 ));
    exec dsv4 operator run "$@"
  - dsv4
{{- if eq .Values.logLevel "debug" }}
args:
  - --verbose
{{- end }}
{{- end }}
