{{/*
Names. Kubernetes names are limited to 63 characters (DNS labels); the longest suffix the chart
appends is "-orchestrator-migrate" (21), so the prefix is cut at 40.
*/}}
{{- define "azora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "azora.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "azora.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "azora.labels" -}}
helm.sh/chart: {{ include "azora.chart" . }}
app.kubernetes.io/name: {{ include "azora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: azora
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "ledger"). */}}
{{- define "azora.selectorLabels" -}}
app.kubernetes.io/name: {{ include "azora.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "azora.componentLabels" -}}
{{ include "azora.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The four services: key -> what differs between them. "job" is the Prometheus job name
(ServiceMonitor jobLabel) and the value of the services' own "service" metric label; the alert
rules and dashboards select on it, so it does not depend on the release name.
*/}}
{{- define "azora.serviceTable" -}}
enrollment: {prefix: ENROLLMENT_, command: azora-enrollment, job: azora-enrollment, database: azora_enrollment}
ledger: {prefix: LEDGER_, command: azora-ledger, job: azora-ledger, database: azora_ledger}
pricing: {prefix: PRICING_, command: azora-pricing, job: azora-pricing, database: azora_pricing}
orchestrator: {prefix: ORCHESTRATOR_, command: azora-orchestrator, job: azora-orchestrator, database: azora_orchestrator}
{{- end }}

{{/* "<registry>/<repository>@<digest>" or ":<tag>": (dict "ctx" $ "image" .image). */}}
{{- define "azora.image" -}}
{{- $registry := .ctx.Values.image.registry }}
{{- $repo := .image.repository }}
{{- if $registry }}{{ $repo = printf "%s/%s" $registry $repo }}{{ end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "azora.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "azora.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* True when this service uses the in-chart dev PostgreSQL: (dict "ctx" $ "svc" $svc). */}}
{{- define "azora.usesDevPostgres" -}}
{{- if and .ctx.Values.postgresql.enabled (not .svc.database.url) (not .svc.database.existingSecret.name) }}true{{ end }}
{{- end }}

{{- define "azora.postgresHost" -}}
{{- printf "%s-postgresql" (include "azora.fullname" .) }}
{{- end }}

{{/*
Hook annotations for Secrets the migration Jobs need: pre-install hooks run before ordinary
objects exist, so these Secrets must be hooks too (weight below the Jobs).
before-hook-creation replaces them on upgrade with the same values (read back by lookup).
*/}}
{{- define "azora.secretHookAnnotations" -}}
helm.sh/hook: pre-install,pre-upgrade
helm.sh/hook-weight: "-10"
helm.sh/hook-delete-policy: before-hook-creation
{{- end }}

{{/*
Environment of a service container and its migration Job: (dict "ctx" $ "key" "ledger").
Secrets come from "<fullname>-<key>-env" (written by secrets.yaml).
*/}}
{{- define "azora.serviceEnv" -}}
{{- $ctx := .ctx }}
{{- $key := .key }}
{{- $svc := index $ctx.Values.services $key }}
{{- $t := index (include "azora.serviceTable" $ctx | fromYaml) $key }}
{{- $fullname := include "azora.fullname" $ctx }}
{{- $secret := printf "%s-%s-env" $fullname $key }}
- name: {{ $t.prefix }}ENVIRONMENT
  value: production
- name: {{ $t.prefix }}HOST
  value: "0.0.0.0"
- name: {{ $t.prefix }}PORT
  value: "8000"
- name: {{ $t.prefix }}LOG_JSON
  value: "true"
- name: {{ $t.prefix }}DATABASE_URL
  valueFrom:
    secretKeyRef:
{{- if $svc.database.existingSecret.name }}
      name: {{ $svc.database.existingSecret.name }}
      key: {{ $svc.database.existingSecret.key }}
{{- else }}
      name: {{ $secret }}
      key: DATABASE_URL
{{- end }}
- name: {{ $t.prefix }}ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: ADMIN_TOKEN
- name: {{ $t.prefix }}API_TOKENS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: API_TOKENS
{{- if eq $key "enrollment" }}
- name: ENROLLMENT_PRICING_URL
  value: {{ printf "http://%s-pricing:%d" $fullname (int $ctx.Values.services.pricing.service.port) | quote }}
- name: ENROLLMENT_LEDGER_URL
  value: {{ printf "http://%s-ledger:%d" $fullname (int $ctx.Values.services.ledger.service.port) | quote }}
- name: ENROLLMENT_SERVICE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: SERVICE_TOKEN
{{- end }}
{{- range $name, $value := $svc.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Writable scratch space: the root filesystem is read-only. */}}
{{- define "azora.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}
