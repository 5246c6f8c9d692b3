{{/* The chart's name. */}}
{{- define "ferrocast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name for every object. */}}
{{- define "ferrocast.fullname" -}}
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

{{- define "ferrocast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrocast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ferrocast.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ferrocast.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the `helm test` objects: outside the nodes' selector. */}}
{{- define "ferrocast.testLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ferrocast.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ferrocast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferrocast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ferrocast.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Settings that do not fit together; rendering stops with the reason.
*/}}
{{- define "ferrocast.validate" -}}
{{- $clustered := or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- if and $clustered (eq .Values.backplane.type "memory") }}
{{- fail "more than one node needs backplane.type redis or nats (a memory backplane does not reach other nodes)" }}
{{- end }}
{{- if and (ne .Values.backplane.type "memory") (not (or .Values.backplane.url .Values.backplane.existingSecret)) }}
{{- fail (printf "backplane.type %s needs backplane.url or backplane.existingSecret" .Values.backplane.type) }}
{{- end }}
{{- $schemes := dict "redis" (list "redis://" "rediss://") "nats" (list "nats://" "tls://") }}
{{- with .Values.backplane.url }}
{{- $url := . }}
{{- $ok := false }}
{{- range (get $schemes $.Values.backplane.type) }}
{{- if hasPrefix . $url }}{{ $ok = true }}{{ end }}
{{- end }}
{{- if not $ok }}
{{- fail (printf "backplane.url %s does not fit backplane.type %s" $url $.Values.backplane.type) }}
{{- end }}
{{- end }}
{{- $window := add .Values.drain.preStopSleepSeconds .Values.drain.timeoutSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $window) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed drain.preStopSleepSeconds + drain.timeoutSeconds (%d): Kubernetes would kill nodes mid-drain" (int .Values.terminationGracePeriodSeconds) (int $window)) }}
{{- end }}
{{- end }}

{{/*
A TOML value: YAML numbers reach templates as floats, so whole numbers are
written as integers (the node refuses 50000.0 for a count).
*/}}
{{- define "ferrocast.tomlValue" -}}
{{- if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) }}
{{- if eq (float64 (int64 .)) (float64 .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if kindIs "string" . }}{{ toJson . }}
{{- else }}{{ fail (printf "config: %v cannot be written as a TOML value" .) }}
{{- end }}
{{- end }}

{{/*
A TOML table from a map: its plain keys, then a [section] per nested map.
Takes (dict "table" MAP "prefix" "section.path.").
*/}}
{{- define "ferrocast.tomlTable" -}}
{{- $prefix := .prefix }}
{{- range $key, $value := .table }}
{{- if not (kindIs "map" $value) }}
{{ toJson $key }} = {{ include "ferrocast.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $key, $value := .table }}
{{- if kindIs "map" $value }}
{{ printf "[%s%s]" $prefix (toJson $key) }}
{{- include "ferrocast.tomlTable" (dict "table" $value "prefix" (printf "%s%s." $prefix (toJson $key))) }}
{{- end }}
{{- end }}
{{- end }}
