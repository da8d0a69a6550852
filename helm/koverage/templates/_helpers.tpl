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
  kafka     ingest and worker (the only Kafka clients)
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
{{- if has $component (list "ingest" "worker") }}
{{ include "koverage.kafkaSecurityEnv" $root }}
{{- end }}
{{- if eq $component "worker" }}
- name: KOVERAGE_WORKER_DECODE_PROCESSES
  value: {{ $root.Values.worker.decodeProcesses | quote }}
{{- end }}
{{- if and (eq $component "ingest") $root.Values.auth.collectorTenant }}
- name: KOVERAGE_INGEST_TRUSTED_TENANTS
  value: {{ $root.Values.auth.collectorTenant | quote }}
{{- end }}
{{- if and (eq $component "router") $root.Values.auth.serviceTenant }}
- name: KOVERAGE_RELAY_TENANTS
  value: {{ $root.Values.auth.serviceTenant | quote }}
{{- end }}
{{- with $root.Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with (index $root.Values $component).extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Kafka security of a Kafka client (ingest, worker, collector): protocol, the
SASL login with its password from the existing Secret, and the CA file
mounted by koverage.kafkaCaVolume.
*/}}
{{- define "koverage.kafkaSecurityEnv" -}}
{{- $security := .Values.kafka.security -}}
- name: KOVERAGE_KAFKA_SECURITY_PROTOCOL
  value: {{ $security.protocol | quote }}
{{- if hasPrefix "SASL_" $security.protocol }}
- name: KOVERAGE_KAFKA_SASL_MECHANISM
  value: {{ $security.sasl.mechanism | quote }}
- name: KOVERAGE_KAFKA_SASL_USERNAME
  value: {{ $security.sasl.username | quote }}
{{ include "koverage.secretEnv" (dict "root" . "env" "KOVERAGE_KAFKA_SASL_PASSWORD" "key" .Values.secrets.keys.kafkaSaslPassword) }}
{{- end }}
{{- if $security.caSecret.name }}
- name: KOVERAGE_KAFKA_SSL_CA_LOCATION
  value: {{ include "koverage.kafkaCaFile" . | quote }}
{{- end }}
{{- end -}}

{{/* Path of the mounted Kafka CA certificate. */}}
{{- define "koverage.kafkaCaFile" -}}
/etc/koverage/kafka-ca/ca.crt
{{- end -}}

{{/* Mount of the Kafka CA Secret, when one is set (a volumeMounts item). */}}
{{- define "koverage.kafkaCaMount" -}}
{{- if .Values.kafka.security.caSecret.name -}}
- name: kafka-ca
  mountPath: /etc/koverage/kafka-ca
  readOnly: true
{{- end -}}
{{- end -}}

{{/* The Kafka CA Secret as a volume, when one is set (a volumes item). */}}
{{- define "koverage.kafkaCaVolume" -}}
{{- with .Values.kafka.security.caSecret -}}
{{- if .name -}}
- name: kafka-ca
  secret:
    secretName: {{ .name }}
    items:
      - key: {{ .key }}
        path: ca.crt
{{- end -}}
{{- end -}}
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
{{- if and $v.auth.collectorTenant (not $v.secrets.keys.collectorApiKey) -}}
{{- fail "auth.collectorTenant is set but secrets.keys.collectorApiKey is empty: the collector would present the services' client key, letting every service claim any tenant; give the collector a key of its own (with that tenant in apiKeys) and name it in secrets.keys.collectorApiKey" -}}
{{- end -}}
{{- if gt (int $v.chat.replicas) 1 -}}
{{- fail (printf "chat.replicas is %d but chat must run as one pod: on start it marks every streaming message in the database failed, so a second pod would fail the first one's live answers (see chat in values.yaml); set chat.replicas=1" (int $v.chat.replicas)) -}}
{{- end -}}
{{- $security := $v.kafka.security -}}
{{- $sasl := hasPrefix "SASL_" $security.protocol -}}
{{- if and $sasl (not $security.sasl.mechanism) -}}
{{- fail (printf "kafka.security.protocol is %s but kafka.security.sasl.mechanism is empty: set it to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512" $security.protocol) -}}
{{- end -}}
{{- if and $sasl (not $security.sasl.username) -}}
{{- fail (printf "kafka.security.protocol is %s but kafka.security.sasl.username is empty: set the SASL user name (for Strimzi, the KafkaUser's name)" $security.protocol) -}}
{{- end -}}
{{- if and $sasl (not $v.secrets.keys.kafkaSaslPassword) -}}
{{- fail (printf "kafka.security.protocol is %s but secrets.keys.kafkaSaslPassword is empty: name the key of the SASL password in the existing Secret" $security.protocol) -}}
{{- end -}}
{{- if and (not $sasl) (or $security.sasl.mechanism $security.sasl.username) -}}
{{- fail (printf "kafka.security.sasl is set but kafka.security.protocol is %s, which does not use SASL: set the protocol to SASL_SSL (or SASL_PLAINTEXT), or clear kafka.security.sasl" $security.protocol) -}}
{{- end -}}
{{- if and $security.caSecret.name (not (has $security.protocol (list "SSL" "SASL_SSL"))) -}}
{{- fail (printf "kafka.security.caSecret.name is set but kafka.security.protocol is %s, which does not use TLS: set the protocol to SSL or SASL_SSL, or clear caSecret.name" $security.protocol) -}}
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
