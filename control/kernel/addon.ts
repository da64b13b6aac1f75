// Loads the native addon (build/Release/flannel_native.node) from the project root, wherever this
// file runs from (control/ under tsx, dist/control/ after tsc).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'binding.gyp'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the project root (binding.gyp) above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

export interface NativeError extends Error {
  errno: number;
  code: string;
  syscall: string;
  detail?: string;
}

export interface NativeAddon {
  netlinkExec(ops: object[]): Promise<(NativeError | null)[]>;
  netlinkLinks(): Promise<unknown[]>;
  netlinkAddrs(family: number): Promise<unknown[]>;
  netlinkRoutes(family: number): Promise<unknown[]>;
  netlinkNeighs(family: number): Promise<unknown[]>;
  constants: Record<'AF_UNSPEC' | 'AF_INET' | 'AF_INET6' | 'AF_BRIDGE' | 'NUD_PERMANENT' | 'NTF_SELF', number>;
}

let cached: NativeAddon | undefined;

export function addon(): NativeAddon {
  if (!cached) {
    const load = require('node-gyp-build') as (dir: string) => NativeAddon;
    cached = load(projectRoot());
  }
  return cached;
}
