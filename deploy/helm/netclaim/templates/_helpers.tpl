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
The objects of one multi-document YAML file under files/ (copies of the plain manifests in deploy/), as a
JSON list: the chart renders the same objects instead of a hand-written second version (the copies make the
chart self-contained; tests/unit/deploy/test_chart_files.py keeps them byte-equal to deploy/). A document
that does not parse fails the render rather than vanishing.
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
{{- fail (printf "%s: no objects (is it a copy of the manifest in deploy/?)" .file) }}
{{- end }}
{{- toJson $objects }}
{{- end }}

{{/* A name from deploy/rbac.yaml with its "netclaim" prefix replaced by the full name. */}}
{{- define "netclaim.rbacName" -}}
{{- printf "%s%s" (include "netclaim.fullname" .root) (trimPrefix "netclaim" .name) }}
{{- end }}

{{/* The listen address for --http-address: an IPv6 host goes in brackets, as host:port requires. */}}
{{- define "netclaim.httpAddress" -}}
{{- $host := .Values.http.host -}}
{{- if and (contains ":" $host) (not (hasPrefix "[" $host)) }}{{ $host = printf "[%s]" $host }}{{ end -}}
{{- printf "%s:%d" $host (int .Values.http.port) -}}
{{- end }}

{{/* The host a probe connects to: the listen address, or loopback when listening on all addresses. */}}
{{- define "netclaim.probeHost" -}}
{{- if has .Values.http.host (list "0.0.0.0" "::" "[::]") }}127.0.0.1{{ else }}{{ .Values.http.host }}{{ end }}
{{- end }}

{{/*
The device filter's flags (`netclaim run --exclude-interfaces=...`), one per criterion that is set:
deviceFilter.{exclude,include}.{interfaces,pciAddresses,drivers} as comma lists, .cel as one expression.
The driver checks every pattern and expression at start and names the flag in its error.
*/}}
{{- define "netclaim.deviceFilterArgs" -}}
{{- $flags := dict "interfaces" "interfaces" "pciAddresses" "pci-addresses" "drivers" "drivers" }}
{{- range $side := list "exclude" "include" }}
{{- $rules := get $.Values.deviceFilter $side | default dict }}
{{- range $key := list "interfaces" "pciAddresses" "drivers" }}
{{- with get $rules $key }}
{{ printf "- %s" (printf "--%s-%s=%s" $side (get $flags $key) (join "," .) | quote) | indent 12 }}
{{- end }}
{{- end }}
{{- with $rules.cel }}
{{ printf "- %s" (printf "--%s-cel=%s" $side . | quote) | indent 12 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Scraping from other pods needs the driver to listen on more than the node's loopback. */}}
{{- define "netclaim.checkMetricsReachable" -}}
{{- if and (or .Values.metrics.service.enabled .Values.metrics.podMonitor.enabled) (has .Values.http.host (list "127.0.0.1" "::1" "[::1]" "localhost")) }}
{{- fail "metrics.service / metrics.podMonitor: http.host is loopback (the default), so nothing off the node can scrape /metrics; set http.host to 0.0.0.0 (or the node's address) as well" }}
{{- end }}
{{- end }}
