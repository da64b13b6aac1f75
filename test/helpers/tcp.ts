// A TCP server that answers each connection with the address it saw the client come from, and its
// client: what a test needs to tell whether traffic was masqueraded on the way.
import { spawn, type ChildProcess } from 'node:child_process';
import { sh } from './netns.ts';

const servers = new Set<ChildProcess>();
process.once('exit', () => {
  for (const s of servers) s.kill('SIGKILL');
});

export async function startWhoAmI(ns: string, port: number): Promise<{ stop: () => void }> {
  const code = `require('net').createServer((s) => { s.on('error', () => {}); s.end(s.remoteAddress + '\\n'); }).listen(${port}, '0.0.0.0', () => console.log('listening'));`;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  servers.add(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (c) => reject(new Error(`who-am-I server in ${ns} exited (${c})`)));
  });
  return {
    stop: () => {
      child.kill('SIGKILL');
      servers.delete(child);
    },
  };
}

/** Connects from ns to host:port and returns the source address the server saw. */
export async function whoAmI(ns: string, host: string, port: number): Promise<string> {
  const code = `const s = require('net').connect(${port}, '${host}'); let d = ''; s.setTimeout(3000, () => { console.error('timeout'); process.exit(2); }); s.on('data', (x) => (d += x)); s.on('end', () => console.log(d.trim())); s.on('error', (e) => { console.error(e.message); process.exit(2); });`;
  return (await sh('ip', ['netns', 'exec', ns, process.execPath, '-e', code])).trim();
}
