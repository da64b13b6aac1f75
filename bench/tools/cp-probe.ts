// Control-plane probe, run inside a lab node's namespace (it reaches etcd as the agent does and sees
// the node's kernel state): writes synthetic peer leases and times how long the agent takes to turn
// them into kernel entries. Prints one JSON object.
//   fill <etcd> <count>                          N synthetic leases (indexes 0..N-1)
//   converge <etcd> <events> <bpf|classic> <pinRoot>   put one lease, wait for its entry, delete, wait
//   churn <etcd> <events> <bpf|classic> <pinRoot> <agentPid>   a burst of puts then deletes; agent CPU
//   soak <etcd> <seconds> <bpf|classic> <pinRoot> <batch> <periodMs>   puts then deletes of `batch` leases, a
//                      cycle every periodMs for that long (bounded in time and rate); prints the cycles
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { BpfMap } from '../../control/kernel/bpf.ts';
import { listRoutes } from '../../control/kernel/netlink.ts';
import * as L from '../../control/datapath/layout.ts';

const PREFIX = '/coreos.com/network/subnets/';
/** synthetic peers live in 10.1.0.0 and up; the real nodes' subnets are kept in 10.0.x by SubnetMax */
const subnetOf = (i: number) => `10.${1 + (i >> 8)}.${i & 255}.0`;
const hex = (n: number) => n.toString(16).padStart(2, '0');
const leaseValue = (i: number) =>
  JSON.stringify({
    PublicIP: `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    PublicIPv6: null,
    BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: `0a:58:${hex(i >> 16)}:${hex((i >> 8) & 255)}:${hex(i & 255)}:01` },
  });

const [cmd, endpoint, countArg, mode, pinRoot, pidArg, periodArg] = process.argv.slice(2);
const count = Number(countArg);
const etcd = new Etcd3({ hosts: endpoint! });
const ttl = await etcd.lease(3600, { autoKeepAlive: false }).grant();

async function putMany(from: number, to: number): Promise<void> {
  for (let i = from; i < to; i += 100) {
    const ops = [];
    for (let j = i; j < Math.min(to, i + 100); j++)
      ops.push(
        await etcd
          .put(`${PREFIX}${subnetOf(j)}-24`)
          .value(leaseValue(j))
          .lease(ttl)
          .op(),
      );
    await etcd
      .if(PREFIX, 'Create', '>', -1)
      .then(...ops)
      .commit();
  }
}
async function delMany(from: number, to: number): Promise<void> {
  for (let i = from; i < to; i += 100) {
    const ops = [];
    for (let j = i; j < Math.min(to, i + 100); j++)
      ops.push(
        await etcd
          .delete()
          .key(`${PREFIX}${subnetOf(j)}-24`)
          .op(),
      );
    await etcd
      .if(PREFIX, 'Create', '>', -1)
      .then(...ops)
      .commit();
  }
}

/** Whether the node's kernel holds the entry for synthetic peer i (map entry, or the onlink route). */
function programmed(): (i: number) => Promise<boolean> {
  if (mode === 'bpf') {
    const m = BpfMap.openPinned(join(pinRoot!, 'fl_subnets'));
    return (i) => Promise.resolve(m.lookup(L.subnetKey(subnetOf(i), 24)) !== null);
  }
  return async (i) => (await listRoutes()).some((r) => r.dst === subnetOf(i) && r.dstLen === 24);
}

async function waitFor(check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('timed out waiting for the kernel state');
    await new Promise((r) => setTimeout(r, 1));
  }
}

const cpuMs = (pid: string) => {
  // fields 14 and 15 of /proc/<pid>/stat: user and system time in clock ticks (100 per second here)
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
};

try {
  if (cmd === 'fill') {
    await putMany(0, count);
    console.log(JSON.stringify({ leases: count }));
  } else if (cmd === 'converge') {
    const has = programmed();
    const add: number[] = [];
    const del: number[] = [];
    // indexes far above any fill, so the events are new peers
    for (let k = 0; k < count; k++) {
      const i = 60_000 + k;
      let t = performance.now();
      await etcd
        .put(`${PREFIX}${subnetOf(i)}-24`)
        .value(leaseValue(i))
        .lease(ttl);
      await waitFor(() => has(i));
      add.push(performance.now() - t);
      t = performance.now();
      await etcd.delete().key(`${PREFIX}${subnetOf(i)}-24`);
      await waitFor(async () => !(await has(i)));
      del.push(performance.now() - t);
    }
    console.log(JSON.stringify({ add, del }));
  } else if (cmd === 'churn') {
    const has = programmed();
    const half = Math.floor(count / 2);
    const base = 50_000;
    const cpu0 = cpuMs(pidArg!);
    const t0 = performance.now();
    await putMany(base, base + half);
    await waitFor(() => has(base + half - 1));
    await delMany(base, base + half);
    await waitFor(async () => !(await has(base + half - 1)) && !(await has(base)));
    const wallMs = performance.now() - t0;
    console.log(JSON.stringify({ events: half * 2, wallMs, cpuMs: cpuMs(pidArg!) - cpu0 }));
  } else if (cmd === 'soak') {
    // the same `batch` leases come and go: a leak shows as growth, a steady agent returns to its level
    const has = programmed();
    const batch = Number(pidArg);
    const base = 40_000;
    const end = performance.now() + count * 1000;
    let cycles = 0;
    // a cycle per period at most: etcd keeps every revision (the lab compacts nothing), so the rate
    // bounds its database too
    const period = Number(periodArg ?? 0);
    while (performance.now() < end) {
      const next = performance.now() + period;
      await putMany(base, base + batch);
      await waitFor(() => has(base + batch - 1));
      await delMany(base, base + batch);
      await waitFor(async () => !(await has(base + batch - 1)) && !(await has(base)));
      cycles++;
      const wait = next - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    console.log(JSON.stringify({ cycles, events: cycles * batch * 2 }));
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
} finally {
  etcd.close();
}
