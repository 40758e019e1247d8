#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
// Offline validation of remora's Kubernetes manifests (run it through k8s/validate.sh).
//
// 1. Renders every kustomization under k8s/ (kind Kustomization; Components are rendered
//    through the overlays that use them) with `kubectl kustomize` (or `kustomize build`).
// 2. Validates every rendered object against the Kubernetes API schemas of kubernetes-models
//    (`new Deployment(obj).validate()`), the PodMonitor against the prometheus-operator CRD
//    models, and rejects unknown fields (STRICT: the schemas alone accept them, as the API
//    server's non-strict decoding would drop them silently).
// 3. Checks what ties the objects together: the remora sidecar (native sidecar, probes,
//    resources, securityContext, REMORA_WORKERS, its ConfigMap mounted as a directory, grace
//    period against drain.delay + drain.timeout), Services, PodMonitor and HPA targets, the
//    Grafana dashboard ConfigMap, and `remora --check` on every remora config a ConfigMap holds.
// 4. Requires each fixture k8s/validate/fixtures/broken*.yaml to be rejected, for the reasons
//    its `# expect:` lines name.
// Prints one line per check and ends with "N passed, N failed" (", N skipped" when a check
// could not run, e.g. `remora --check` without a remora binary). Exit status 1 on any failure.
//
// Options: --kubectl PATH | --kustomize PATH (the renderer), --remora PATH (binary for
// --check; default $REMORA_BIN, else proxy/remora of this repository if built), --k8s DIR.

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const args = parseArgs(process.argv.slice(2));
const K8S = path.resolve(args.k8s ?? path.join(HERE, ".."));
const REPO = path.resolve(K8S, "..");
const FIXTURES = path.join(HERE, "fixtures");
const REMORA_IMAGE = "ghcr.io/remora-proxy/remora";

let passed = 0;
let failed = 0;
let skipped = 0;

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--(kubectl|kustomize|remora|k8s)(?:=(.*))?$/.exec(argv[i]);
    if (!m) {
      console.error(`validate.mjs: unknown argument ${argv[i]}`);
      process.exit(2);
    }
    out[m[1]] = m[2] ?? argv[++i];
  }
  return out;
}

function report(ok, name, problems = [], notes = []) {
  if (ok) {
    passed++;
    console.log(`ok    ${name}`);
    for (const n of notes) console.log(`      . ${n}`);
  } else {
    failed++;
    console.log(`FAIL  ${name}`);
    for (const p of problems) console.log(`      - ${p}`);
  }
}

function skip(name, why) {
  skipped++;
  console.log(`skip  ${name}: ${why}`);
}

const rel = (p) => path.relative(REPO, p) || ".";

// ---------------------------------------------------------------------------------------------
// Models: apiVersion -> module of kubernetes-models (or a CRD package), kind -> exported class.

const CRD_PACKAGES = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};
const moduleCache = new Map();

async function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string") return null;
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const spec = `${CRD_PACKAGES[group] ?? "kubernetes-models"}/${apiVersion}`;
  if (!moduleCache.has(spec)) moduleCache.set(spec, await import(spec).catch(() => null));
  const mod = moduleCache.get(spec);
  const model = mod?.[kind];
  return typeof model === "function" && model.kind === kind ? model : null;
}

// STRICT: run the model's compiled schema validator over a Proxy of the object and record,
// for every object node, which property names the validator looked up. A typed schema looks
// up each of its properties (present or not); a map (labels, data, resources.limits) is
// enumerated instead, and a free-form node (x-kubernetes-preserve-unknown-fields) is not
// looked into at all. Keys of a typed node that the validator never asked for are unknown.
function unknownFields(Model, obj) {
  const nodes = new Map();
  const wrap = (target, where) => {
    if (target === null || typeof target !== "object") return target;
    let info = nodes.get(target);
    if (!info) {
      info = { where, asked: new Set(), enumerated: false };
      nodes.set(target, info);
    }
    return new Proxy(target, {
      get(t, key, receiver) {
        if (typeof key === "string") info.asked.add(key);
        const v = Reflect.get(t, key, receiver);
        if (typeof key === "string" && Object.hasOwn(t, key) && v && typeof v === "object") {
          return wrap(v, Array.isArray(t) ? `${where}[${key}]` : where ? `${where}.${key}` : key);
        }
        return v;
      },
      has(t, key) {
        if (typeof key === "string") info.asked.add(key);
        return Reflect.has(t, key);
      },
      ownKeys(t) {
        info.enumerated = true;
        return Reflect.ownKeys(t);
      },
    });
  };
  try {
    Model.prototype.validate.call(wrap(obj, ""));
  } catch {
    // schema errors are reported by the plain validation
  }
  const unknown = [];
  for (const [target, info] of nodes) {
    if (Array.isArray(target) || info.enumerated || info.asked.size === 0) continue;
    for (const key of Object.keys(target)) {
      if (!info.asked.has(key)) {
        unknown.push(`${info.where ? info.where + "." : ""}${key}: unknown field "${key}"`);
      }
    }
  }
  return unknown;
}

async function validateObject(obj) {
  const problems = [];
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) return ["not a mapping"];
  if (!obj.metadata?.name) problems.push("metadata.name is missing");
  const Model = await modelFor(obj.apiVersion, obj.kind);
  if (!Model) return [...problems, `no schema for apiVersion ${obj.apiVersion} kind ${obj.kind}`];
  try {
    new Model(obj).validate();
  } catch (e) {
    const errs = e?.errors;
    if (Array.isArray(errs) && errs.length) {
      for (const x of errs) problems.push(`schema: ${x.instancePath || "/"} ${x.message}`);
    } else {
      problems.push(`schema: ${e?.message ?? e}`);
    }
  }
  problems.push(...unknownFields(Model, obj));
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Rendering and parsing.

function findRenderer() {
  const candidates = [];
  if (args.kubectl) candidates.push({ kind: "kubectl", bin: args.kubectl });
  if (args.kustomize) candidates.push({ kind: "kustomize", bin: args.kustomize });
  if (!candidates.length) {
    for (const dir of (process.env.PATH ?? "").split(":").filter(Boolean)) {
      candidates.push({ kind: "kubectl", bin: path.join(dir, "kubectl") });
    }
    candidates.push({ kind: "kubectl", bin: "/usr/bin/kubectl" });
    candidates.push({ kind: "kubectl", bin: "/usr/local/bin/kubectl" });
    for (const dir of (process.env.PATH ?? "").split(":").filter(Boolean)) {
      candidates.push({ kind: "kustomize", bin: path.join(dir, "kustomize") });
    }
  }
  for (const c of candidates) {
    try {
      fs.accessSync(c.bin, fs.constants.X_OK);
    } catch {
      continue;
    }
    try {
      if (c.kind === "kubectl") {
        const v = JSON.parse(execFileSync(c.bin, ["version", "--client", "-o", "json"], { encoding: "utf8", timeout: 30000 }));
        c.version = `kubectl ${v.clientVersion?.gitVersion}, kustomize ${v.kustomizeVersion}`;
      } else {
        c.version = execFileSync(c.bin, ["version"], { encoding: "utf8", timeout: 30000 }).trim();
      }
      return c;
    } catch {
      continue;
    }
  }
  return null;
}

function render(renderer, dir) {
  const argv = renderer.kind === "kubectl" ? ["kustomize", dir] : ["build", dir];
  return execFileSync(renderer.bin, argv, {
    encoding: "utf8",
    timeout: 120000,
    maxBuffer: 64 << 20,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

// YAML 1.1, as Kubernetes' own decoder reads manifests; duplicate keys are errors.
function parseDocs(text) {
  const docs = YAML.parseAllDocuments(text, { version: "1.1", uniqueKeys: true, prettyErrors: false });
  const objs = [];
  const errors = [];
  for (const d of docs) {
    for (const e of d.errors) errors.push(e.message);
    if (d.errors.length) continue;
    const o = d.toJS({ maxAliasCount: 100 });
    if (o !== null && o !== undefined) objs.push(o);
  }
  return { objs, errors };
}

function listKustomizations(dir, out = []) {
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    if (ent.isDirectory()) {
      if (ent.name === "node_modules" || ent.name.startsWith(".")) continue;
      listKustomizations(path.join(dir, ent.name), out);
    } else if (["kustomization.yaml", "kustomization.yml", "Kustomization"].includes(ent.name)) {
      const doc = YAML.parse(fs.readFileSync(path.join(dir, ent.name), "utf8")) ?? {};
      out.push({ dir, kind: doc.kind ?? "Kustomization", components: doc.components ?? [] });
    }
  }
  return out.sort((a, b) => a.dir.localeCompare(b.dir));
}

// ---------------------------------------------------------------------------------------------
// What ties the objects together.

const id = (o) => `${o.apiVersion} ${o.kind} ${o.metadata?.name ?? "?"}`;
const nsOf = (o) => o.metadata?.namespace ?? "";
const durationRe = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;

function seconds(v, dflt) {
  if (v === undefined || v === null) return dflt;
  if (typeof v === "number") return v;
  const m = durationRe.exec(String(v).trim());
  if (!m) return NaN;
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
}

function portOf(address) {
  const m = /:(\d+)$/.exec(String(address ?? ""));
  return m ? Number(m[1]) : null;
}

function podTemplates(objs) {
  const out = [];
  for (const o of objs) {
    const tpl = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"].includes(o.kind)
      ? o.spec?.template
      : o.kind === "Pod"
        ? { metadata: o.metadata, spec: o.spec }
        : null;
    if (tpl?.spec) out.push({ owner: o, tpl });
  }
  return out;
}

const isRemora = (c) => c?.name === "remora" || String(c?.image ?? "").startsWith(REMORA_IMAGE);

function selects(selector, labels) {
  if (!selector || !Object.keys(selector).length) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function matchLabelsSelects(sel, labels) {
  if (!sel) return false;
  const okLabels = selects(sel.matchLabels ?? {}, labels) || !sel.matchLabels;
  const okExpr = (sel.matchExpressions ?? []).every((e) => {
    const v = labels?.[e.key];
    if (e.operator === "In") return e.values.includes(v);
    if (e.operator === "NotIn") return !e.values.includes(v);
    if (e.operator === "Exists") return v !== undefined;
    if (e.operator === "DoesNotExist") return v === undefined;
    return false;
  });
  return okLabels && okExpr && (sel.matchLabels || sel.matchExpressions);
}

function allContainers(spec) {
  return [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
}

function resolvePort(spec, port) {
  for (const c of allContainers(spec)) {
    for (const p of c.ports ?? []) {
      if (typeof port === "string" ? p.name === port : p.containerPort === port) return { c, p };
    }
  }
  return null;
}

// The remora configuration a remora container reads: -c FILE (else /etc/remora/remora.yaml),
// from the ConfigMap volume mounted at FILE's directory.
function remoraConfigOf(spec, c, objs, ns, problems) {
  const a = c.args ?? [];
  const i = a.findIndex((x) => x === "-c" || x === "--config");
  const file = i >= 0 ? a[i + 1] : "/etc/remora/remora.yaml";
  const dir = path.posix.dirname(file);
  const mount = (c.volumeMounts ?? []).find((m) => m.mountPath === dir || m.mountPath === file);
  if (!mount) {
    problems.push(`remora: no volume mounted at ${dir} for its config ${file}`);
    return null;
  }
  if (mount.subPath || mount.subPathExpr || mount.mountPath === file) {
    problems.push(`remora: its config is mounted with subPath: the kubelet never updates it, so live reload never sees a change (mount the ConfigMap as the directory ${dir})`);
  }
  const vol = (spec.volumes ?? []).find((v) => v.name === mount.name);
  const cmName = vol?.configMap?.name;
  if (!cmName) {
    problems.push(`remora: volume ${mount.name} is not a ConfigMap`);
    return null;
  }
  const cm = objs.find((o) => o.kind === "ConfigMap" && o.metadata?.name === cmName && nsOf(o) === ns);
  if (!cm) {
    problems.push(`remora: ConfigMap ${cmName} is not among the rendered objects`);
    return null;
  }
  const key = path.posix.basename(file);
  const text = cm.data?.[key];
  if (typeof text !== "string") {
    problems.push(`remora: ConfigMap ${cmName} has no key ${key}`);
    return null;
  }
  try {
    return YAML.parse(text, { version: "1.1" }) ?? {};
  } catch (e) {
    problems.push(`remora: ${cmName}/${key} is not YAML: ${e.message}`);
    return null;
  }
}

// Each TLS file of the config must come from a Secret mounted as a directory (a subPath mount
// is never updated: a renewed certificate would never be seen), not nested in another mount.
function tlsWiring(spec, c, cfg, problems) {
  const mounts = c.volumeMounts ?? [];
  const under = (file, dir) => file === dir || file.startsWith(`${dir.replace(/\/+$/, "")}/`);
  for (const [key, file] of tlsFiles(cfg)) {
    if (file.includes("${")) continue; // named by the environment: not knowable here
    const m = mounts.filter((x) => under(file, x.mountPath)).sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
    if (!m) {
      problems.push(`remora: ${key} ${file} is under no volume mount of the container (mount its Secret as a directory)`);
      continue;
    }
    if (m.subPath || m.subPathExpr || m.mountPath === file) {
      problems.push(`remora: ${key} ${file} is mounted with subPath: the kubelet never updates it, so a renewed certificate is never served (mount the Secret as a directory)`);
    }
    const outer = mounts.find((x) => x !== m && under(m.mountPath, x.mountPath));
    if (outer) {
      problems.push(`remora: ${key}: the mount ${m.mountPath} is nested in the mount ${outer.mountPath} (the kubelet rewrites that volume's directory): mount it beside it`);
    }
    const vol = (spec.volumes ?? []).find((v) => v.name === m.name);
    const secret = vol?.secret || (vol?.projected?.sources ?? []).some((src) => src.secret);
    if (!secret) problems.push(`remora: ${key} ${file} is on volume ${m.name}, which is no Secret: keys and certificates belong in a Secret`);
  }
}

function checkSidecar(owner, spec, c, objs, problems) {
  const where = `remora`;
  const native = (spec.initContainers ?? []).includes(c);
  if (native && c.restartPolicy !== "Always") {
    problems.push(`${where}: an init container without restartPolicy: Always is no sidecar (it would block the app)`);
  }
  if (!String(c.image ?? "").startsWith(`${REMORA_IMAGE}:`) && !String(c.image ?? "").startsWith(`${REMORA_IMAGE}@`)) {
    problems.push(`${where}: image ${c.image} is not ${REMORA_IMAGE}:TAG or @DIGEST`);
  }
  const cfg = remoraConfigOf(spec, c, objs, nsOf(owner), problems) ?? {};
  tlsWiring(spec, c, cfg, problems);
  const adminPort = portOf(cfg.admin?.address ?? "0.0.0.0:9090");
  const listenPorts = (cfg.listeners ?? [{ address: "0.0.0.0:8000" }]).map((l) => portOf(l.address));
  const ports = c.ports ?? [];
  const adminDecl = ports.find((p) => p.containerPort === adminPort);
  if (!adminDecl) problems.push(`${where}: no container port for the admin address (${adminPort})`);
  for (const lp of listenPorts) {
    if (!ports.some((p) => p.containerPort === lp)) problems.push(`${where}: no container port for listener port ${lp}`);
  }
  const probe = (name, wantPath) => {
    const p = c[name];
    if (!p?.httpGet) {
      problems.push(`${where}: ${name} missing (httpGet ${wantPath} on the admin port)`);
      return;
    }
    if (p.httpGet.path !== wantPath) problems.push(`${where}: ${name} path ${p.httpGet.path}, want ${wantPath}`);
    const port = p.httpGet.port;
    const ok = port === adminPort || (typeof port === "string" && adminDecl?.name === port);
    if (!ok) problems.push(`${where}: ${name} port ${port} is not the admin port ${adminPort}`);
  };
  probe("startupProbe", "/readyz");
  probe("readinessProbe", "/readyz");
  probe("livenessProbe", "/healthz");
  if (c.startupProbe && (c.startupProbe.periodSeconds ?? 10) > 1) {
    problems.push(`${where}: startupProbe.periodSeconds should be 1: the app waits for it`);
  }
  if (c.startupProbe && (c.startupProbe.periodSeconds ?? 10) * (c.startupProbe.failureThreshold ?? 3) < 10) {
    problems.push(`${where}: startupProbe allows under 10 s to start`);
  }
  if ((cfg.upstreams ?? []).some((u) => u.health_check) && c.startupProbe?.httpGet?.path === "/readyz" && native) {
    problems.push(`${where}: an upstream health_check with a /readyz startupProbe on a native sidecar waits forever (the app starts after remora)`);
  }
  const r = c.resources ?? {};
  if (!r.requests?.cpu) problems.push(`${where}: resources.requests.cpu missing`);
  if (r.limits?.cpu) problems.push(`${where}: resources.limits.cpu set: a sidecar on the request path should not be CPU-throttled`);
  if (!r.limits?.memory || String(r.requests?.memory) !== String(r.limits?.memory)) {
    problems.push(`${where}: resources: memory request must equal the memory limit`);
  }
  const sc = c.securityContext ?? {};
  const want = {
    runAsNonRoot: true,
    runAsUser: 65532,
    runAsGroup: 65532,
    readOnlyRootFilesystem: true,
    allowPrivilegeEscalation: false,
  };
  for (const [k, v] of Object.entries(want)) {
    if (sc[k] !== v) problems.push(`${where}: securityContext.${k} should be ${v}`);
  }
  if (!(sc.capabilities?.drop ?? []).includes("ALL")) problems.push(`${where}: securityContext.capabilities.drop should be [ALL]`);
  if (sc.privileged) problems.push(`${where}: securityContext.privileged`);
  const seccomp = sc.seccompProfile?.type ?? spec.securityContext?.seccompProfile?.type;
  if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost") problems.push(`${where}: seccompProfile should be RuntimeDefault`);
  const w = (c.env ?? []).find((e) => e.name === "REMORA_WORKERS");
  const rf = w?.valueFrom?.resourceFieldRef;
  if (!rf || rf.resource !== "requests.cpu" || String(rf.divisor ?? "1") !== "1" || (rf.containerName && rf.containerName !== c.name)) {
    problems.push(`${where}: REMORA_WORKERS should come from the downward API (resourceFieldRef requests.cpu, divisor 1)`);
  }
  // Shutdown: the pod's grace period must cover what the drain may take.
  const delay = seconds(cfg.drain?.delay, 0);
  const timeout = seconds(cfg.drain?.timeout, 20);
  if (Number.isNaN(delay) || Number.isNaN(timeout)) {
    problems.push(`${where}: drain.delay / drain.timeout are not durations`);
    return;
  }
  const grace = spec.terminationGracePeriodSeconds ?? 30;
  let before = 0;
  if (native) {
    // remora's SIGTERM comes after the app containers exit: their preStop sleeps come first.
    for (const a of spec.containers ?? []) {
      const s = a.lifecycle?.preStop?.sleep?.seconds;
      if (typeof s === "number") before = Math.max(before, s);
    }
  } else if (delay < 5) {
    problems.push(`${where}: a regular sidecar gets SIGTERM with the app: drain.delay should be about 5s (is ${delay}s)`);
  }
  if (!(grace > before + delay + timeout)) {
    problems.push(`${where}: terminationGracePeriodSeconds ${grace} must exceed ${before ? `the app's preStop ${before}s + ` : ""}drain.delay ${delay}s + drain.timeout ${timeout}s`);
  }
}

function policyChecks(label, objs) {
  const results = [];
  const templates = podTemplates(objs);
  for (const { owner, tpl } of templates) {
    const spec = tpl.spec;
    const sidecars = allContainers(spec).filter(isRemora);
    if (!sidecars.length) continue;
    const problems = [];
    if (sidecars.length > 1) problems.push("more than one remora container");
    for (const c of sidecars) checkSidecar(owner, spec, c, objs, problems);
    results.push([`${label}: remora sidecar of ${owner.kind} ${owner.metadata?.name}`, problems]);
  }
  for (const svc of objs.filter((o) => o.kind === "Service" && o.spec?.selector)) {
    const problems = [];
    const pods = templates.filter(({ owner, tpl }) => nsOf(owner) === nsOf(svc) && selects(svc.spec.selector, tpl.metadata?.labels));
    if (!pods.length) problems.push(`selector ${JSON.stringify(svc.spec.selector)} matches no pod template`);
    for (const { owner, tpl } of pods) {
      (svc.spec.ports ?? []).forEach((sp, i) => {
        const target = sp.targetPort ?? sp.port;
        const hit = resolvePort(tpl.spec, target);
        if (!hit) {
          problems.push(`ports[${i}].targetPort ${target} is no container port of ${owner.kind} ${owner.metadata?.name}`);
        } else if (i === 0 && allContainers(tpl.spec).some(isRemora) && !isRemora(hit.c)) {
          problems.push(`ports[0].targetPort ${target} reaches container ${hit.c.name}, not remora: traffic would bypass the sidecar`);
        }
      });
    }
    results.push([`${label}: Service ${svc.metadata?.name} targets`, problems]);
  }
  for (const pm of objs.filter((o) => o.kind === "PodMonitor")) {
    const problems = [];
    const pods = templates.filter(({ tpl }) => matchLabelsSelects(pm.spec?.selector, tpl.metadata?.labels));
    if (!pods.length) problems.push("selector matches no pod template");
    for (const { owner, tpl } of pods) {
      for (const ep of pm.spec?.podMetricsEndpoints ?? []) {
        if (ep.port && !resolvePort(tpl.spec, ep.port)) problems.push(`port ${ep.port} is no container port of ${owner.kind} ${owner.metadata?.name}`);
      }
    }
    results.push([`${label}: PodMonitor ${pm.metadata?.name} targets`, problems]);
  }
  for (const hpa of objs.filter((o) => o.kind === "HorizontalPodAutoscaler")) {
    const problems = [];
    const ref = hpa.spec?.scaleTargetRef ?? {};
    const t = objs.find((o) => o.kind === ref.kind && o.metadata?.name === ref.name && o.apiVersion === ref.apiVersion && nsOf(o) === nsOf(hpa));
    if (!t) problems.push(`scaleTargetRef ${ref.apiVersion} ${ref.kind} ${ref.name} is not among the rendered objects`);
    else if (t.spec?.replicas !== undefined) problems.push(`${ref.kind} ${ref.name} sets spec.replicas: every apply would undo the HPA`);
    results.push([`${label}: HorizontalPodAutoscaler ${hpa.metadata?.name} target`, problems]);
  }
  for (const cm of objs.filter((o) => o.kind === "ConfigMap" && o.metadata?.labels?.grafana_dashboard !== undefined)) {
    const problems = [];
    if (cm.metadata.labels.grafana_dashboard !== "1") problems.push(`label grafana_dashboard is ${JSON.stringify(cm.metadata.labels.grafana_dashboard)}, want "1"`);
    for (const [k, v] of Object.entries(cm.data ?? {})) {
      try {
        const d = JSON.parse(v);
        if (!d.uid || !d.panels) problems.push(`${k}: not a dashboard (no uid or panels)`);
        const src = path.join(K8S, "grafana", k);
        if (fs.existsSync(src) && fs.readFileSync(src, "utf8") !== v) problems.push(`${k} differs from ${rel(src)}`);
      } catch (e) {
        problems.push(`${k}: not JSON: ${e.message}`);
      }
    }
    results.push([`${label}: Grafana dashboard ConfigMap ${cm.metadata.name}`, problems]);
  }
  return results;
}

// `remora --check` on every remora configuration held by a ConfigMap (key *remora.yaml).
function remoraBinary() {
  const cands = [args.remora, process.env.REMORA_BIN, path.join(REPO, "proxy", "remora")].filter(Boolean);
  for (const b of cands) {
    try {
      fs.accessSync(b, fs.constants.X_OK);
      return b;
    } catch {
      // next
    }
  }
  return null;
}

const REMORA = remoraBinary();

// The TLS files a remora config names: [yaml path, file, kind] with kind "key" for private keys
// and "cert" for certificates and CA bundles (listeners[].tls, upstreams[].tls).
function tlsFiles(cfg) {
  const out = [];
  const add = (where, t, keys) => {
    if (!t || typeof t !== "object") return;
    for (const [k, kind] of keys) {
      if (typeof t[k] === "string") out.push([`${where}.tls.${k}`, t[k], kind]);
    }
  };
  (cfg?.listeners ?? []).forEach((l, i) =>
    add(`listeners[${i}]`, l?.tls, [["cert", "cert"], ["key", "key"], ["client_ca", "cert"]]));
  (cfg?.upstreams ?? []).forEach((u, i) =>
    add(`upstreams[${i}]`, u?.tls, [["ca", "cert"], ["cert", "cert"], ["key", "key"]]));
  return out;
}

// The files of a Secret exist only in the pod: for `remora --check`, text's TLS file names are
// replaced with a throwaway self-signed ECDSA P-256 pair made in dir (openssl CLI), so the check
// covers everything but the Secret's content (its wiring is checkSidecar's).
function withThrowawayTls(text, dir) {
  let cfg;
  try {
    cfg = YAML.parse(text, { version: "1.1" }) ?? {};
  } catch {
    return text; // remora --check reports it
  }
  const files = tlsFiles(cfg);
  if (!files.length) return text;
  const crt = path.join(dir, "throwaway.crt");
  const keyFile = path.join(dir, "throwaway.key");
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", keyFile, "-out", crt, "-days", "2", "-subj", "/CN=remora-k8s-validate"],
  { stdio: ["ignore", "pipe", "pipe"], timeout: 30000 });
  for (const [, file, kind] of files) text = text.split(file).join(kind === "key" ? keyFile : crt);
  return text;
}

function configChecks(label, objs) {
  const results = [];
  for (const cm of objs.filter((o) => o.kind === "ConfigMap")) {
    for (const [key, text] of Object.entries(cm.data ?? {})) {
      if (!key.endsWith("remora.yaml")) continue;
      const name = `${label}: remora --check ConfigMap ${cm.metadata?.name}/${key}`;
      if (!REMORA) {
        results.push([name, null]);
        continue;
      }
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "remora-k8s-"));
      const file = path.join(dir, key);
      let problems = [];
      try {
        fs.writeFileSync(file, withThrowawayTls(text, dir));
      } catch (e) {
        results.push([name, [`cannot stand in for its TLS files: ${e.message}`]]);
        fs.rmSync(dir, { recursive: true, force: true });
        continue;
      }
      try {
        const env = { ...process.env };
        delete env.REMORA_WORKERS;
        delete env.REMORA_CONFIG;
        execFileSync(REMORA, ["--check", "-c", file], { encoding: "utf8", timeout: 30000, env, stdio: ["ignore", "pipe", "pipe"] });
      } catch (e) {
        const out = `${e.stdout ?? ""}${e.stderr ?? ""}`.trim() || String(e.message);
        problems = out.split("\n").map((l) => l.replace(file, `${cm.metadata?.name}/${key}`));
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
      results.push([name, problems]);
    }
  }
  return results;
}

async function checkAll(label, objs) {
  const results = [];
  for (const o of objs) results.push([`${label}: ${id(o)}`, await validateObject(o)]);
  results.push(...policyChecks(label, objs));
  results.push(...configChecks(label, objs));
  return results;
}

// The sidecar the example spells out and the one the inject Component adds must not drift.
function sameSidecar(rendered) {
  // The TLS variant (k8s/tls) adds its port and its Secret's mount: the rest must not differ.
  const strip = (c) => {
    const { env, ...rest } = c;
    rest.ports = (rest.ports ?? []).filter((p) => p.name !== "remora-https");
    rest.volumeMounts = (rest.volumeMounts ?? []).filter((m) => m.name !== "remora-tls");
    return JSON.stringify(rest, Object.keys(flatKeys(rest)).sort());
  };
  const seen = [];
  for (const [label, objs] of rendered) {
    for (const { owner, tpl } of podTemplates(objs)) {
      for (const c of allContainers(tpl.spec).filter(isRemora)) seen.push([`${label} ${owner.metadata?.name}`, strip(c)]);
    }
  }
  const problems = [];
  for (const [where, s] of seen.slice(1)) {
    if (s !== seen[0][1]) problems.push(`${where} differs from ${seen[0][0]} (beyond env)`);
  }
  return problems;
}

function flatKeys(o, acc = {}) {
  if (o && typeof o === "object") {
    for (const [k, v] of Object.entries(o)) {
      acc[k] = true;
      flatKeys(v, acc);
    }
  }
  return acc;
}

// The YAML blocks of k8s/README.md: each parses; Kubernetes objects among them validate; the
// HPAs' Pods metrics are produced by the adapter rules there, from series remora serves.
async function readmeChecks(rendered) {
  const readme = path.join(K8S, "README.md");
  if (!fs.existsSync(readme)) return;
  const text = fs.readFileSync(readme, "utf8");
  const blocks = [...text.matchAll(/^```yaml\n([\s\S]*?)^```/gm)].map((m) => m[1]);
  const rules = [];
  const problems = [];
  let objects = 0;
  for (const [i, b] of blocks.entries()) {
    const { objs, errors } = parseDocs(b);
    for (const e of errors) problems.push(`yaml block ${i + 1}: ${e}`);
    for (const o of objs) {
      // kustomization files are checked by kustomize itself (it rejects unknown fields)
      if (o && typeof o === "object" && o.apiVersion && o.kind && !String(o.apiVersion).startsWith("kustomize.config.k8s.io/")) {
        objects++;
        for (const p of await validateObject(o)) problems.push(`yaml block ${i + 1}: ${id(o)}: ${p}`);
      }
      const r = o?.rules?.custom ?? o?.rules;
      if (Array.isArray(r)) rules.push(...r);
    }
  }
  report(problems.length === 0, `${rel(readme)}: ${blocks.length} YAML blocks parse, the ${objects} Kubernetes object${objects === 1 ? "" : "s"} among them validate${objects === 1 ? "s" : ""}`, problems);

  const hpaMetrics = new Set();
  for (const [, objs] of rendered) {
    for (const h of objs.filter((o) => o.kind === "HorizontalPodAutoscaler")) {
      for (const m of h.spec?.metrics ?? []) if (m.type === "Pods") hpaMetrics.add(m.pods?.metric?.name);
    }
  }
  if (!hpaMetrics.size) return;
  const p2 = [];
  const served = (() => {
    const src = path.join(REPO, "proxy", "metrics.c");
    return fs.existsSync(src) ? fs.readFileSync(src, "utf8") : null;
  })();
  for (const name of hpaMetrics) {
    const rule = rules.find((r) => r?.name?.as === name);
    if (!rule) {
      p2.push(`HPA metric ${name}: no adapter rule in README.md names it (name.as)`);
      continue;
    }
    for (const k of ["seriesQuery", "metricsQuery"]) if (typeof rule[k] !== "string") p2.push(`rule ${name}: ${k} missing`);
    const ov = rule.resources?.overrides ?? {};
    if (ov.namespace?.resource !== "namespace" || ov.pod?.resource !== "pod") p2.push(`rule ${name}: resources.overrides must map namespace and pod`);
    const series = /^([A-Za-z_:][A-Za-z0-9_:]*)/.exec(rule.seriesQuery ?? "")?.[1];
    if (served !== null && series && ![series, series.replace(/_total$/, "")].some((s) => served.includes(`"${s}"`))) {
      p2.push(`rule ${name}: remora serves no series ${series} (proxy/metrics.c)`);
    }
  }
  report(p2.length === 0, `${rel(readme)}: the adapter rules give the HPA its metrics (${[...hpaMetrics].join(", ")})`, p2);
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const renderer = findRenderer();
  if (!renderer) {
    console.log("FAIL  no kustomize renderer: kubectl (>= 1.27, kustomize v5 built in) was not found on PATH, in /usr/bin or /usr/local/bin, nor kustomize on PATH; install kubectl or pass --kubectl PATH");
    failed++;
  } else {
    console.log(`== rendering with ${renderer.bin} (${renderer.version})`);
    console.log(`== remora --check with ${REMORA ? REMORA : "(none: build proxy/remora or set REMORA_BIN; those checks are skipped)"}`);
  }

  const rendered = [];
  const kusts = listKustomizations(K8S);
  const components = kusts.filter((k) => k.kind === "Component");
  for (const k of kusts.filter((x) => x.kind !== "Component")) {
    const label = rel(k.dir);
    if (!renderer) {
      skip(`${label}: render`, "no renderer");
      continue;
    }
    let text;
    try {
      text = render(renderer, k.dir);
    } catch (e) {
      report(false, `${label}: kustomize render`, [String(e.stderr || e.message).trim()]);
      continue;
    }
    const { objs, errors } = parseDocs(text);
    report(errors.length === 0 && objs.length > 0, `${label}: kustomize render (${objs.length} object${objs.length === 1 ? "" : "s"})`, errors.length ? errors : ["no objects"]);
    rendered.push([label, objs]);
    for (const [name, problems] of await checkAll(label, objs)) {
      if (problems === null) skip(name, "no remora binary");
      else report(problems.length === 0, name, problems);
    }
  }

  // Every Component is used by some rendered kustomization.
  for (const c of components) {
    const users = kusts.filter((k) => k.components.some((p) => path.resolve(k.dir, p) === c.dir));
    report(users.length > 0, `${rel(c.dir)}: Component used by ${users.map((u) => rel(u.dir)).join(", ") || "no kustomization"}`, ["no kustomization renders it"]);
  }
  if (rendered.length) report(sameSidecar(rendered).length === 0, "the remora sidecar is the same in every rendered kustomization", sameSidecar(rendered));

  await readmeChecks(rendered);

  // Broken fixtures: each must be rejected, for the reasons its `# expect:` lines give.
  const fixtures = fs.existsSync(FIXTURES)
    ? fs.readdirSync(FIXTURES).filter((f) => /^broken.*\.ya?ml$/.test(f)).sort()
    : [];
  if (!fixtures.length) report(false, "fixtures: none found in k8s/validate/fixtures (broken*.yaml)");
  for (const f of fixtures) {
    const file = path.join(FIXTURES, f);
    const text = fs.readFileSync(file, "utf8");
    const expects = [...text.matchAll(/^#\s*expect:\s*(.+?)\s*$/gm)].map((m) => m[1]);
    const needsRemora = /^#\s*needs:\s*remora\b/m.test(text);
    const name = `fixture ${rel(file)} is rejected`;
    if (needsRemora && !REMORA) {
      skip(name, "no remora binary");
      continue;
    }
    const { objs, errors } = parseDocs(text);
    const found = [...errors];
    for (const [check, problems] of await checkAll(`fixture ${f}`, objs)) {
      for (const p of problems ?? []) found.push(`${check}: ${p}`);
    }
    const missing = expects.filter((e) => !found.some((p) => p.includes(e)));
    const problems = [];
    if (!expects.length) problems.push("the fixture names no `# expect:` reason");
    if (!found.length) problems.push("accepted: the validation let a broken manifest through");
    for (const e of missing) problems.push(`not rejected for: ${e}`);
    report(
      problems.length === 0,
      problems.length ? name : `${name}: ${found.length} problems found, the ${expects.length} expected among them`,
      [...problems, ...found.map((p) => `found: ${p}`)],
      found,
    );
  }

  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.log(`FAIL  validate.mjs crashed: ${e?.stack ?? e}`);
  console.log(`${passed} passed, ${failed + 1} failed${skipped ? `, ${skipped} skipped` : ""}`);
  process.exit(1);
});
