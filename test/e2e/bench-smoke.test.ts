// The benchmark suite in quick mode (one round, short runs), so it cannot rot: every section
// produces finite figures, the three output files are written, and no lab is left behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../helpers/lab.ts';

const namespaces = () => spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).length;

test('bench/run.ts --quick: all sections measured, JSON + Markdown + SVG written, nothing left behind', { timeout: 600_000 }, () => {
  const out = mkdtempSync(join(tmpdir(), 'flannel-bench-'));
  try {
    const ns0 = namespaces();
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'run.ts'), '--quick', '--out', out], { cwd: ROOT, encoding: 'utf8', timeout: 540_000 });
    assert.equal(r.status, 0, r.stderr.slice(-3000));
    type Stat = { median: number };
    const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as {
      datapath: Record<string, Record<string, Stat>>;
      programs: Record<string, Stat>;
      startup: Record<string, { programMs: Stat; warmProgramMs: Stat; rssMB: Stat }>;
      convergence: Record<string, { addP99: number; churn: { events: number } }>;
      soak: { cycles: number; events: number; samples: { rssMB: number }[]; rssGrowthMB: number };
      restart: Record<string, { sent: number }>;
      cni: Record<'addMs' | 'delMs' | 'bridgeAddMs' | 'versionMs', { p50: number }>;
      watchLoad: { watchers: number; via: string; missed: number; lastP99: number }[];
      targets: { measured: number }[];
    };
    const modes = [
      'BPF + fast path + bypass',
      'BPF + pod fast path',
      'BPF vxlan',
      'classic vxlan',
      'host-gw',
      'udp',
      'underlay (no overlay)',
      'BPF + pod fast path (IPv6 pods)',
      'BPF vxlan (IPv6 pods)',
      'classic vxlan (IPv6 pods)',
    ];
    // every figure in both underlay settings
    assert.deepEqual(Object.keys(res.datapath), [...modes, ...modes.map((m) => `${m}, NIC-like underlay`)]);
    for (const [mode, d] of Object.entries<Record<string, { median: number }>>(res.datapath))
      // the CPU split counts whole jiffies: in a 1 s quick run user time can be 0, never negative
      for (const [k, v] of Object.entries(d)) assert.ok(Number.isFinite(v.median) && (k.endsWith('SecPerGbit') && k !== 'cpuSecPerGbit' ? v.median >= 0 : v.median > 0), `${mode} ${k} = ${v.median}`);
    assert.deepEqual(Object.keys(res.programs).sort(), [
      'egress forward (tc, flannel.1)',
      'egress no route (tc)',
      'flannel.1 ingress, handed over by the tc guard',
      'guard member pass (XDP)',
      'guard member pass (tc)',
      'guard spoofed drop (XDP)',
      'guard spoofed drop (tc)',
      'pod fast path send, conntrack lookup (tc)',
      'pod fast path send, redirect alone (tc)',
    ]);
    for (const v of Object.values<{ median: number }>(res.programs)) assert.ok(v.median > 0);
    for (const k of ['bpf 100', 'classic 100', 'bpf 1000', 'classic 1000'])
      assert.ok(res.startup[k]!.programMs.median > 0 && res.startup[k]!.warmProgramMs.median > 0 && res.startup[k]!.rssMB.median > 30, k);
    for (const m of ['bpf', 'classic']) assert.ok(res.convergence[m]!.addP99 > 0 && res.convergence[m]!.churn.events === 200, m);
    // the leak test ran its loop and sampled the agent throughout
    assert.ok(res.soak.cycles > 0 && res.soak.events === res.soak.cycles * 100, `soak ${res.soak.cycles} cycles, ${res.soak.events} events`);
    assert.ok(res.soak.samples.length >= 5 && res.soak.samples.every((x) => x.rssMB > 30) && Number.isFinite(res.soak.rssGrowthMB));
    for (const v of Object.values<{ sent: number }>(res.restart)) assert.ok(v.sent > 100);
    for (const k of ['addMs', 'delMs', 'bridgeAddMs', 'versionMs'] as const) assert.ok(res.cni[k].p50 > 0, `cni ${k}`);
    assert.deepEqual(
      res.watchLoad.map((w) => `${w.watchers} ${w.via} missed ${w.missed}`),
      ['50 etcd missed 0', '50 grpc-proxy missed 0'],
    );
    for (const w of res.watchLoad) assert.ok(w.lastP99 > 0, w.via);
    assert.ok(res.targets.length >= 10 && res.targets.every((t: { measured: number }) => Number.isFinite(t.measured)));
    const md = readFileSync(join(out, 'results.md'), 'utf8');
    assert.match(md, /\| BPF vxlan \| [\d.]+ \(/);
    assert.match(md, /\*\*Targets\*\*/);
    const svg = readFileSync(join(out, 'results.svg'), 'utf8');
    assert.match(svg, /^<svg /);
    for (const title of ['Pod-to-pod TCP throughput', 'BPF programs alone', 'Programming N peers at start', 'Convergence', 'Agent memory']) assert.ok(svg.includes(title), title);
    assert.equal(namespaces(), ns0, 'the benchmark removed its namespaces');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
