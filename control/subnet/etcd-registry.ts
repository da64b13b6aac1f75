// The etcd v3 side of the subnet manager: flannel's key layout under --etcd-prefix, nothing else.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { connect as tlsConnect, rootCertificates } from 'node:tls';
import { Etcd3, type IOptions, type Watcher } from 'etcd3';
import { leaseKeyName, type LeaseSubnets } from './lease-key.js';

export interface EtcdOptions {
  endpoints: string[];
  prefix: string;
  keyFile?: string;
  certFile?: string;
  caFile?: string;
  username?: string;
  password?: string;
}

export interface RawLease {
  key: string;
  value: string;
  /** etcd lease ID, "0" when the key has no TTL (a reservation) */
  lease: string;
  modRevision: string;
  /** the revision that created the key (from a listing): who was first, when two leases claim one subnet */
  createRevision?: string;
}

export type RawEvent = { type: 'put'; key: string; value: string; lease: string } | { type: 'delete'; key: string };

export interface WatchHandlers {
  onEvents(events: RawEvent[], revision: string): void;
  /** the watch ended for good (canceled, compacted): the caller re-lists and watches again */
  onError(err: Error): void;
  onDisconnect?(err: Error): void;
}

/** What the lease watch needs of etcd: the EtcdRegistry below, or a fake in unit tests. */
export interface LeaseStore {
  readonly subnetsPrefix: string;
  readonly configKey: string;
  leaseKey(s: LeaseSubnets): string;
  listLeases(): Promise<{ leases: RawLease[]; revision: string }>;
  /** resolves once etcd confirmed the watch */
  watchLeases(fromRevision: string, h: WatchHandlers): Promise<{ cancel(): Promise<void> }>;
  revision(): Promise<bigint>;
  /** a new client (a new watch stream) for the next listing and watch */
  reconnect(): void;
}

/** etcd refuses us for a reason retrying will not fix: certificates or credentials. */
export class EtcdAccessError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EtcdAccessError';
  }
}

interface Tls {
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

// Where Go's crypto/x509 finds the system's roots on Linux (flannel trusts these when it is given no
// --etcd-cafile); SSL_CERT_FILE overrides, as in Go. Node's own bundled list is the last resort.
const SYSTEM_ROOTS = [
  '/etc/ssl/certs/ca-certificates.crt',
  '/etc/pki/tls/certs/ca-bundle.crt',
  '/etc/ssl/ca-bundle.pem',
  '/etc/pki/tls/cacert.pem',
  '/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem',
  '/etc/ssl/cert.pem',
];
function systemRoots(): Buffer {
  for (const path of [process.env.SSL_CERT_FILE, ...SYSTEM_ROOTS]) {
    if (!path) continue;
    try {
      return readFileSync(path);
    } catch {
      // the next candidate
    }
  }
  return Buffer.from(rootCertificates.join('\n'));
}

/** TLS when a TLS flag is given or an endpoint is https://; the CA is --etcd-cafile, else the system's roots. */
function readTls(o: EtcdOptions): Tls | undefined {
  if (!o.caFile && !o.certFile && !o.keyFile && !o.endpoints.some((e) => e.trim().startsWith('https:'))) return undefined;
  const read = (flag: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (e) {
      throw new EtcdAccessError(`${flag} ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
  };
  return {
    ca: o.caFile ? read('--etcd-cafile', o.caFile) : systemRoots(),
    ...(o.certFile ? { cert: read('--etcd-certfile', o.certFile) } : {}),
    ...(o.keyFile ? { key: read('--etcd-keyfile', o.keyFile) } : {}),
  };
}

/**
 * gRPC reports every TLS failure as "UNAVAILABLE: No connection established". One plain TLS handshake
 * with the same files says which: an unknown server CA, a client certificate the server rejects, a
 * name mismatch. undefined when the handshake works or the server is simply not there.
 */
function tlsProbe(endpoint: string, tls: Tls | undefined, ms = 3000): Promise<string | undefined> {
  const u = new URL(endpoint);
  return new Promise((resolve) => {
    const s = tlsConnect({
      host: u.hostname,
      port: Number(u.port || 2379),
      ...(isIP(u.hostname) ? {} : { servername: u.hostname }),
      ALPNProtocols: ['h2'],
      ...(tls ?? {}),
    });
    const done = (why?: string) => {
      clearTimeout(t);
      s.destroy();
      resolve(why);
    };
    const t = setTimeout(() => done(), ms);
    s.once('error', (e: NodeJS.ErrnoException) => {
      if (['ECONNREFUSED', 'EHOSTUNREACH', 'ETIMEDOUT', 'ECONNRESET'].includes(e.code ?? '')) return done();
      // OpenSSL's text for an alert from the server names the alert deep inside a long line
      const alert = /alert ([a-z ]+?)(:|$)/i.exec(e.message)?.[1];
      done(alert ? `etcd rejected our client certificate (TLS alert "${alert.replace(/^sslv3 |^tlsv1[0-9]* /, '')}")` : `etcd's server certificate is not trusted: ${e.message.trim()}`);
    });
    // with TLS 1.3 the server judges our certificate after the handshake: give it a moment to object
    s.once('secureConnect', () => setTimeout(() => done(), 300));
  });
}

function clientOptions(o: EtcdOptions): IOptions {
  const opts: IOptions = { hosts: o.endpoints, dialTimeout: 5000 };
  const tls = readTls(o);
  if (tls) {
    opts.credentials = {
      rootCertificate: tls.ca,
      ...(tls.key ? { privateKey: tls.key } : {}),
      ...(tls.cert ? { certChain: tls.cert } : {}),
    };
  }
  if (o.username) opts.auth = { username: o.username, password: o.password ?? '' };
  return opts;
}

export class EtcdRegistry implements LeaseStore {
  /** replaced by reconnect() */
  client: Etcd3;
  readonly prefix: string;

  constructor(private readonly opts: EtcdOptions) {
    this.prefix = opts.prefix.replace(/\/+$/, '');
    this.client = new Etcd3(clientOptions(opts));
  }

  /**
   * An etcd error that retrying will not fix, explained (wrong password, a certificate etcd or we
   * reject), or undefined for anything that may heal (etcd down, a leader election).
   */
  async diagnose(err: Error): Promise<EtcdAccessError | undefined> {
    if (/authentication failed|invalid user ID or password|user name (is )?(empty|not found)|permission denied/i.test(err.message))
      return new EtcdAccessError(`etcd refused our credentials (--etcd-username/--etcd-password): ${err.message}`);
    for (const e of this.opts.endpoints.filter((x) => x.startsWith('https:'))) {
      const why = await tlsProbe(e, readTls(this.opts));
      if (why) return new EtcdAccessError(`TLS with etcd at ${e} fails: ${why} (check --etcd-cafile, --etcd-certfile, --etcd-keyfile)`);
    }
    return undefined;
  }

  get configKey(): string {
    return `${this.prefix}/config`;
  }
  get subnetsPrefix(): string {
    return `${this.prefix}/subnets/`;
  }
  leaseKey(s: LeaseSubnets): string {
    return this.subnetsPrefix + leaseKeyName(s);
  }

  /** The config text, or undefined when the operator has not written it yet. */
  async getConfig(): Promise<string | undefined> {
    return (await this.client.get(this.configKey).string()) ?? undefined;
  }

  /** The store's current revision; it only ever grows, unless etcd lost its data or was restored from a backup. */
  async revision(): Promise<bigint> {
    const res = await this.client.get(this.configKey).exec();
    return BigInt(res.header.revision);
  }

  /** Writes the config only where there is none (after etcd lost its data); false when one is there. */
  async restoreConfig(text: string): Promise<boolean> {
    const res = await this.client.if(this.configKey, 'Create', '==', 0).then(this.client.put(this.configKey).value(text)).commit();
    return res.succeeded;
  }

  async listLeases(): Promise<{ leases: RawLease[]; revision: string }> {
    const res = await this.client.getAll().prefix(this.subnetsPrefix).exec();
    return {
      revision: res.header.revision,
      leases: res.kvs.map((kv) => ({ key: kv.key.toString(), value: kv.value.toString(), lease: kv.lease, modRevision: kv.mod_revision, createRevision: kv.create_revision })),
    };
  }

  private async grant(ttlSeconds: number): Promise<string> {
    return (await this.client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 })).ID;
  }

  /**
   * Creates the key only if it does not exist (create revision 0). false: somebody else has it.
   * `revision`: the revision that created it.
   */
  async createLease(s: LeaseSubnets, value: string, ttlSeconds: number): Promise<{ created: boolean; lease: string; revision?: string }> {
    const key = this.leaseKey(s);
    // ttl 0: a reservation (re-created as it was after etcd lost its data)
    const lease = ttlSeconds > 0 ? await this.grant(ttlSeconds) : '0';
    const put = this.client.put(key).value(value);
    const res = await this.client
      .if(key, 'Create', '==', 0)
      .then(lease === '0' ? put : put.lease(lease))
      .commit();
    if (!res.succeeded) {
      await this.revoke(lease);
      return { created: false, lease: '0' };
    }
    return { created: true, lease, revision: res.header.revision };
  }

  /** Deletes the key if it is still as written at `modRevision` (ours, untouched since). */
  async deleteLeaseIf(s: LeaseSubnets, modRevision: string): Promise<boolean> {
    const key = this.leaseKey(s);
    return (await this.client.if(key, 'Mod', '==', modRevision).then(this.client.delete().key(key)).commit()).succeeded;
  }

  /**
   * Rewrites the key with a fresh TTL (0: no TTL, a reservation stays a reservation), but only while
   * it still holds what we expect: `expect.value` and `expect.lease` (our renewal), or the revision we
   * read it at (taking over our previous lease). Anything else on the key belongs to someone else now
   * (after a partition longer than the TTL another node may hold the subnet): undefined, nothing written.
   */
  async updateLease(s: LeaseSubnets, value: string, ttlSeconds: number, expect: { value: string; lease: string } | { modRevision: string }): Promise<string | undefined> {
    const key = this.leaseKey(s);
    const lease = ttlSeconds > 0 ? await this.grant(ttlSeconds) : '0';
    const put = this.client.put(key).value(value);
    const cond = 'modRevision' in expect ? this.client.if(key, 'Mod', '==', expect.modRevision) : this.client.if(key, 'Value', '==', expect.value).and(key, 'Lease', '==', expect.lease);
    const res = await cond.then(lease === '0' ? put : put.lease(lease)).commit();
    if (!res.succeeded) {
      await this.revoke(lease);
      return undefined;
    }
    return lease;
  }

  async deleteLease(s: LeaseSubnets): Promise<void> {
    await this.client.delete().key(this.leaseKey(s));
  }

  async revoke(lease: string): Promise<void> {
    if (lease === '0') return;
    try {
      await this.client.leaseClient.leaseRevoke({ ID: lease });
    } catch {
      // already expired or revoked: nothing to free
    }
  }

  async watchLeases(fromRevision: string, h: WatchHandlers): Promise<Watcher> {
    const w = await this.client.watch().prefix(this.subnetsPrefix).startRevision(fromRevision).create();
    w.on('data', (res) => {
      const events: RawEvent[] = (res.events ?? []).map((e) =>
        e.type === 'Delete' ? { type: 'delete', key: e.kv.key.toString() } : { type: 'put', key: e.kv.key.toString(), value: e.kv.value.toString(), lease: e.kv.lease },
      );
      if (events.length) h.onEvents(events, res.header.revision);
    });
    w.on('error', (err) => h.onError(err));
    w.on('disconnected', (err) => h.onDisconnect?.(err));
    return w;
  }

  /** A new client (a new connection, a new watch stream) in place of this one, which is closed. */
  reconnect(): void {
    const old = this.client;
    this.client = new Etcd3(clientOptions(this.opts));
    old.close();
  }

  close(): void {
    this.client.close();
  }
}
