// Where the project's built artifacts are, wherever this code runs from (control/ under tsx,
// dist/control/ after tsc, /vagrant in a VM): the nearest directory above holding binding.gyp.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'binding.gyp'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the project root (binding.gyp) above ${fileURLToPath(import.meta.url)}: run scripts/setup.sh in a checkout`);
    dir = up;
  }
  return dir;
}
