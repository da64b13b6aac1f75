// A systemd stand-in for sd_notify(3): a unix datagram socket whose messages the test reads. Node has
// no AF_UNIX datagrams, so a ten-line C receiver (built with the cc that builds the addon) holds it.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const RECEIVER = `
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
int main(int argc, char **argv) {
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  strncpy(sa.sun_path, argv[1], sizeof(sa.sun_path) - 1);
  int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) { perror("notify socket"); return 1; }
  printf("LISTENING\\n"); fflush(stdout);
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    if (n < 0) return 1;
    buf[n] = 0;
    for (char *p = buf; *p; p++) if (*p == '\\n') *p = ' ';
    printf("%s\\n", buf); fflush(stdout);
  }
}
`;

export class NotifySocket {
  readonly messages: { text: string; at: number }[] = [];
  private readonly listeners: ((text: string) => void)[] = [];

  private constructor(
    readonly path: string,
    private readonly dir: string,
    private readonly proc: ChildProcess,
  ) {}

  static async open(): Promise<NotifySocket> {
    const dir = mkdtempSync(join(tmpdir(), 'flannel-notify-'));
    try {
      execFileSync('cc', ['-x', 'c', '-o', join(dir, 'recv'), '-'], { input: RECEIVER });
      const path = join(dir, 'notify.sock');
      const proc = spawn(join(dir, 'recv'), [path], { stdio: ['ignore', 'pipe', 'inherit'] });
      const s = new NotifySocket(path, dir, proc);
      const lines = createInterface({ input: proc.stdout });
      await new Promise<void>((resolve, reject) => {
        proc.once('exit', (code) => reject(new Error(`notify receiver exited (${code})`)));
        lines.on('line', (l) => {
          if (l === 'LISTENING') return resolve();
          s.messages.push({ text: l, at: Date.now() });
          for (const f of s.listeners) f(l);
        });
      });
      return s;
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  /** Calls fn on each message from now on. */
  onMessage(fn: (text: string) => void): void {
    this.listeners.push(fn);
  }

  close(): void {
    this.proc.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}
