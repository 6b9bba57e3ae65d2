{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "qwen3-reranker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart unless the release name already holds the chart's. */}}
{{- define "qwen3-reranker.fullname" -}}
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

{{- define "qwen3-reranker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "qwen3-reranker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qwen3-reranker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "qwen3-reranker.labels" -}}
helm.sh/chart: {{ include "qwen3-reranker.chart" . }}
{{ include "qwen3-reranker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: reranker
app.kubernetes.io/part-of: qwen3-reranker
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "qwen3-reranker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "qwen3-reranker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the API key(s), or "" when the server runs without one. */}}
{{- define "qwen3-reranker.apiKeySecret" -}}
{{- if .Values.apiKey.existingSecret }}
{{- .Values.apiKey.existingSecret }}
{{- else if .Values.apiKey.value }}
{{- printf "%s-api-key" (include "qwen3-reranker.fullname" .) }}
{{- end }}
{{- end }}

{{- define "qwen3-reranker.apiKeySecretKey" -}}
{{- if .Values.apiKey.existingSecret }}{{ .Values.apiKey.existingSecretKey }}{{ else }}api-key{{ end }}
{{- end }}

{{/* Server settings as RERANK_* values: config, plus one engine per GPU when a pod has several. */}}
{{- define "qwen3-reranker.serverConfig" -}}
{{- $config := deepCopy .Values.config }}
{{- if and (gt (int .Values.gpu.count) 1) (kindIs "invalid" (index $config "dataParallelSize")) }}
{{- $_ := set $config "dataParallelSize" (int .Values.gpu.count) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* SIGTERM to SIGKILL: longer than the server's drain (delay + timeout), 15 s to spare by default. */}}
{{- define "qwen3-reranker.gracePeriod" -}}
{{- $delay := .Values.config.drainDelay }}
{{- if kindIs "invalid" $delay }}{{ $delay = 5 }}{{ end }}
{{- $timeout := .Values.config.drainTimeout }}
{{- if kindIs "invalid" $timeout }}{{ $timeout = 30 }}{{ end }}
{{- $drain := add (ceil $delay | int) (int $timeout) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $drain 15 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than config.drainDelay + config.drainTimeout (%d): the drain would be cut" .Values.terminationGracePeriodSeconds $drain) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{- define "qwen3-reranker.autoscaled" -}}
{{- if or .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled }}true{{ end }}
{{- end }}
