{{/* The name of every object: the release name, or release-meltemi when the release name lacks "meltemi". */}}
{{- define "meltemi.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the controller's pods; they never change across upgrades. */}}
{{- define "meltemi.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{/* Labels of every object. */}}
{{- define "meltemi.labels" -}}
{{ include "meltemi.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: meltemi
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "meltemi.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The admission webhook configurations the controller keeps the CA bundle of. */}}
{{- define "meltemi.validatingWebhook" -}}{{ include "meltemi.fullname" . }}-validation{{- end -}}
{{- define "meltemi.injectionWebhook" -}}{{ include "meltemi.fullname" . }}-injection{{- end -}}
{{- define "meltemi.webhookSecret" -}}{{ include "meltemi.fullname" . }}-webhook-tls{{- end -}}

{{- define "meltemi.checks" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "leaderElection.enabled: must be true when replicas > 1, or every replica would write" -}}
{{- end -}}
{{- end -}}
