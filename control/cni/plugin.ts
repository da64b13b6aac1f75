#!/usr/bin/env node
// The `flannel` CNI plugin executable. The runtime starts it once per pod operation, so it imports
// node built-ins only: start-up is most of its cost.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { CURRENT_VERSION, CniError, SUPPORTED_VERSIONS, checkDelegate, parseNetConf, parseSubnetEnv, renderDelegate, versionBefore, type FlannelNetConf } from './delegate.js';
import { MAP } from '../datapath/objects.js';

const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';
const DEFAULT_DATA_DIR = '/var/lib/cni/flannel';
const DEFAULT_PIN_ROOT = '/sys/fs/bpf/flannel';

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new CniError(4, `${name} is not set`);
  return v;
}

function findPlugin(type: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(type)) throw new CniError(7, `delegate type ${JSON.stringify(type)} is not a plugin name`);
  for (const dir of env('CNI_PATH').split(':')) {
    const p = join(dir, type);
    if (dir && existsSync(p)) return p;
  }
  throw new CniError(7, `delegate plugin ${type} not found in CNI_PATH (${process.env.CNI_PATH})`);
}

/** Runs the delegate with the same environment; its stdout (result or error JSON) becomes ours. */
function runDelegate(conf: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): { status: number; stdout: Buffer } {
  const r = spawnSync(findPlugin(String(conf.type)), { input: JSON.stringify(conf), env, stdio: ['pipe', 'pipe', 'inherit'] });
  if (r.error) throw new CniError(999, `cannot run delegate plugin ${String(conf.type)}`, r.error.message);
  return { status: r.status ?? 1, stdout: r.stdout };
}

/**
 * The version to give the delegate. CNI 1.1.0 results are 1.0.0 results (1.1.0 added the GC and
 * STATUS commands, not result fields), so a delegate that stops at 1.0.0 (Debian's plugins) is run at
 * 1.0.0 and its result relabelled; every other version goes through as flannel's plugin passes it,
 * and the delegate converts its result as the spec says.
 */
function delegateVersion(conf: Record<string, unknown>): string | undefined {
  const v = conf.cniVersion as string | undefined;
  if (v !== '1.1.0') return v;
  const r = runDelegate({ type: conf.type }, { ...process.env, CNI_COMMAND: 'VERSION' });
  try {
    const supported = (JSON.parse(r.stdout.toString()) as { supportedVersions?: string[] }).supportedVersions ?? [];
    return supported.includes('1.1.0') ? v : '1.0.0';
  } catch {
    return '1.0.0';
  }
}

/** Runs the delegate at a version it supports (delegateVersion); a result is labelled with the version asked for. */
function runDelegateAt(conf: Record<string, unknown>): { status: number; stdout: Buffer } {
  const asked = conf.cniVersion;
  const version = delegateVersion(conf);
  if (version === asked) return runDelegate(conf);
  const r = runDelegate({ ...conf, cniVersion: version });
  // DEL answers nothing on success: only a result is relabelled
  return r.status === 0 && r.stdout.length ? { ...r, stdout: Buffer.from(JSON.stringify({ ...(JSON.parse(r.stdout.toString()) as object), cniVersion: asked })) } : r;
}

const pinRoot = (n: FlannelNetConf) => (typeof n.bpfPinRoot === 'string' ? n.bpfPinRoot : DEFAULT_PIN_ROOT);
// pinned only while the agent runs in BPF mode (classic mode removes every fl_* pin); the name is
// LOCAL_PODS_PIN of control/datapath/local-pods.ts, not imported: the plugin loads only built-ins until it must
const bpfMode = (n: FlannelNetConf) => existsSync(join(pinRoot(n), MAP.localPods));

function scratchPath(n: FlannelNetConf): string {
  const id = env('CNI_CONTAINERID');
  // the container ID names a file: nothing that could leave the data dir
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) throw new CniError(4, `CNI_CONTAINERID ${JSON.stringify(id)} is not a valid container ID`);
  return join(n.dataDir ?? DEFAULT_DATA_DIR, id);
}

async function add(n: FlannelNetConf): Promise<number> {
  const path = scratchPath(n);
  const file = n.subnetFile ?? DEFAULT_SUBNET_FILE;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new CniError(11, `cannot read the subnet file ${file}: is flanneld running on this node?`, (e as Error).message);
  }
  checkDelegate(n);
  const conf = renderDelegate(n, parseSubnetEnv(text, file));
  // saved before the delegate runs so that DEL can always replay it, even after the subnet file is gone
  mkdirSync(n.dataDir ?? DEFAULT_DATA_DIR, { recursive: true, mode: 0o700 });
  writeFileSync(`${path}.tmp`, JSON.stringify(conf), { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
  const r = runDelegateAt(conf);
  if (r.status === 0 && conf.type === 'bridge' && bpfMode(n)) {
    const { registerFromResult } = await import('./fastpath.js');
    process.stderr.write(`${await registerFromResult(pinRoot(n), typeof conf.bridge === 'string' ? conf.bridge : 'cni0', r.stdout.toString(), `${path}.fastpath`)}\n`);
  }
  process.stdout.write(r.stdout);
  return r.status;
}

async function del(n: FlannelNetConf): Promise<number> {
  const fast = `${scratchPath(n)}.fastpath`;
  if (existsSync(fast)) {
    // before the veth goes: the receive side must never redirect to a deleted (or reused) ifindex
    const { unregisterSaved } = await import('./fastpath.js');
    const msg = unregisterSaved(pinRoot(n), fast);
    if (msg) process.stderr.write(`${msg}\n`);
  }
  const path = scratchPath(n);
  if (!existsSync(path)) return 0; // DEL is idempotent: nothing was added, or it was deleted already
  let conf: Record<string, unknown>;
  try {
    conf = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    // flannel's plugin: the pod's interface stays on the bridge until the node reboots; DEL succeeds
    process.stderr.write(`failed to parse netconf: ${(e as Error).message}\n`);
    return 0;
  }
  if (n.runtimeConfig) conf.runtimeConfig = n.runtimeConfig;
  const r = runDelegateAt(conf);
  process.stdout.write(r.stdout);
  // flannel's plugin removes the saved config once it was read, whatever the delegate answered: a
  // failed DEL is reported, and a runtime's retry then finds nothing to do and succeeds
  rmSync(path, { force: true });
  return r.status;
}

async function main(): Promise<number> {
  let version = '1.0.0';
  try {
    const cmd = env('CNI_COMMAND');
    if (cmd === 'VERSION') {
      process.stdout.write(JSON.stringify({ cniVersion: CURRENT_VERSION, supportedVersions: SUPPORTED_VERSIONS }));
      return 0;
    }
    const n = parseNetConf(readFileSync(0, 'utf8'));
    version = n.cniVersion ?? version;
    // libcni reads a config without cniVersion as 0.1.0
    const since = (min: string) => {
      if (versionBefore(n.cniVersion ?? '0.1.0', min)) throw new CniError(1, `config version does not allow ${cmd}`, `${cmd} needs cniVersion ${min} or later`);
    };
    switch (cmd) {
      case 'ADD':
        return await add(n);
      case 'DEL':
        return await del(n);
      case 'CHECK':
        // flannel's plugin answers CHECK with success without asking the delegate; so do we
        since('0.4.0');
        return 0;
      case 'GC':
      case 'STATUS':
        // CNI 1.1.0's commands: flannel's plugin implements neither, and libcni answers success
        since('1.1.0');
        return 0;
      default:
        throw new CniError(4, `unknown CNI_COMMAND ${JSON.stringify(cmd)}`);
    }
  } catch (e) {
    const err = e instanceof CniError ? e : new CniError(999, (e as Error).message);
    process.stdout.write(JSON.stringify({ cniVersion: version, code: err.code, msg: err.message, ...(err.details ? { details: err.details } : {}) }));
    return 1;
  }
}

process.exitCode = await main();
