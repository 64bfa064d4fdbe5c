/**
 * deploy/ stays in step with the code: the example configs and the Kubernetes ConfigMap's files
 * pass the same validation `--config` does, the manifests and units run real `freebs` commands,
 * the controller's chain names the StatefulSet's pods, and the Containerfile ships every folder
 * the command imports at run time.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadConfigFile, type MemberCommand } from '../../cli/config.js';

const deploy = fileURLToPath(new URL('../../deploy/', import.meta.url));
const repo = fileURLToPath(new URL('../../', import.meta.url));
const tmp = mkdtempSync(path.join(os.tmpdir(), 'freebs-deploy-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Doc = { apiVersion: string; kind: string; metadata: { name: string }; spec?: any; data?: Record<string, string> };

function manifests(): Doc[] {
  const dir = path.join(deploy, 'kubernetes');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
    .flatMap((f) =>
      parseAllDocuments(readFileSync(path.join(dir, f), 'utf8')).map((d) => {
        expect(d.errors, f).toEqual([]);
        return d.toJS() as Doc;
      }),
    );
}

const memberCommands = new Set(['replica', 'driver', 'controller']);

describe('deploy/', () => {
  it('example configs load as their commands', () => {
    for (const [name, command] of [['controller.yaml', 'controller'], ['replica-r1.yaml', 'replica'], ['driver.yaml', 'driver']] as const) {
      expect(() => loadConfigFile(path.join(deploy, 'config', name), command), name).not.toThrow();
    }
  });

  it('Kubernetes manifests parse, run real commands with configs that validate, and agree on names', () => {
    const docs = manifests();
    for (const d of docs) expect(d.apiVersion && d.kind && d.metadata?.name, JSON.stringify(d).slice(0, 80)).toBeTruthy();
    const kinds = docs.map((d) => `${d.kind}/${d.metadata.name}`);
    for (const k of ['Secret/freebs-cluster', 'ConfigMap/freebs-config', 'StatefulSet/freebs-replica', 'Deployment/freebs-controller', 'Deployment/freebs-driver', 'Service/freebs-replica', 'Service/freebs-controller', 'PersistentVolumeClaim/freebs-controller-state']) {
      expect(kinds).toContain(k);
    }

    // `kubectl apply -k` applies every manifest but the Secret template, whose placeholder members refuse.
    const kustomization = readFileSync(path.join(deploy, 'kubernetes', 'kustomization.yaml'), 'utf8');
    for (const f of readdirSync(path.join(deploy, 'kubernetes')).filter((x) => x.endsWith('.yaml') && x !== 'kustomization.yaml')) {
      expect(kustomization.includes(`- ${f}`), f).toBe(f !== 'secret.yaml');
    }
    const secret = docs.find((d) => d.kind === 'Secret') as Doc & { stringData: Record<string, string> };
    expect(Buffer.byteLength(secret.stringData['cluster.secret']!)).toBeLessThan(16);

    const configMap = docs.find((d) => d.kind === 'ConfigMap')!;
    const loaded: Record<string, Record<string, unknown>> = {};
    for (const [key, text] of Object.entries(configMap.data!)) {
      const command = key.replace(/\.yaml$/, '') as MemberCommand;
      expect(memberCommands.has(command), key).toBe(true);
      const file = path.join(tmp, key);
      writeFileSync(file, text);
      loaded[command] = loadConfigFile(file, command);
    }

    // Every workload runs `freebs <member> --config <a file of the ConfigMap>`.
    for (const d of docs.filter((x) => x.kind === 'Deployment' || x.kind === 'StatefulSet')) {
      const [container] = d.spec.template.spec.containers as { args: string[] }[];
      const [command, flag, config] = container!.args;
      expect(memberCommands.has(command!), d.metadata.name).toBe(true);
      expect(flag).toBe('--config');
      expect(Object.keys(configMap.data!).map((k) => `/etc/freebs/config/${k}`)).toContain(config);
    }

    // The controller's chain is the StatefulSet's pods at their headless-Service names.
    const sts = docs.find((d) => d.kind === 'StatefulSet')!;
    const expected = Array.from({ length: sts.spec.replicas }, (_, i) => `${sts.metadata.name}-${i}=ws://${sts.metadata.name}-${i}.${sts.spec.serviceName}:7400`);
    expect(loaded.controller!.chain).toBe(expected.join(','));
    expect(loaded.controller!.replicas).toBe(sts.spec.replicas);
    expect(loaded.controller!.spawn).toBe(false);
    expect(loaded.replica!.port).toBe(7400);
    expect(loaded.replica!.controller).toBe('ws://freebs-controller:8080');
    for (const c of Object.values(loaded)) expect(c.secretFile).toBe('/etc/freebs/secret/cluster.secret');
  });

  it('systemd units run real commands with their config files', () => {
    const units = readdirSync(path.join(deploy, 'systemd'));
    expect(units.sort()).toEqual(['freebs-controller.service', 'freebs-driver.service', 'freebs-replica@.service']);
    for (const unit of units) {
      const exec = /^ExecStart=(.*)$/m.exec(readFileSync(path.join(deploy, 'systemd', unit), 'utf8'))![1]!;
      expect(exec, unit).toMatch(/^\/usr\/local\/bin\/freebs (controller|replica|driver) --config \/etc\/freebs\/[\w%-]+\.yaml$/);
    }
  });

  it('the Containerfile ships every folder the command imports, and the launcher', () => {
    const containerfile = readFileSync(path.join(deploy, 'Containerfile'), 'utf8');
    expect(containerfile).toMatch(/^FROM docker\.io\/library\/node:20-slim$/m);
    expect(containerfile).toContain('npm ci --omit=dev');
    // tsx runs the members: it must be a runtime dependency for --omit=dev to keep it.
    const pkg = JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    expect(pkg.dependencies.tsx).toBeDefined();
    const copied = new Set([...containerfile.matchAll(/^COPY (\w+)\/ \1\/$/gm)].map((m) => m[1]));
    const needed = new Set<string>(['cli']);
    // Walk the imports from cli/ (relative ones: folders of this repository).
    const seen = new Set<string>();
    const walk = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/from '(\.{1,2}\/[^']+)\.js'|new URL\('(\.\.\/\w+)\/'/g)) {
        const target = path.resolve(path.dirname(file), m[1] ? `${m[1]}.ts` : m[2]!);
        needed.add(path.relative(repo, target).split(path.sep)[0]!);
        if (m[1]) walk(target);
      }
    };
    for (const f of readdirSync(path.join(repo, 'cli'))) if (f.endsWith('.ts')) walk(path.join(repo, 'cli', f));
    for (const folder of needed) expect(copied, `Containerfile copies ${folder}/`).toContain(folder);
    expect(containerfile).toContain('COPY deploy/freebs deploy/freebs');
  });
});
