{{/*
Names, labels and the pieces every Koverage pod shares.
*/}}

{{/* The Koverage services this chart runs, in start order. */}}
{{- define "koverage.components" -}}
router chat ingest worker underwriter
{{- end -}}

{{/* Chart name, truncated to 63 characters. */}}
{{- define "koverage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-<chart>, or the release when it contains the chart. */}}
{{- define "koverage.fullname" -}}
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

{{/* Name of one component's resources: <fullname>-<component>. */}}
{{- define "koverage.componentName" -}}
{{- $fullname := include "koverage.fullname" .root -}}
{{- printf "%s-%s" ($fullname | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "koverage.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "koverage.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: koverage
{{- end -}}

{{/* Labels that identify the release's pods (used by the NetworkPolicy). */}}
{{- define "koverage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "koverage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: call with (dict "root" $ "component" "router"). */}}
{{- define "koverage.componentLabels" -}}
{{ include "koverage.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Selector of one component. Only name, instance and component: chart and
version labels change on upgrade and selectors are immutable.
*/}}
{{- define "koverage.componentSelectorLabels" -}}
{{ include "koverage.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* ServiceAccount the pods run as. */}}
{{- define "koverage.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "koverage.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Koverage image reference. */}}
{{- define "koverage.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* In-cluster gRPC address of a component: <name>:50051. */}}
{{- define "koverage.address" -}}
{{- printf "%s:50051" (include "koverage.componentName" .) -}}
{{- end -}}

{{/* Environment variable reading one key of the existing Secret. */}}
{{- define "koverage.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.secrets.existingSecret }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/*
Environment of one component's container: its own bind address, then the
credentials it needs, least privilege first:
  database  chat, worker, underwriter (the table owners) and the migration
  providers router only (the only door to models)
Shared, non-secret settings come from the ConfigMap through envFrom.
*/}}
{{- define "koverage.componentEnv" -}}
{{- $root := .root -}}
{{- $component := .component -}}
- name: KOVERAGE_{{ upper $component }}_ADDRESS
  value: "0.0.0.0:50051"
- name: KOVERAGE_SERVICE_NAME
  value: koverage-{{ $component }}
{{ include "koverage.secretEnv" (dict "root" $root "env" "KOVERAGE_API_KEYS" "key" $root.Values.secrets.keys.apiKeys "optional" (not $root.Values.auth.required)) }}
{{ include "koverage.secretEnv" (dict "root" $root "env" "KOVERAGE_CLIENT_API_KEY" "key" $root.Values.secrets.keys.clientApiKey "optional" (not $root.Values.auth.required)) }}
{{- if has $component (list "chat" "worker" "underwriter") }}
{{ include "koverage.secretEnv" (dict "root" $root "env" "KOVERAGE_DATABASE_URL" "key" $root.Values.secrets.keys.databaseUrl) }}
{{- end }}
{{- if eq $component "router" }}
{{ include "koverage.secretEnv" (dict "root" $root "env" "KOVERAGE_OPENROUTER_API_KEY" "key" $root.Values.secrets.keys.openrouterApiKey "optional" true) }}
{{ include "koverage.secretEnv" (dict "root" $root "env" "KOVERAGE_MODAL_API_KEY" "key" $root.Values.secrets.keys.modalApiKey "optional" (not $root.Values.providers.modal.baseUrl)) }}
{{- end }}
{{- with $root.Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with (index $root.Values $component).extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod security context. */}}
{{- define "koverage.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end -}}

{{/* Container security context. */}}
{{- define "koverage.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end -}}

{{/*
Refuses contradictory or incomplete values with a message that says what to
change. Included by every template that depends on them.
*/}}
{{- define "koverage.validate" -}}
{{- $v := .Values -}}
{{- if not $v.secrets.existingSecret -}}
{{- fail "secrets.existingSecret is required: create a Secret with the keys listed under secrets.keys (database URL, API keys) and set its name" -}}
{{- end -}}
{{- if not $v.kafka.bootstrap -}}
{{- fail "kafka.bootstrap is required: set the bootstrap servers of your Kafka cluster (for Strimzi: <cluster>-kafka-bootstrap.<namespace>.svc:9092)" -}}
{{- end -}}
{{- $partitions := int $v.kafka.spansTopicPartitions -}}
{{- if $v.worker.autoscaling.enabled -}}
{{- if gt (int $v.worker.autoscaling.maxReplicas) $partitions -}}
{{- fail (printf "worker.autoscaling.maxReplicas (%d) exceeds kafka.spansTopicPartitions (%d): consumers beyond the partition count sit idle; lower maxReplicas or add partitions" (int $v.worker.autoscaling.maxReplicas) $partitions) -}}
{{- end -}}
{{- else if gt (int $v.worker.replicas) $partitions -}}
{{- fail (printf "worker.replicas (%d) exceeds kafka.spansTopicPartitions (%d): consumers beyond the partition count sit idle; lower replicas or add partitions" (int $v.worker.replicas) $partitions) -}}
{{- end -}}
{{- range $name := list "router" "worker" -}}
{{- $hpa := (index $v $name).autoscaling -}}
{{- if and $hpa.enabled (gt (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- fail (printf "%s.autoscaling.minReplicas (%d) is greater than maxReplicas (%d)" $name (int $hpa.minReplicas) (int $hpa.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- $pdb := $v.podDisruptionBudget -}}
{{- if and $pdb.enabled (not (kindIs "invalid" $pdb.minAvailable)) (not (kindIs "invalid" $pdb.maxUnavailable)) -}}
{{- fail "podDisruptionBudget: set either minAvailable or maxUnavailable, not both (set the other to null)" -}}
{{- end -}}
{{- if and $v.auth.required (not $v.secrets.keys.apiKeys) -}}
{{- fail "auth.required is true but secrets.keys.apiKeys is empty: name the Secret key that holds key=tenant pairs, or set auth.required=false" -}}
{{- end -}}
{{- $limits := $v.collector.resources.limits | default dict -}}
{{- with $limits.memory -}}
{{- $limitMiB := 0 -}}
{{- if hasSuffix "Gi" . -}}{{- $limitMiB = mul (int (trimSuffix "Gi" .)) 1024 -}}{{- else if hasSuffix "Mi" . -}}{{- $limitMiB = int (trimSuffix "Mi" .) -}}{{- end -}}
{{- if and (gt $limitMiB 0) (ge (int $v.collector.memoryLimitMiB) $limitMiB) -}}
{{- fail (printf "collector.memoryLimitMiB (%d) must be below collector.resources.limits.memory (%s), or the kernel kills the collector before its memory_limiter can refuse data" (int $v.collector.memoryLimitMiB) .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
