{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "exchanger.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, plus the chart name unless it already holds it. */}}
{{- define "exchanger.fullname" -}}
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

{{- define "exchanger.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "exchanger.selectorLabels" -}}
app.kubernetes.io/name: {{ include "exchanger.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "exchanger.labels" -}}
helm.sh/chart: {{ include "exchanger.chart" . }}
{{ include "exchanger.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "exchanger.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "exchanger.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "exchanger.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Where the ConfigMap and the credentials appear inside the container. */}}
{{- define "exchanger.configDir" -}}/etc/exchanger{{- end -}}
{{- define "exchanger.secretDir" -}}/var/run/secrets/exchanger{{- end -}}

{{/*
exchanger.yaml: the `config` value, plus the chart's policy file in
policy_files and state.redis_url from state.redisUrl.
*/}}
{{- define "exchanger.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $github := default (dict) $config.github -}}
{{- $app := default (dict) $github.app -}}
{{- if or (hasKey (default (dict) $app.private_key) "value") (hasKey (default (dict) $github.token) "value") -}}
{{- fail "config.github: give the App key or the PAT as {file: …} or {env: …} from a Secret (existingSecret, secretEnv), never as {value: …} in values" -}}
{{- end -}}
{{- if .Values.policies -}}
{{- $files := concat (default (list) $config.policy_files) (list "policies.yaml") -}}
{{- $_ := set $config "policy_files" $files -}}
{{- end -}}
{{- if .Values.state.redisUrl -}}
{{- if hasKey $config "state" -}}
{{- fail "set either state.redisUrl or config.state, not both" -}}
{{- end -}}
{{- $_ := set $config "state" (dict "redis_url" .Values.state.redisUrl) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
