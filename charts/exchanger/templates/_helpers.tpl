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

{{/*
Labels of the `helm test` pod: not the selector labels, so that neither the
Service, the PodDisruptionBudget nor the NetworkPolicy picks it up.
*/}}
{{- define "exchanger.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "exchanger.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
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
{{- include "exchanger.refuseInlineSecrets" (dict "node" (omit $config "policies") "path" "config") -}}
{{- $state := default (dict) $config.state -}}
{{- if kindIs "string" $state.redis_url -}}
{{- include "exchanger.refuseRedisCredentials" (dict "url" $state.redis_url "path" "config.state.redis_url") -}}
{{- end -}}
{{- include "exchanger.refuseRedisCredentials" (dict "url" .Values.state.redisUrl "path" "state.redisUrl") -}}
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

{{/*
Where to keep a credential instead of the ConfigMap; the end of each refusal.
*/}}
{{- define "exchanger.useASecret" -}}
Keep it in a Secret and reference it: name the Secret in existingSecret (or extraExistingSecrets), whose keys are mounted as files, and write {file: /var/run/secrets/exchanger/KEY}; or pass it as an environment variable with secretEnv ({name: NAME, secretName: SECRET, key: KEY}) and write {env: NAME}. See "Deploy with Helm" in charts/exchanger/README.md.
{{- end -}}

{{/*
Refuses a credential given as {value: …}: the config is rendered into a
ConfigMap, readable by anyone who may read ConfigMaps in the namespace. In
exchanger.yaml `value` is only ever a secret source (secrets.NAME.FIELD,
github.token, github.app.private_key, github.app.pkcs11.pin,
state.redis_url), so every map holding a `value` key is refused, however deep.
Policies are left out (a claim may be called `value`). Called with
(dict "node" … "path" "config"); fails naming the path, never the value.
*/}}
{{- define "exchanger.refuseInlineSecrets" -}}
{{- $path := .path -}}
{{- if kindIs "map" .node -}}
{{- if hasKey .node "value" -}}
{{- fail (printf "%s.value: a credential given as {value: …} would be rendered into the ConfigMap in plain text, and the chart refuses it. %s" $path (include "exchanger.useASecret" dict)) -}}
{{- end -}}
{{- range $key, $child := .node -}}
{{- include "exchanger.refuseInlineSecrets" (dict "node" $child "path" (printf "%s.%s" $path $key)) -}}
{{- end -}}
{{- else if kindIs "slice" .node -}}
{{- range $index, $child := .node -}}
{{- include "exchanger.refuseInlineSecrets" (dict "node" $child "path" (printf "%s[%d]" $path $index)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Refuses a Redis URL that carries credentials (user info before the host, or
a password= query parameter): it would land in the ConfigMap. Called with
(dict "url" … "path" …); fails naming the path, never the URL.
*/}}
{{- define "exchanger.refuseRedisCredentials" -}}
{{- $url := toString (default "" .url) -}}
{{- if or (regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@" $url) (regexMatch "(?i)[?&]password=" $url) -}}
{{- fail (printf "%s: the Redis URL carries a password (user info before @, or password= in the query), which would be rendered into the ConfigMap in plain text, and the chart refuses it. Put the whole URL in a Secret and set config.state.redis_url (leaving state.redisUrl empty) to {file: /var/run/secrets/exchanger/KEY}, the Secret named in existingSecret (or extraExistingSecrets), or to {env: REDIS_URL} with secretEnv ({name: REDIS_URL, secretName: SECRET, key: KEY}). See \"Deploy with Helm\" in charts/exchanger/README.md." .path) -}}
{{- end -}}
{{- end -}}

{{/*
The egress ports the NetworkPolicy opens besides DNS, as JSON
{"https": [443, …], "redis": [6379] or []}: 443, plus any explicit port of
an issuer, a jwks_uri, github.api_url (or GITHUB_API_URL in extraEnv) and a
KMS endpoint; and the port of a Redis URL given in plain text (6379 when it
names none). A Redis URL read from a Secret is not visible here: its port
goes into networkPolicy.extraEgress.
*/}}
{{- define "exchanger.egressPorts" -}}
{{- $config := .Values.config -}}
{{- $urls := list -}}
{{- range (default (list) $config.issuers) -}}
{{- $urls = append $urls (toString (default "" .issuer)) -}}
{{- $urls = append $urls (toString (default "" .jwks_uri)) -}}
{{- end -}}
{{- $github := default (dict) $config.github -}}
{{- $urls = append $urls (toString (default "" $github.api_url)) -}}
{{- $kms := default (dict) (default (dict) $github.app).kms -}}
{{- $urls = append $urls (toString (default "" $kms.endpoint_url)) -}}
{{- range .Values.extraEnv -}}
{{- if eq (toString .name) "GITHUB_API_URL" -}}
{{- $urls = append $urls (toString (default "" .value)) -}}
{{- end -}}
{{- end -}}
{{- $https := list 443 -}}
{{- range $urls -}}
{{- $port := regexFind ":[0-9]+$" (regexFind "^https://[^/?#]*" .) | trimPrefix ":" -}}
{{- if $port -}}
{{- $https = append $https (atoi $port) -}}
{{- end -}}
{{- end -}}
{{- $redis := list -}}
{{- $redisUrl := .Values.state.redisUrl -}}
{{- $state := default (dict) $config.state -}}
{{- if kindIs "string" $state.redis_url -}}
{{- $redisUrl = $state.redis_url -}}
{{- end -}}
{{- if regexMatch "^rediss?://" (toString (default "" $redisUrl)) -}}
{{- $port := regexFind ":[0-9]+$" (regexFind "^rediss?://[^/?#]*" $redisUrl) | trimPrefix ":" -}}
{{- $redis = list (atoi (default "6379" $port)) -}}
{{- end -}}
{{- dict "https" ($https | uniq) "redis" $redis | toJson -}}
{{- end -}}
