{{/* Envoy's configuration (templates/envoy.yaml puts it in a ConfigMap; its checksum rolls the pods). */}}
{{- define "squeezeserve.envoyConfig" -}}
static_resources:
  listeners:
    - name: grpc
      address:
        socket_address: {address: 0.0.0.0, port_value: {{ .Values.envoy.port }}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: squeezeserve
                codec_type: AUTO
                # Generate streams can be long; no idle cut-off shorter than the longest answer.
                stream_idle_timeout: 600s
                route_config:
                  name: squeezeserve
                  virtual_hosts:
                    - name: squeezeserve
                      domains: ["*"]
                      routes:
                        - match: {prefix: "/"}
                          route:
                            cluster: squeezeserve
                            timeout: 0s  # streaming RPCs: no whole-request timeout (clients set deadlines)
                            hash_policy:
                              - header: {header_name: x-context-id}
                            # A refused or unreachable call moves to the next replica on the ring
                            # (streams are retried only before any response reached the client).
                            retry_policy:
                              retry_on: {{ .Values.envoy.retries.retryOn | quote }}
                              num_retries: {{ .Values.envoy.retries.numRetries }}
                              retry_host_predicate:
                                - name: envoy.retry_host_predicates.previous_hosts
                                  typed_config:
                                    "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
                              host_selection_retry_max_attempts: 3
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: squeezeserve
      type: STRICT_DNS
      dns_lookup_family: V4_ONLY
      dns_refresh_rate: 5s
      lb_policy: RING_HASH
      ring_hash_lb_config:
        minimum_ring_size: {{ .Values.routing.minimumRingSize }}
        hash_function: XX_HASH
      common_lb_config:
        consistent_hashing_lb_config: {use_hostname_for_hashing: true}
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {}
      # Active gRPC health checks: a draining replica (NOT_SERVING) leaves the ring before it exits.
      health_checks:
        - timeout: 1s
          interval: 5s
          unhealthy_threshold: 2
          healthy_threshold: 1
          grpc_health_check: {service_name: ""}
      # A replica that keeps failing is ejected for a while; its contexts go to the next on the ring.
      outlier_detection:
        consecutive_5xx: {{ .Values.envoy.outlierDetection.consecutive5xx }}
        interval: {{ .Values.envoy.outlierDetection.interval }}
        base_ejection_time: {{ .Values.envoy.outlierDetection.baseEjectionTime }}
        max_ejection_percent: {{ .Values.envoy.outlierDetection.maxEjectionPercent }}
      load_assignment:
        cluster_name: squeezeserve
        endpoints:
          - lb_endpoints:
              {{- range $index := until (int (include "squeezeserve.maxReplicas" .)) }}
              {{- $host := include "squeezeserve.podHost" (dict "root" $ "index" $index) }}
              - endpoint:
                  hostname: {{ $host }}
                  address:
                    socket_address: {address: {{ $host }}, port_value: {{ $.Values.server.port }}}
              {{- end }}
admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: {{ .Values.envoy.adminPort }}}
{{- end }}
