// How big the peer maps are: the network's capacity (peerCapacity: 256 for flannel's default /16 of
// /24s), not FL_MAX_PEERS. A preallocated hash map reserves every entry up front: at 65,536 entries
// fl_vteps, fl_members and the per-CPU counters took megabytes of kernel memory per node for a
// network that can hold 255 peers.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../log.js';
import { BpfMap } from '../../kernel/bpf.js';
import { PEER_MAPS } from '../../datapath/objects.js';

export interface PeerMapSizes {
  /** max_entries by map name, for BpfObject.open */
  sizes: Record<string, number>;
  /** writes what the replaced pins held into the new maps; call before any program of this run is attached */
  restore(map: (name: string) => BpfMap): void;
}

/**
 * A map pinned by an earlier run is reused as it is when it holds at least `capacity` entries (an
 * upgrade from a version that declared 65,536 keeps its maps; the running data plane never changes
 * maps). One too small for the network (the network config grew) is read, unpinned and replaced by
 * one of `capacity`, and restore() writes its entries into the new one: the programs of the previous
 * run keep the old map until this run's replace them, so no packet meets an empty map.
 */
export function sizePeerMaps(pinRoot: string, capacity: number, log: Logger): PeerMapSizes {
  const sizes: Record<string, number> = {};
  const saved = new Map<string, [Buffer, Buffer][]>();
  for (const name of PEER_MAPS) {
    const pin = join(pinRoot, name);
    if (!existsSync(pin)) {
      sizes[name] = capacity;
      continue;
    }
    const old = BpfMap.openPinned(pin);
    const had = old.desc.maxEntries;
    try {
      if (had >= capacity) {
        sizes[name] = had;
        continue;
      }
      saved.set(name, old.entries());
      sizes[name] = capacity;
    } finally {
      old.close();
    }
    rmSync(pin);
    log.info({ map: name, maxEntries: had, entries: saved.get(name)!.length, newMaxEntries: capacity }, 'the network holds more peers than a pinned map: replacing it by a bigger one, entries kept');
  }
  return {
    sizes,
    restore(map) {
      for (const [name, entries] of saved) {
        const errs = map(name)
          .updateMany(entries)
          .filter((e) => e !== 0);
        if (errs.length) throw new Error(`could not copy ${errs.length} entries of the replaced pin ${name} (errno ${errs[0]})`);
      }
      saved.clear();
    },
  };
}
