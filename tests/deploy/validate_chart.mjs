// Renders the Helm chart with the real helm (lint --strict, then template) under several value sets,
// validates every rendered object against the Kubernetes schemas (kubernetes-models; ServiceMonitor from
// the prometheus-operator models) and checks what the chart promises: GPU scheduling knobs, storage,
// probes, TLS, flags the server knows, and an Envoy ring that is the one squeezectl builds
// (client/common/router.h).
// Usage: node validate_chart.mjs --tools DIR --chart DIR --repo DIR --squeezeserve BIN
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (i % 2 ? pairs : [...pairs, [arg.slice(2), all[i + 1]]]), []));
const require = createRequire(path.join(args.tools, "package.json"));
const YAML = require("yaml");
const helm = path.join(args.tools, "helm");

let failures = 0;
let passed = 0;
function check(condition, message) {
  if (!condition) {
    failures++;
    console.log(`  FAIL: ${message}`);
  }
}

// An ES module of the tools' node_modules (these packages export their subpaths for `import` only).
async function importTool(specifier) {
  const parts = specifier.split("/");
  const name = parts.slice(0, specifier.startsWith("@") ? 2 : 1).join("/");
  const root = path.join(args.tools, "node_modules", name);
  const { exports } = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));
  const subpath = ["."].concat(parts.slice(name.split("/").length)).join("/");
  return import(pathToFileURL(path.join(root, exports[subpath].import)).href);
}

// Schemas: one kubernetes-models module per apiVersion.
const modelModules = {
  v1: "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "policy/v1": "kubernetes-models/policy/v1",
  "autoscaling/v2": "kubernetes-models/autoscaling/v2",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};
async function validateSchema(object) {
  const where = `${object.kind}/${object.metadata?.name}`;
  const module = modelModules[object.apiVersion];
  if (!module) return check(false, `${where}: no schema for apiVersion ${object.apiVersion}`);
  const Model = (await importTool(module))[object.kind];
  if (!Model) return check(false, `${where}: no schema for kind ${object.kind}`);
  try {
    new Model(object).validate();
  } catch (error) {
    check(false, `${where}: ${error.message}`);
  }
}

// The ring parameters the clients use, read from the source so that a change on one side fails here.
const routerHeader = readFileSync(path.join(args.repo, "client/common/router.h"), "utf8");
const clientRing = {
  header: routerHeader.match(/kContextIdHeader\[\] = "([^"]+)"/)[1],
  minimumRingSize: Number(routerHeader.match(/kMinimumRingSize = (\d+)/)[1]),
};

// The flags the server binary knows (its --help).
const help = spawnSync(args.squeezeserve, ["--help"], { encoding: "utf8" });
check(help.status === 0, "squeezeserve --help exits 0");
const serverFlags = new Set([...help.stdout.matchAll(/^ {2}--([a-z_0-9]+)/gm)].map((m) => m[1]));

function render(release, namespace, values) {
  const setArgs = Object.entries(values).flatMap(([key, value]) => ["--set-json", `${key}=${JSON.stringify(value)}`]);
  const lint = spawnSync(helm, ["lint", "--strict", args.chart, ...setArgs], { encoding: "utf8" });
  const template = spawnSync(helm, ["template", release, args.chart, "--namespace", namespace, ...setArgs],
    { encoding: "utf8" });
  return { lint, template };
}

function documents(text) {
  return YAML.parseAllDocuments(text).map((d) => d.toJS()).filter((o) => o);
}

const find = (objects, kind, name) => objects.find((o) => o.kind === kind && (!name || o.metadata.name === name));
const podSpec = (objects) => find(objects, "StatefulSet").spec.template.spec;
const server = (objects) => podSpec(objects).containers[0];
const subset = (small, big) => Object.entries(small ?? {}).every(([k, v]) => big?.[k] === v);

function checkCommon(objects, release, namespace, replicas) {
  const statefulSet = find(objects, "StatefulSet");
  const pod = podSpec(objects);
  const container = server(objects);
  for (const service of objects.filter((o) => o.kind === "Service")) {
    const owner = objects.find((o) => ["StatefulSet", "Deployment"].includes(o.kind) &&
      subset(service.spec.selector, o.spec.template.metadata.labels));
    check(owner, `Service ${service.metadata.name} selects no pods of the chart`);
  }
  check(statefulSet.spec.serviceName === `${release}-headless`, "StatefulSet.serviceName is the headless Service");
  for (const arg of container.args) {
    const name = arg.match(/^--([a-z_0-9]+)/)?.[1];
    check(name && serverFlags.has(name), `server argument ${arg} is not a flag of squeezeserve`);
    check(!/=[-\d.]+e[+-]\d+$/.test(arg), `server argument ${arg} is in scientific notation`);
  }
  const envoyConfigMap = find(objects, "ConfigMap", `${release}-envoy`);
  if (!envoyConfigMap) return;
  const envoy = YAML.parse(envoyConfigMap.data["envoy.yaml"]);
  const cluster = envoy.static_resources.clusters[0];
  const route = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config
    .virtual_hosts[0].routes[0].route;
  check(cluster.lb_policy === "RING_HASH", "Envoy: lb_policy RING_HASH");
  check(cluster.ring_hash_lb_config?.hash_function === "XX_HASH", "Envoy: hash_function XX_HASH (as the clients)");
  check(cluster.ring_hash_lb_config?.minimum_ring_size === clientRing.minimumRingSize,
    `Envoy: minimum_ring_size ${cluster.ring_hash_lb_config?.minimum_ring_size}, clients ${clientRing.minimumRingSize}`);
  check(cluster.common_lb_config?.consistent_hashing_lb_config?.use_hostname_for_hashing === true,
    "Envoy: hashes host names (use_hostname_for_hashing), as the clients do, not pod IPs");
  check(route.hash_policy?.[0]?.header?.header_name === clientRing.header,
    `Envoy: hashes the ${clientRing.header} header the clients set`);
  const hosts = cluster.load_assignment.endpoints[0].lb_endpoints.map((e) => e.endpoint);
  const expected = [...Array(replicas).keys()].map((i) => `${release}-${i}.${release}-headless.${namespace}.svc.cluster.local`);
  check(JSON.stringify(hosts.map((h) => h.hostname)) === JSON.stringify(expected),
    `Envoy: endpoints are the pods' stable names in order ${expected[0]}..., got ${hosts.map((h) => h.hostname)}`);
  check(hosts.every((h) => h.address.socket_address.address === h.hostname), "Envoy: each endpoint resolves its own name");
  check(cluster.type === "STRICT_DNS", "Envoy: STRICT_DNS (each pod name resolves to one address)");
  check(cluster.health_checks?.[0]?.grpc_health_check !== undefined, "Envoy: active gRPC health checks");
  check(cluster.outlier_detection?.consecutive_5xx > 0, "Envoy: outlier detection");
  check(route.retry_policy?.num_retries > 0 && /unavailable/.test(route.retry_policy?.retry_on), "Envoy: retries");
  check(JSON.stringify(cluster.typed_extension_protocol_options).includes("http2_protocol_options"),
    "Envoy: HTTP/2 upstream (gRPC)");
  const deployment = find(objects, "Deployment", `${release}-envoy`);
  check(deployment.spec.template.metadata.annotations?.["checksum/config"], "Envoy pods roll when the config changes");
}

const scenarios = [
  {
    name: "defaults (GPU cluster, autoscaling, Envoy)",
    release: "sq", namespace: "prod", values: {},
    verify(objects) {
      checkCommon(objects, "sq", "prod", 8);
      const pod = podSpec(objects);
      const resources = server(objects).resources;
      check(resources.requests["nvidia.com/gpu"] === 1 && resources.limits["nvidia.com/gpu"] === 1,
        "nvidia.com/gpu in requests and limits");
      check(pod.tolerations?.some((t) => t.key === "nvidia.com/gpu" && t.effect === "NoSchedule"),
        "tolerates the nvidia.com/gpu taint");
      check(pod.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution?.[0]
        ?.podAffinityTerm?.topologyKey === "kubernetes.io/hostname", "soft pod anti-affinity across nodes");
      check(pod.serviceAccountName === "sq" && find(objects, "ServiceAccount", "sq"), "own ServiceAccount");
      check(find(objects, "PodDisruptionBudget")?.spec.maxUnavailable === 1, "PodDisruptionBudget");
      const claim = find(objects, "PersistentVolumeClaim", "sq-store");
      check(claim && !("storageClassName" in claim.spec), "store claim left to the default StorageClass");
      check(find(objects, "StatefulSet").spec.replicas === undefined, "replicas left to the autoscaler");
      check(find(objects, "HorizontalPodAutoscaler")?.spec.scaleTargetRef.name === "sq", "HPA on the StatefulSet");
      const monitor = find(objects, "ServiceMonitor");
      const metricsService = objects.find((o) => o.kind === "Service" &&
        o.spec.ports.some((p) => p.name === "metrics") && subset(monitor?.spec.selector.matchLabels, o.metadata.labels));
      check(metricsService, "the ServiceMonitor selects a Service with a metrics port");
      check(objects.filter((o) => o.kind === "Service" && subset(monitor?.spec.selector.matchLabels, o.metadata.labels))
        .every((o) => o.spec.ports.some((p) => p.name === "metrics")), "the ServiceMonitor selects only metrics Services");
      check(server(objects).args.includes("--metrics_listen=0.0.0.0:9090"), "metrics enabled on the metrics port");
      check(server(objects).startupProbe?.grpc?.port === 50051, "grpc startup probe");
    },
  },
  {
    name: "CPU, fixed replicas, per-pod stores, private registry, extra args/env, hard anti-affinity",
    release: "cpu", namespace: "default",
    values: {
      "gpu.count": 0, "server.device": "cpu", tolerations: [], "autoscaling.enabled": false, replicas: 3,
      "store.shared": false, "store.storageClassName": "fast-ssd", imagePullSecrets: [{ name: "regcred" }],
      "server.extraArgs": ["--max_host_context_bytes=1000000000"],
      "server.extraEnv": [{ name: "OMP_NUM_THREADS", value: "4" }],
      nodeSelector: { "kubernetes.io/arch": "amd64" }, podAntiAffinity: "hard",
      "server.maxContextTokens": 2097152,
    },
    verify(objects) {
      checkCommon(objects, "cpu", "default", 3);
      const pod = podSpec(objects);
      const container = server(objects);
      check(!JSON.stringify(objects).includes("nvidia.com/gpu"), "no GPU resources or tolerations");
      check(find(objects, "StatefulSet").spec.replicas === 3, "replicas: 3");
      check(!find(objects, "HorizontalPodAutoscaler"), "no HPA");
      const template = find(objects, "StatefulSet").spec.volumeClaimTemplates?.[0];
      check(template?.spec.storageClassName === "fast-ssd" && template.spec.accessModes[0] === "ReadWriteOnce",
        "per-pod ReadWriteOnce store claims of the given class");
      check(!find(objects, "PersistentVolumeClaim"), "no shared claim");
      check(pod.imagePullSecrets?.[0]?.name === "regcred", "imagePullSecrets on the server pods");
      check(find(objects, "Deployment").spec.template.spec.imagePullSecrets?.[0]?.name === "regcred",
        "imagePullSecrets on the Envoy pods");
      check(container.args.includes("--max_host_context_bytes=1000000000"), "extra args");
      check(container.args.includes("--max_context_tokens=2097152"), "large integers stay integers");
      check(container.env?.[0]?.name === "OMP_NUM_THREADS", "extra env");
      check(pod.nodeSelector?.["kubernetes.io/arch"] === "amd64", "nodeSelector");
      check(pod.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.length === 1,
        "hard anti-affinity");
    },
  },
  {
    name: "TLS with client certificates, no router, no monitor/PDB/ServiceAccount, static PV",
    release: "tls", namespace: "secure",
    values: {
      "tls.enabled": true, "tls.clientCaSecretName": "client-ca", "envoy.enabled": false,
      "metrics.serviceMonitor.enabled": false, "podDisruptionBudget.enabled": false, "serviceAccount.create": false,
      "store.storageClassName": "-", affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: {
        nodeSelectorTerms: [{ matchExpressions: [{ key: "gpu", operator: "In", values: ["h200"] }] }] } } },
    },
    verify(objects) {
      checkCommon(objects, "tls", "secure", 0);
      const container = server(objects);
      for (const flag of ["--tls_cert=", "--tls_key=", "--tls_client_ca="]) {
        check(container.args.some((a) => a.startsWith(flag)), `TLS flag ${flag}`);
      }
      check(container.readinessProbe?.tcpSocket && !container.readinessProbe.grpc, "TCP probes under TLS");
      check(podSpec(objects).volumes.some((v) => v.secret?.secretName === "client-ca"), "client CA mounted");
      for (const kind of ["ServiceMonitor", "PodDisruptionBudget", "ServiceAccount", "ConfigMap", "Deployment"]) {
        check(!find(objects, kind), `no ${kind}`);
      }
      check(podSpec(objects).serviceAccountName === "default", "the namespace's default ServiceAccount");
      check(find(objects, "PersistentVolumeClaim").spec.storageClassName === "", "'-' means no class (a static PV)");
      const affinity = podSpec(objects).affinity;
      check(affinity?.nodeAffinity && affinity.podAntiAffinity, "node affinity kept, anti-affinity added");
    },
  },
  { name: "TLS with the plaintext router is refused", release: "bad", namespace: "default",
    values: { "tls.enabled": true }, fails: /tls.enabled needs envoy.enabled=false/ },
  { name: "an unknown podAntiAffinity is refused", release: "bad", namespace: "default",
    values: { podAntiAffinity: "sometimes" }, fails: /podAntiAffinity must be soft, hard or empty/ },
];

for (const scenario of scenarios) {
  const before = failures;
  console.log(`scenario: ${scenario.name}`);
  const { lint, template } = render(scenario.release, scenario.namespace, scenario.values);
  if (scenario.fails) {
    check(template.status !== 0 && scenario.fails.test(template.stderr),
      `helm template should fail with ${scenario.fails}, got ${template.status}: ${template.stderr}`);
  } else {
    check(lint.status === 0, `helm lint --strict: ${lint.stdout}${lint.stderr}`);
    check(template.status === 0, `helm template: ${template.stderr}`);
    if (template.status === 0) {
      const objects = documents(template.stdout);
      for (const object of objects) await validateSchema(object);
      console.log(`  ${objects.length} objects valid against the Kubernetes schemas`);
      scenario.verify(objects);
    }
  }
  if (failures === before) passed++;
}
console.log(`${passed} passed, ${scenarios.length - passed} failed`);
process.exit(failures === 0 ? 0 : 1);
