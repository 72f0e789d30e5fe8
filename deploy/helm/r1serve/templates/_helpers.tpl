{{- define "r1serve.fullname" -}}
{{- printf "%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "r1serve.labels" -}}
app.kubernetes.io/name: r1serve
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "r1serve.selector" -}}
app.kubernetes.io/name: r1serve
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "r1serve.claim" -}}
{{- default (printf "%s-models" (include "r1serve.fullname" .)) .Values.model.existingClaim -}}
{{- end -}}
