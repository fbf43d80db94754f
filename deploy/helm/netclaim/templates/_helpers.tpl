{{/* Names and labels shared by every template. */}}

{{- define "netclaim.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: also the prefix that replaces "netclaim" in the names of the RBAC objects taken from
deploy/rbac.yaml. Capped at 52 characters so that "-status-reader" still fits in 63.
*/}}
{{- define "netclaim.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "netclaim.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "netclaim.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Pod selector: the same two labels as deploy/daemonset.yaml, plus the release instance. */}}
{{- define "netclaim.selectorLabels" -}}
app.kubernetes.io/name: {{ include "netclaim.name" . }}
app.kubernetes.io/component: driver
{{- end }}

{{- define "netclaim.labels" -}}
{{ include "netclaim.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/*
The objects of one multi-document YAML file under files/ (links to the plain manifests in deploy/), as a
JSON list: the chart renders them instead of keeping a second copy. A document that does not parse fails
the render rather than vanishing.
*/}}
{{- define "netclaim.sourceObjects" -}}
{{- $objects := list }}
{{- range $doc := regexSplit "(?m)^---[ \t]*$" (.root.Files.Get .file) -1 }}
{{- $object := fromYaml $doc }}
{{- if hasKey $object "Error" }}
{{- fail (printf "%s: %s" $.file $object.Error) }}
{{- end }}
{{- if $object.kind }}
{{- $objects = append $objects $object }}
{{- end }}
{{- end }}
{{- if not $objects }}
{{- fail (printf "%s: no objects (is the link to deploy/ intact?)" .file) }}
{{- end }}
{{- toJson $objects }}
{{- end }}

{{/* A name from deploy/rbac.yaml with its "netclaim" prefix replaced by the full name. */}}
{{- define "netclaim.rbacName" -}}
{{- printf "%s%s" (include "netclaim.fullname" .root) (trimPrefix "netclaim" .name) }}
{{- end }}

{{/* The host a probe connects to: the listen address, or loopback when listening on all addresses. */}}
{{- define "netclaim.probeHost" -}}
{{- if has .Values.http.host (list "0.0.0.0" "::" "[::]") }}127.0.0.1{{ else }}{{ .Values.http.host }}{{ end }}
{{- end }}
