#!/usr/bin/python3
"""Renders the squeezeserve Helm chart without helm and checks the objects and Envoy configs.

Debian 12 ships no helm, so templates are kept to a subset this script renders exactly (documented in
deploy/helm/squeezeserve/README.md): `{{ .Values.a.b }}`, `{{ .Release.Name }}`, `{{ .Chart.Name }}`,
an optional `| quote`, and unnested `{{- if .Values.x }}` ... `{{- end }}` lines. Anything else is an
error here, which keeps the chart inside that subset.
Usage: check_manifests.py DEPLOY_DIR   (exit 1 on any problem)
"""
import json
import pathlib
import re
import sys

import jsonschema
import yaml

RELEASE = {"Name": "squeezeserve", "Namespace": "default"}
ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")
IF_LINE = re.compile(r"^\s*{{-?\s*if\s+(\.Values\.[\w.]+)\s*-?}}\s*$")
END_LINE = re.compile(r"^\s*{{-?\s*end\s*-?}}\s*$")


def lookup(path, scope):
    node = scope
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(f"undefined value .{path}")
        node = node[key]
    return node


def scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)) or value is None:
        raise ValueError(f"cannot substitute non-scalar {value!r} (no toYaml in this subset)")
    return str(value)


def substitute(action, scope):
    parts = [p.strip() for p in action.split("|")]
    match = re.fullmatch(r"\.(Values|Release|Chart)\.([\w.]+)", parts[0])
    if not match or any(p != "quote" for p in parts[1:]):
        raise ValueError(f"unsupported template action {{{{ {action} }}}}")
    text = scalar(lookup(match.group(2), scope[match.group(1)]))
    return json.dumps(text) if "quote" in parts[1:] else text


def render(template, scope):
    out, keep, in_if = [], True, False
    for line in template.splitlines():
        if m := IF_LINE.match(line):
            if in_if:
                raise ValueError("nested if is outside the supported subset")
            in_if, keep = True, bool(lookup(m.group(1)[len(".Values."):], scope["Values"]))
            continue
        if END_LINE.match(line):
            if not in_if:
                raise ValueError("end without if")
            in_if, keep = False, True
            continue
        if keep:
            out.append(ACTION.sub(lambda m: substitute(m.group(1), scope), line))
    if in_if:
        raise ValueError("if without end")
    return "\n".join(out) + "\n"


def check_envoy(config, where):
    problems = []
    clusters = config["static_resources"]["clusters"]
    names = {c["name"] for c in clusters}
    for c in clusters:
        if c.get("lb_policy") != "RING_HASH":
            problems.append(f"{where}: cluster {c['name']} lb_policy must be RING_HASH")
        if "http2_protocol_options" not in json.dumps(c.get("typed_extension_protocol_options", {})):
            problems.append(f"{where}: cluster {c['name']} must speak HTTP/2 upstream (gRPC)")
        if not any("grpc_health_check" in h for h in c.get("health_checks", [])):
            problems.append(f"{where}: cluster {c['name']} needs a grpc_health_check")
    routes = [r for l in config["static_resources"]["listeners"] for fc in l["filter_chains"]
              for f in fc["filters"] for vh in f["typed_config"]["route_config"]["virtual_hosts"]
              for r in vh["routes"]]
    if not routes:
        problems.append(f"{where}: no routes")
    for r in routes:
        route = r["route"]
        if route["cluster"] not in names:
            problems.append(f"{where}: route to unknown cluster {route['cluster']}")
        headers = [h.get("header", {}).get("header_name") for h in route.get("hash_policy", [])]
        if "x-context-id" not in headers:
            problems.append(f"{where}: route {r['match']} lacks hash_policy on header x-context-id")
    return problems


def find_container(obj):
    return obj["spec"]["template"]["spec"]["containers"][0]


def check_object(obj, values):
    kind, name = obj["kind"], obj["metadata"]["name"]
    where, problems = f"{kind}/{name}", []
    if kind == "StatefulSet":
        c = find_container(obj)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        if ports.get("grpc") != values["server"]["port"]:
            problems.append(f"{where}: grpc containerPort must be server.port")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if c.get(probe, {}).get("grpc", {}).get("port") != values["server"]["port"]:
                problems.append(f"{where}: {probe} must be a grpc probe on server.port")
        gpus = c["resources"]["limits"].get("nvidia.com/gpu")
        if gpus != values["gpu"]["count"]:
            problems.append(f"{where}: limits nvidia.com/gpu is {gpus!r}, want gpu.count")
        mounts = {m["name"] for m in c["volumeMounts"]}
        if not {"model", "store"} <= mounts:
            problems.append(f"{where}: model and store must be mounted")
        if "--listen=0.0.0.0:%d" % values["server"]["port"] not in c["args"]:
            problems.append(f"{where}: --listen must bind server.port on all interfaces")
    if kind == "PersistentVolumeClaim" and obj["spec"]["accessModes"] != ["ReadWriteMany"]:
        problems.append(f"{where}: the shared store needs accessModes [ReadWriteMany]")
    if kind == "Service" and name.endswith("-headless") and obj["spec"].get("clusterIP") != "None":
        problems.append(f"{where}: headless Service needs clusterIP: None")
    if kind == "HorizontalPodAutoscaler":
        metric = obj["spec"]["metrics"][0]["pods"]["metric"]["name"]
        if metric != "squeezeserve_queue_depth":
            problems.append(f"{where}: scales on {metric}, want squeezeserve_queue_depth")
    if kind == "ConfigMap" and "envoy.yaml" in obj.get("data", {}):
        problems += check_envoy(yaml.safe_load(obj["data"]["envoy.yaml"]), where)
    return problems


def main(deploy_dir):
    deploy = pathlib.Path(deploy_dir)
    chart = deploy / "helm" / "squeezeserve"
    schema = yaml.safe_load((pathlib.Path(__file__).parent / "object_schema.yaml").read_text())
    values = yaml.safe_load((chart / "values.yaml").read_text())
    chart_meta = {k[0].upper() + k[1:]: v for k, v in yaml.safe_load((chart / "Chart.yaml").read_text()).items()}
    problems, objects = [], []
    for variant, overrides in (("defaults", {}), ("tls+cpu", {"tls": {"enabled": True}, "gpu": {"count": 0}})):
        vals = yaml.safe_load(yaml.safe_dump(values))  # deep copy
        for key, sub in overrides.items():
            vals[key].update(sub)
        scope = {"Values": vals, "Release": RELEASE, "Chart": chart_meta}
        for template in sorted((chart / "templates").glob("*.yaml")):
            try:
                docs = [d for d in yaml.safe_load_all(render(template.read_text(), scope)) if d]
            except (KeyError, ValueError, yaml.YAMLError) as e:
                problems.append(f"{template.name} ({variant}): {e}")
                continue
            for obj in docs:
                try:
                    jsonschema.validate(obj, schema)
                except jsonschema.ValidationError as e:
                    problems.append(f"{template.name} ({variant}): {e.message} at {list(e.absolute_path)}")
                    continue
                problems += [f"{p} ({variant})" for p in check_object(obj, vals)]
                objects.append((variant, obj["kind"]))
    kinds = {k for _, k in objects}
    for required in ("StatefulSet", "Service", "PersistentVolumeClaim", "ServiceMonitor",
                     "HorizontalPodAutoscaler", "ConfigMap", "Deployment"):
        if required not in kinds:
            problems.append(f"chart renders no {required}")
    problems += check_envoy(yaml.safe_load((deploy / "envoy" / "envoy.yaml").read_text()), "envoy/envoy.yaml")
    for p in problems:
        print("FAIL:", p)
    print(f"checked {len(objects)} rendered objects and 2 envoy configs: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "deploy"))
