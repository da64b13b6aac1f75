// systemd's readiness protocol (sd_notify(3)): flannel sends READY=1 once the subnet file is written
// and the backend runs, so a Type=notify unit (and units ordered After= it) start only then.
import { addon } from '../kernel/addon.js';

/** Sends `state` to $NOTIFY_SOCKET; false when not started by systemd (no socket). Throws on failure. */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const socket = env.NOTIFY_SOCKET;
  if (!socket) return false;
  addon().sdNotify(socket, state);
  return true;
}
