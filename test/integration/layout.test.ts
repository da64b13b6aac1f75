// The C structs and enums of bpf/flannel.h against control/datapath/layout.ts, read from BTF (the model is
// Cilium's pkg/datapath/alignchecker): every struct the agent encodes or decodes, field by field
// (offset and size), and the reason lists it names counters by. Neither side can change alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as L from '../../control/datapath/layout.ts';
import { MAP, OBJECTS, PROGRAM } from '../../control/datapath/objects.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const OBJ = join(ROOT, 'dist', 'bpf');

interface BtfType {
  id: number;
  kind: string;
  name?: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: { name: string; type_id: number; bits_offset: number; bitfield_size?: number }[];
  values?: { name: string; val: number }[];
  linkage?: string;
  vars?: { type_id: number }[];
}

function btf(file: string): Map<number, BtfType> {
  const { types } = JSON.parse(execFileSync('bpftool', ['btf', 'dump', 'file', file, 'format', 'raw', '-j'], { encoding: 'utf8' })) as { types: BtfType[] };
  return new Map(types.map((t) => [t.id, t]));
}

/** bytes of a BTF type, through typedefs, qualifiers and arrays */
function sizeOf(types: Map<number, BtfType>, id: number): number {
  const t = types.get(id)!;
  switch (t.kind) {
    case 'TYPEDEF':
    case 'CONST':
    case 'VOLATILE':
    case 'RESTRICT':
      return sizeOf(types, t.type_id!);
    case 'ARRAY':
      return sizeOf(types, t.type_id!) * t.nr_elems!;
    default:
      return t.size!;
  }
}

/** name -> { size, fields: name -> [offset, size] } of every fl_* struct in the objects' BTF */
function structsOf(file: string): Map<string, { size: number; fields: Record<string, [number, number]> }> {
  const types = btf(file);
  const out = new Map<string, { size: number; fields: Record<string, [number, number]> }>();
  for (const t of types.values()) {
    if (t.kind !== 'STRUCT' || !t.name?.startsWith('fl_')) continue;
    const fields: Record<string, [number, number]> = {};
    for (const m of t.members!) {
      assert.ok(!m.bitfield_size, `${t.name}.${m.name}: a bit field has no byte layout to mirror`);
      assert.equal(m.bits_offset % 8, 0, `${t.name}.${m.name} starts inside a byte`);
      fields[m.name] = [m.bits_offset / 8, sizeOf(types, m.type_id)];
    }
    out.set(t.name, { size: t.size!, fields });
  }
  return out;
}

test("every struct layout.ts mirrors has the size, fields, offsets and field sizes the built objects' BTF says", () => {
  const objects = readdirSync(OBJ).filter((f) => f.endsWith('.o'));
  assert.ok(objects.length >= 4, `built objects in ${OBJ}: ${objects.join(', ')}`);
  const seen = new Map<string, { size: number; fields: Record<string, [number, number]> }>();
  for (const o of objects) {
    for (const [name, s] of structsOf(join(OBJ, o))) {
      // one header, one layout: every object that carries a struct carries the same one
      if (seen.has(name)) assert.deepEqual(s, seen.get(name), `${name} differs between objects (${o})`);
      seen.set(name, s);
    }
  }
  for (const [name, want] of Object.entries(L.STRUCTS)) {
    const got = seen.get(name);
    assert.ok(got, `struct ${name} is in no built object's BTF (renamed in bpf/flannel.h, or unused by every map?)`);
    assert.deepEqual({ size: got.size, fields: got.fields }, { size: want.size, fields: want.fields }, `struct ${name}: BTF (actual) vs control/datapath/layout.ts STRUCTS (expected)`);
  }
  // and nothing the maps use is left unmirrored: every fl_* struct of a map is in STRUCTS
  const unmirrored = [...seen.keys()].filter((n) => !(n in L.STRUCTS));
  assert.deepEqual(unmirrored, [], 'structs in the objects that layout.ts does not mirror');
});

test('the counter names layout.ts uses are the C enums fl_reason and fl_fast_result, in order', () => {
  // clang emits an enum's BTF only where a type uses it: a two-line file from the same header does
  const tmp = mkdtempSync(join(tmpdir(), 'flannel-test-btf-'));
  try {
    const src = join(tmp, 'enums.c');
    writeFileSync(src, '#include "flannel.h"\nenum fl_reason fl_reason_anchor;\nenum fl_fast_result fl_fast_result_anchor;\n');
    const arch = execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim();
    execFileSync('clang', ['-g', '-O2', '-target', 'bpf', '-I', join(ROOT, 'bpf'), '-I', `/usr/include/${arch}-linux-gnu`, '-c', src, '-o', join(tmp, 'enums.o')]);
    const types = [...btf(join(tmp, 'enums.o')).values()];
    const names = (enumName: string, max: string) => {
      const e = types.find((t) => t.kind === 'ENUM' && t.name === enumName);
      assert.ok(e, `enum ${enumName} not found`);
      const vals = e.values!.filter((v) => v.name !== max);
      vals.forEach((v, i) => assert.equal(v.val, i, `${v.name} = ${v.val}: the counters are an array indexed by it`));
      assert.equal(e.values!.find((v) => v.name === max)?.val, vals.length, `${max} closes the list`);
      return vals.map((v) => v.name.replace(/^FL_/, '').toLowerCase());
    };
    assert.deepEqual(names('fl_reason', 'FL_REASON_MAX'), [...L.REASONS]);
    assert.deepEqual(names('fl_fast_result', 'FL_FAST_MAX'), [...L.FAST_RESULTS]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('bpf/Makefile builds exactly the objects control/datapath/objects.ts names', () => {
  const make = execFileSync('cat', [join(ROOT, 'bpf', 'Makefile')], { encoding: 'utf8' });
  const progs = /^PROGS\s*:=\s*(.+)$/m.exec(make)?.[1]?.trim().split(/\s+/) ?? [];
  assert.deepEqual(progs.map((p) => `${p}.o`).sort(), Object.values(OBJECTS).sort());
});

test('every map and program in the built objects is named in objects.ts (MAP, PROGRAM), and nothing else is', () => {
  const maps = new Set<string>();
  const programs = new Set<string>();
  for (const o of Object.values(OBJECTS)) {
    const types = btf(join(OBJ, o));
    for (const t of types.values()) {
      // a program is a global function (its SEC); a map is a variable of the .maps section
      if (t.kind === 'FUNC' && t.linkage === 'global') programs.add(t.name!);
      if (t.kind === 'DATASEC' && t.name === '.maps') for (const v of t.vars!) maps.add(types.get(v.type_id)!.name!);
    }
  }
  assert.deepEqual([...maps].sort(), Object.values(MAP).sort());
  assert.deepEqual([...programs].sort(), Object.values(PROGRAM).sort());
  // the kernel keeps 15 characters of a program's name, and the agent finds its guards on the underlay
  // by the name the kernel reports: theirs must fit
  for (const p of [PROGRAM.guardTc, PROGRAM.guardXdp, PROGRAM.guardBypass]) assert.ok(p.length <= 15, `${p} is longer than the kernel keeps`);
});
