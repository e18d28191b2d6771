{{/*
The chart name, or nameOverride.
*/}}
{{- define "webhook-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified name of the release's objects: fullnameOverride, else the
release name if it already contains the chart name, else "<release>-<chart>".
Truncated to 63 characters because some Kubernetes name fields are limited to
that (DNS-1123 labels). Suffixes such as "-ingest" are added to it, so keep it
under 55 characters.
*/}}
{{- define "webhook-operator.fullname" -}}
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

{{/*
The chart name and version, for the helm.sh/chart label.
*/}}
{{- define "webhook-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels of every object.
*/}}
{{- define "webhook-operator.labels" -}}
helm.sh/chart: {{ include "webhook-operator.chart" . }}
{{ include "webhook-operator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: webhook-operator
{{- end }}

{{/*
The labels that select the manager's Pods. They are part of the
StatefulSet's immutable selector: never change them.
*/}}
{{- define "webhook-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "webhook-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the manager runs as.
*/}}
{{- define "webhook-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "webhook-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The namespace of the leader election Lease (and of its Role).
*/}}
{{- define "webhook-operator.leaderElectionNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{/*
The manager image: repository and tag (appVersion unless image.tag is set),
or repository@digest when image.digest is set.
*/}}
{{- define "webhook-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
True (non-empty) when the event store is the embedded NATS server, whose file
store lives on the Pod's volume.
*/}}
{{- define "webhook-operator.embeddedNATS" -}}
{{- if not .Values.nats.url }}true{{ end }}
{{- end }}

{{/*
Fails the render on value combinations the schema cannot express clearly.
*/}}
{{- define "webhook-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.nats.url) }}
{{- fail (printf "\n\nreplicaCount=%d needs an external NATS cluster: with the embedded NATS server (nats.url empty) the event store is a file store on the Pod's own volume, and only one replica may run. Set nats.url (and nats.replicas), or keep replicaCount=1. See docs/install.md, \"External NATS\"." (int .Values.replicaCount)) }}
{{- end }}
{{- if and (gt (int .Values.nats.replicas) 1) (not .Values.nats.url) }}
{{- fail (printf "\n\nnats.replicas=%d needs an external NATS cluster (nats.url): the embedded NATS server is a single node and can only keep one copy of each stream." (int .Values.nats.replicas)) }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "\n\nreplicaCount=%d needs leaderElection.enabled=true: without it every replica would reconcile and write status." (int .Values.replicaCount)) }}
{{- end }}
{{- end }}
