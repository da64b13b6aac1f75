// The agent's memory after a burst. V8 grows its heap to a burst's working set (the lease listing, the
// first programming of every peer) and keeps those pages long after: at 10,000 peers a heap snapshot
// found 29 MB live while the process held 190 MB. glibc does the same with the Buffers a reconcile's
// tables and map dumps take outside V8's heap.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { addon } from '../kernel/addon.js';

/**
 * Node's flags for the agent's process (the lab and the Vagrant unit start it with them). V8's young
 * generation defaults to 16 MiB semi-spaces, sized for throughput; a daemon whose bursts are a
 * listing and a reconcile keeps them mostly empty: at 10,000 peers 1 MiB took the resident set from
 * 145-150 MB to 123-126 MB with the same programming time. V8 reads it when the heap is created only,
 * so it must be on the command line (setFlagsFromString later changes nothing; measured).
 */
export const AGENT_NODE_FLAGS = ['--max-semi-space-size=1'];

let collect: (() => void) | undefined;

/**
 * A full garbage collection now (V8's own gc(), made reachable without --expose-gc), after a burst:
 * it gives the burst's pages back, and costs a few milliseconds on a heap of that size, once per burst
 * (start-up, a periodic reconcile), never per packet or per lease event.
 */
export function releaseMemory(): void {
  if (!collect) {
    setFlagsFromString('--expose-gc');
    collect = runInNewContext('gc') as () => void;
  }
  collect();
  // what the collection freed outside V8's heap (the tables and dumps of a reconcile) goes back too:
  // glibc keeps freed arena pages resident; at 10,000 peers this took the agent's resident set once
  // ready from 97-101 MB to 85-93 (bench/control-plane.ts startup)
  addon().mallocTrim();
}
