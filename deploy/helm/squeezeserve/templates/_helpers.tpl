{{/* Names and labels shared by the templates. */}}

{{- define "squeezeserve.labels" -}}
app.kubernetes.io/name: squeezeserve
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "squeezeserve.selectorLabels" -}}
app.kubernetes.io/name: squeezeserve
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "squeezeserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}{{ default .Release.Name .Values.serviceAccount.name }}{{ else }}{{ default "default" .Values.serviceAccount.name }}{{ end }}
{{- end }}

{{/* Replicas the ring may hold: every pod an autoscaler may create. */}}
{{- define "squeezeserve.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.maxReplicas }}{{ else }}{{ .Values.replicas }}{{ end }}
{{- end }}

{{/* The stable DNS name of pod N (a StatefulSet pod behind the headless Service): the ring's host key. */}}
{{- define "squeezeserve.podHost" -}}
{{- printf "%s-%d.%s-headless.%s.svc.%s" .root.Release.Name (int .index) .root.Release.Name .root.Release.Namespace .root.Values.routing.clusterDomain }}
{{- end }}

{{/* storageClassName: absent (the default class provisions), "" for "-" (a hand-made PV), or the name. */}}
{{- define "squeezeserve.storageClass" -}}
{{- with .Values.store.storageClassName }}
{{- if eq . "-" }}
storageClassName: ""
{{- else }}
storageClassName: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "squeezeserve.envoySelectorLabels" -}}
app.kubernetes.io/name: squeezeserve-envoy
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "squeezeserve.envoyLabels" -}}
{{ include "squeezeserve.envoySelectorLabels" . }}
app.kubernetes.io/component: router
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
