// JSON logs (pino) for operators and log shippers; pretty-printed only when a person watches a TTY.
import { pino, type Logger } from 'pino';

export type { Logger };

/** flannel's -v is glog verbosity: 0 info, 1-2 debug, 3+ trace. */
export function createLogger(verbosity = 0, pretty = process.stderr.isTTY === true): Logger {
  const level = verbosity >= 3 ? 'trace' : verbosity >= 1 ? 'debug' : 'info';
  if (pretty) {
    return pino({ level, base: { pid: process.pid } }, pino.transport({ target: 'pino-pretty', options: { destination: 2 } }));
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: 2, sync: true }));
}

export const silentLogger: Logger = pino({ level: 'silent' });
