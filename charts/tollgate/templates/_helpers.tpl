{{/* Names: at most 63 characters (DNS label), without a trailing dash. */}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Component names leave room for their suffix. */}}
{{- define "tollgate.processor.fullname" -}}
{{- printf "%s-processor" (include "tollgate.fullname" . | trunc 53 | trimSuffix "-") -}}
{{- end -}}

{{- define "tollgate.injector.fullname" -}}
{{- printf "%s-injector" (include "tollgate.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tollgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels: stable across upgrades, so never the version. */}}
{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tollgate.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.processor.serviceAccountName" -}}
{{- if .Values.processor.serviceAccount.create -}}
{{- default (include "tollgate.processor.fullname" .) .Values.processor.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.processor.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.injector.serviceAccountName" -}}
{{- if .Values.injector.serviceAccount.create -}}
{{- default (include "tollgate.injector.fullname" .) .Values.injector.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.injector.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the provider keys: the operator's, or the chart's. */}}
{{- define "tollgate.providerKeysSecret" -}}
{{- default (printf "%s-provider-keys" (include "tollgate.fullname" . | trunc 49 | trimSuffix "-")) .Values.providerKeys.existingSecret -}}
{{- end -}}

{{/* The MutatingWebhookConfiguration's name: the injector patches its
caBundle, and RBAC allows exactly this name. */}}
{{- define "tollgate.webhookConfigName" -}}
{{- printf "%s.%s" (include "tollgate.injector.fullname" .) .Release.Namespace | trunc 253 -}}
{{- end -}}

{{- define "tollgate.injector.tlsSecret" -}}
{{- printf "%s-tls" (include "tollgate.injector.fullname" .) -}}
{{- end -}}

{{/* Gateway processor address the sidecars call (gRPC). */}}
{{- define "tollgate.processor.grpcAddress" -}}
{{- printf "%s.%s.svc:%v" (include "tollgate.processor.fullname" .) .Release.Namespace .Values.processor.ports.grpc -}}
{{- end -}}

{{/* Checks the schema cannot express: the processor keeps TPM counters in
memory and the ledger in SQLite unless Redis and PostgreSQL are configured,
so several replicas would each enforce their own limit and write their own
ledger. */}}
{{- define "tollgate.validate" -}}
{{- $p := .Values.processor -}}
{{- $scaled := or (gt (int $p.replicas) 1) $p.autoscaling.enabled -}}
{{- if and $scaled (not (and .Values.redis.enabled .Values.postgres.enabled)) -}}
{{- fail "processor.replicas > 1 or processor.autoscaling.enabled needs redis.enabled and postgres.enabled: with in-memory TPM counters and a SQLite ledger per pod, each replica would enforce its own limit and keep its own ledger" -}}
{{- end -}}
{{- if and $scaled $p.persistence.enabled -}}
{{- fail "processor.persistence is for the single-replica SQLite ledger; with several replicas the ledger is in PostgreSQL" -}}
{{- end -}}
{{- if and .Values.redis.enabled (not (or .Values.redis.url .Values.redis.existingSecret)) -}}
{{- fail "redis.enabled needs redis.url or redis.existingSecret (an existing Redis; the chart does not install one)" -}}
{{- end -}}
{{- if and .Values.redis.url .Values.redis.existingSecret -}}
{{- fail "redis: set either url or existingSecret, not both" -}}
{{- end -}}
{{- if and .Values.postgres.enabled (not .Values.postgres.existingSecret) -}}
{{- fail "postgres.enabled needs postgres.existingSecret (a Secret with the ledger URL; the chart does not install PostgreSQL)" -}}
{{- end -}}
{{- if and .Values.otel.enabled (not .Values.otel.endpoint) -}}
{{- fail "otel.enabled needs otel.endpoint" -}}
{{- end -}}
{{- if and .Values.providerKeys.existingSecret (or .Values.providerKeys.openai .Values.providerKeys.anthropic .Values.providerKeys.gemini) -}}
{{- fail "providerKeys: set either existingSecret or the keys themselves, not both" -}}
{{- end -}}
{{- if and $p.podDisruptionBudget.enabled (not (kindIs "invalid" $p.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" $p.podDisruptionBudget.maxUnavailable)) -}}
{{- fail "processor.podDisruptionBudget: set minAvailable or maxUnavailable, not both (null the other)" -}}
{{- end -}}
{{- end -}}

{{/* The providers that have a key: a list of {name, key}, key being the
name of the entry in the provider-keys Secret. */}}
{{- define "tollgate.keyedProviders" -}}
{{- $k := .Values.providerKeys -}}
{{- $out := list -}}
{{- range $name := list "openai" "anthropic" "gemini" -}}
{{- if $k.existingSecret -}}
{{- with get $k.secretKeys $name -}}
{{- $out = append $out (dict "name" $name "key" .) -}}
{{- end -}}
{{- else if get $k $name -}}
{{- $out = append $out (dict "name" $name "key" $name) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The injector's label interface (injector.LabelInject, ValueEnabled):
fixed in the injector's code, so not values. */}}
{{- define "tollgate.injectLabel" -}}tollgate.dev/inject{{- end -}}
{{- define "tollgate.injectEnabled" -}}enabled{{- end -}}

{{/* The Secret holding the admin API token: the operator's, or the chart's. */}}
{{- define "tollgate.adminTokenSecret" -}}
{{- default (printf "%s-admin-token" (include "tollgate.fullname" . | trunc 51 | trimSuffix "-")) .Values.adminToken.existingSecret -}}
{{- end -}}

{{/* The Secret holding the token signing keys: the operator's, or the chart's. */}}
{{- define "tollgate.signingKeysSecret" -}}
{{- default (printf "%s-signing-keys" (include "tollgate.fullname" . | trunc 50 | trimSuffix "-")) .Values.signingKeys.existingSecret -}}
{{- end -}}

{{/* The admin token as an env entry (TOLLGATE_ADMIN_TOKEN), by reference. */}}
{{- define "tollgate.adminTokenEnv" -}}
- name: TOLLGATE_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "tollgate.adminTokenSecret" . }}
      key: {{ .Values.adminToken.key }}
{{- end -}}
