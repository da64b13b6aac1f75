// A bpffs of a test's own: mounted in a fresh directory, unmounted and removed afterwards, also when
// the test fails.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { ensureBpffs } from '../../control/kernel/bpf.ts';

export async function withBpffs(fn: (root: string) => Promise<void>, prefix = '/run/flannel-test-bpffs-'): Promise<void> {
  const root = mkdtempSync(prefix);
  try {
    ensureBpffs(root);
    await fn(root);
  } finally {
    try {
      execFileSync('umount', [root]);
    } finally {
      rmdirSync(root);
    }
  }
}
