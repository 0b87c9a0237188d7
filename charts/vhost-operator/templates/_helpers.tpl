{{/*
vhost-operator.name is the chart name, or nameOverride.
*/}}
{{- define "vhost-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
vhost-operator.fullname prefixes every resource name. Kubernetes names that are DNS labels
(Services, and so the webhook's host name) may hold 63 characters at most, hence trunc 63. A
release whose name already contains the chart name is not repeated ("vhost-operator", not
"vhost-operator-vhost-operator").
*/}}
{{- define "vhost-operator.fullname" -}}
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

{{/*
vhost-operator.componentName is "<fullname>-<component>" for the chart's other objects. The
fullname is cut to 50 characters first, so that the longest suffix ("-acme-account", 13) still
fits a 63-character DNS label. Call with (dict "root" $ "component" "webhook").
*/}}
{{- define "vhost-operator.componentName" -}}
{{- printf "%s-%s" (include "vhost-operator.fullname" .root | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{/*
vhost-operator.chart is the chart label value: name and version.
*/}}
{{- define "vhost-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
vhost-operator.labels are the common labels of every object. Call with
(dict "root" $ "component" "operator").
*/}}
{{- define "vhost-operator.labels" -}}
helm.sh/chart: {{ include "vhost-operator.chart" .root }}
{{ include "vhost-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: vhost-operator
{{- end -}}

{{/*
vhost-operator.selectorLabels select one component's pods. Call with
(dict "root" $ "component" "operator").
*/}}
{{- define "vhost-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vhost-operator.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
vhost-operator.imageRef renders "repository:tag" or "repository@digest" from an image block.
Call with (dict "image" .Values.image "tag" "<default tag>").
*/}}
{{- define "vhost-operator.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .tag .image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
vhost-operator.image is the operator image (Dockerfile target "operator").
*/}}
{{- define "vhost-operator.image" -}}
{{- include "vhost-operator.imageRef" (dict "image" .Values.image "tag" .Chart.AppVersion) -}}
{{- end -}}

{{/*
vhost-operator.agentImage is the nginx agent's image (Dockerfile target "agent": the operator
image plus Debian's nginx, which the agent runs for `nginx -t`).
*/}}
{{- define "vhost-operator.agentImage" -}}
{{- include "vhost-operator.imageRef" (dict "image" .Values.agentImage "tag" (printf "%s-agent" .Chart.AppVersion)) -}}
{{- end -}}

{{/*
vhost-operator.nginxImage is the image of the nginx container: the agent's image unless
nginx.image.repository is set, so that `nginx -t` in the agent tests with the very nginx that
serves.
*/}}
{{- define "vhost-operator.nginxImage" -}}
{{- if .Values.nginx.image.repository -}}
{{- if not (or .Values.nginx.image.tag .Values.nginx.image.digest) -}}
{{- fail "nginx.image.repository needs nginx.image.tag or nginx.image.digest: pin the nginx image" -}}
{{- end -}}
{{- include "vhost-operator.imageRef" (dict "image" .Values.nginx.image "tag" "") -}}
{{- else -}}
{{- include "vhost-operator.agentImage" . -}}
{{- end -}}
{{- end -}}

{{/*
vhost-operator.nginxNamespace is where the per-host ConfigMaps and TLS Secrets live, and where
nginx and its agent run: nginx.namespace, else "<release namespace>-nginx". Never the release
namespace: the internet-facing nginx pod's agent may list every Secret of its namespace, and the
operator may read and write every Secret there; in the release namespace that would include the
ACME account key, the EAB key and Helm's release Secrets.
*/}}
{{- define "vhost-operator.nginxNamespace" -}}
{{- $namespace := .Values.nginx.namespace | default (printf "%s-nginx" (trunc 57 .Release.Namespace | trimSuffix "-")) -}}
{{- if eq $namespace .Release.Namespace -}}
{{- fail (printf "nginx.namespace must not be the release namespace %s: nginx and its agent would get every Secret of it (ACME account key, EAB key, Helm's release Secrets); leave it empty for %s-nginx or name another namespace" .Release.Namespace .Release.Namespace) -}}
{{- end -}}
{{- $namespace -}}
{{- end -}}

{{/*
vhost-operator.serviceAccountName is the operator's ServiceAccount.
*/}}
{{- define "vhost-operator.serviceAccountName" -}}
{{- include "vhost-operator.fullname" . -}}
{{- end -}}

{{/*
vhost-operator.agentServiceAccountName is the nginx agent's ServiceAccount.
*/}}
{{- define "vhost-operator.agentServiceAccountName" -}}
{{- include "vhost-operator.componentName" (dict "root" . "component" "nginx") -}}
{{- end -}}

{{/*
vhost-operator.mailTlsNamespace is where the mail server pod with the mail TLS agent runs.
*/}}
{{- define "vhost-operator.mailTlsNamespace" -}}
{{- .Values.mailTls.namespace | default (include "vhost-operator.nginxNamespace" .) -}}
{{- end -}}

{{/*
vhost-operator.mailTlsServiceAccountName is the ServiceAccount of the pod that runs the mail TLS
agent.
*/}}
{{- define "vhost-operator.mailTlsServiceAccountName" -}}
{{- .Values.mailTls.serviceAccount.name | default (include "vhost-operator.componentName" (dict "root" . "component" "mail-tls")) -}}
{{- end -}}

{{/*
vhost-operator.gateServiceAccountName is the tenancy gate's ServiceAccount.
*/}}
{{- define "vhost-operator.gateServiceAccountName" -}}
{{- include "vhost-operator.componentName" (dict "root" . "component" "gate") -}}
{{- end -}}

{{/*
vhost-operator.accountSecretName is the Secret (release namespace) with the ACME account key.
*/}}
{{- define "vhost-operator.accountSecretName" -}}
{{- default (include "vhost-operator.componentName" (dict "root" . "component" "acme-account")) .Values.acme.accountSecretName -}}
{{- end -}}

{{/*
vhost-operator.webhookHost is the name in the webhook's certificate: webhook.host (then also the
host of the URL the API server calls), else the webhook Service's DNS name, the name the API
server checks when it calls the webhook through the Service.
*/}}
{{- define "vhost-operator.webhookHost" -}}
{{- if .Values.webhook.host -}}
{{- .Values.webhook.host -}}
{{- else -}}
{{- printf "%s.%s.svc" (include "vhost-operator.componentName" (dict "root" . "component" "webhook")) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/*
vhost-operator.webhookCertSecretName is the kubernetes.io/tls Secret the webhook serves with:
webhook.certSecretName, else the one the chart makes (templates/webhook/secret.yaml), shared by
every operator replica (the webhook configuration carries one CA bundle).
*/}}
{{- define "vhost-operator.webhookCertSecretName" -}}
{{- default (include "vhost-operator.componentName" (dict "root" . "component" "webhook-tls")) .Values.webhook.certSecretName -}}
{{- end -}}

{{/*
vhost-operator.leaseName is the Lease the operator replicas elect their leader with.
*/}}
{{- define "vhost-operator.leaseName" -}}
{{- include "vhost-operator.componentName" (dict "root" . "component" "leader") -}}
{{- end -}}

{{/*
vhost-operator.challengeUpstream is the host:port nginx proxies ACME HTTP-01 challenges to: the
challenge responder's Service.
*/}}
{{- define "vhost-operator.challengeUpstream" -}}
{{- printf "%s.%s.svc:%d" (include "vhost-operator.componentName" (dict "root" . "component" "challenges")) .Release.Namespace (int .Values.acme.challengePort) -}}
{{- end -}}

{{/*
vhost-operator.podSecurityContext and vhost-operator.securityContext: the hardened defaults
every pod and container of the chart runs with (values podSecurityContext/securityContext).
*/}}
{{- define "vhost-operator.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "vhost-operator.securityContext" -}}
{{- toYaml .Values.securityContext -}}
{{- end -}}

{{/*
vhost-operator.placement renders a serving component's affinity and topology spread (nginx,
gate: several replicas that should not share a node or a zone). Call with
(dict "root" $ "component" "nginx" "values" .Values.nginx). An explicit `affinity` wins over the
`podAntiAffinity` preset ("soft": preferably one replica per node, "hard": required, "": none);
a spread constraint without a labelSelector gets the component's pods.
*/}}
{{- define "vhost-operator.placement" -}}
{{- $selector := dict "matchLabels" (include "vhost-operator.selectorLabels" . | fromYaml) }}
{{- $term := dict "labelSelector" $selector "topologyKey" "kubernetes.io/hostname" }}
{{- $affinity := .values.affinity }}
{{- if and (not $affinity) (eq .values.podAntiAffinity "soft") }}
{{- $affinity = dict "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
{{- else if and (not $affinity) (eq .values.podAntiAffinity "hard") }}
{{- $affinity = dict "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
{{- end }}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range . }}
  - {{ toYaml (merge (deepCopy .) (dict "labelSelector" $selector)) | nindent 4 | trim }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
vhost-operator.labelSelector is selectorLabels as a label selector string ("k=v,k=v"), for a
setting. Call with (dict "root" $ "component" "nginx").
*/}}
{{- define "vhost-operator.labelSelector" -}}
{{- $pairs := list }}
{{- range $key, $value := include "vhost-operator.selectorLabels" . | fromYaml }}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) }}
{{- end }}
{{- join "," $pairs }}
{{- end -}}

{{/*
vhost-operator.networkPolicyBaseEgress are the egress rules every policed pod needs: DNS (any
namespace: the cluster's resolver) and the API server (networkPolicy.apiServerCidrs).
*/}}
{{- define "vhost-operator.networkPolicyBaseEgress" -}}
- to:
    - namespaceSelector: {}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
- to:
    {{- range .Values.networkPolicy.apiServerCidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: {{ .Values.networkPolicy.apiServerPort }}
      protocol: TCP
{{- end -}}
