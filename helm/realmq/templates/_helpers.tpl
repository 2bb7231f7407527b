{{/* The release's base name, at most 52 characters: the StatefulSet name ends up in the
controller-revision-hash label (63 characters with an 11-character suffix). */}}
{{- define "realmq.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The headless Service that gives each pod its DNS name (peers dial each other by it). */}}
{{- define "realmq.headless" -}}
{{- printf "%s-headless" (include "realmq.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "realmq.secretName" -}}
{{- if .Values.rootPassword.existingSecret -}}
{{- .Values.rootPassword.existingSecret -}}
{{- else -}}
{{- printf "%s-root" (include "realmq.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "realmq.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "realmq.labels" -}}
{{ include "realmq.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* Voters the cluster keeps: a StatefulSet smaller than `voters` has one per pod. */}}
{{- define "realmq.voters" -}}
{{- min (int .Values.voters) (int .Values.replicas) -}}
{{- end -}}

{{/* Pods that may be down at once while a raft majority of the voters stays up. */}}
{{- define "realmq.maxUnavailable" -}}
{{- $voters := int (include "realmq.voters" .) -}}
{{- max 1 (sub $voters (add (div $voters 2) 1)) -}}
{{- end -}}
