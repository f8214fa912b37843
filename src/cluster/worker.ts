/**
 * The worker: a TCP server holding one node's slice of the model per client connection, and the
 * things its sessions share: the slice cache on disk, slices parked for the next client, the
 * counters, the measured GMAC, the mesh sessions peers attach to. Each connection is a
 * WorkerSession (worker-session.ts), the state machine that speaks the protocol: HELLO, SETUP (the
 * worker answers which slices it lacks, after looking in its disk cache and, with --model, cutting
 * them from its own copy of the checkpoint), WEIGHTS for the missing slices, READY, MESH, then one
 * STEP per forward call.
 *
 * Any bad request is answered with an ERROR frame naming the problem, and the worker keeps
 * serving: a wrong version or an unexpected message leaves the connection usable (the frame
 * length is known); garbage (bad magic, over-long frame) ends that connection only. What a
 * connection may cost is bounded (limits.ts): a small frame and a deadline until the handshake is
 * done, a cap on connections, idle sessions closed, replies a peer never reads not buffered,
 * errors and log lines counted and never echoing input, the memory of every slice together.
 */
import * as net from "node:net";
import * as tls from "node:tls";
import * as os from "node:os";
import * as v8 from "node:v8";
import * as vm from "node:vm";
import type { KernelBackend } from "../kernels/kernels.js";
import { q8RowBytes } from "../kernels/q8.js";
import { openWeights } from "../engine/open.js";
import { plannedArena } from "../engine/layout.js";
import type { ModelSlice } from "../engine/slice.js";
import { modelFingerprint, SliceCache } from "./cache.js";
import { Poller } from "./poller.js";
import { Acceptor, linkSecurity, type LinkSecurity } from "./secure.js";
import { limitsWith, LogLimiter, type Limits } from "./limits.js";
import { WorkerSession, type Joined } from "./worker-session.js";

export interface WorkerCounters {
  /** Weight bytes received over the network, since the worker started. */
  weightBytesReceived: number;
  slicesReceived: number;
  slicesFromCache: number;
  slicesFromModel: number;
  sessions: number;
  errorsSent: number;
  requests: number;
  /** Sessions that took over a complete slice left by an earlier session (nothing read or sent). */
  nodesReused: number;
  /** Bytes of cached slices deleted to stay under the cache size limit. */
  cacheBytesEvicted: number;
  /** Connections refused for a wrong secret. */
  authFailures: number;
  /** Encrypted handshakes that failed (a client without the secret, or a tampered stream). */
  tlsFailures: number;
  /** Connections closed by a bound of limits.ts (deadline, idle, unread replies, too many errors or connections). */
  connectionsClosed: number;
  /** SETUPs refused because the slice would not fit the memory budget. */
  setupsTooLarge: number;
}

export interface WorkerOptions {
  port: number;
  host?: string;
  backend: KernelBackend;
  cacheDir: string;
  /** Shared secret every client and peer must prove it knows (auth.ts); null: none. */
  secret?: Buffer | null;
  /** Encrypt every link when there is a secret (secure.ts); default true. */
  encrypt?: boolean;
  /** Size limit of the slice cache (least recently used slices go first); default 64 GB. */
  cacheMaxBytes?: number;
  /** A local copy of the model to cut slices from instead of receiving them. */
  modelDir?: string;
  log?: (line: string) => void;
  /** Skip the GMAC measurement (tests); the value reported instead. */
  gmac?: number;
  /**
   * After each result, keep the event loop polling (instead of sleeping in epoll) for this many
   * ms, so the next request of the token is picked up without a wake-up delay. Default 5; 0 = off.
   */
  spinMs?: number;
  /** Overrides of limits.ts (tests shorten the deadlines). */
  limits?: Partial<Limits>;
}

/** Multiply-accumulates per second of a Q8_0 matrix-vector product (a 16 MB matrix), in billions: the best 50 ms window of `seconds`. */
export function measureGmac(backend: KernelBackend, seconds = 0.3): number {
  const rows = 4096;
  const cols = 4096;
  const rb = q8RowBytes(cols);
  const { arena, k, value: [w, x, out] } = plannedArena(backend, "gmac", "the GMAC measurement", (a) => [a.alloc(rows * rb), a.alloc(rb), a.alloc(rows * 4)] as const);
  const bytes = arena.u8(w, rows * rb);
  let seed = 12345;
  for (let i = 0; i < bytes.length; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    bytes[i] = seed >>> 24;
  }
  const fixScales = (p: number, n: number): void => {
    const v = new DataView(arena.memory.buffer);
    for (let b = 0; b < n; b++) v.setUint16(p + b * 34, 0x2000, true);
  };
  fixScales(w, (rows * cols) / 32);
  fixScales(x, cols / 32);
  // The best of several short windows: a burst of other work on the machine at start-up should
  // not set this node's share for good.
  const start = performance.now();
  let best = 0;
  do {
    let iters = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < 50 || iters < 2) {
      k.matmulQ8(out, w, x, rows, cols, 1);
      iters++;
      t = performance.now();
    }
    best = Math.max(best, (rows * cols * iters) / ((t - t0) / 1000) / 1e9);
  } while (performance.now() - start < seconds * 1000);
  backend.idle();
  backend.release(arena);
  return best;
}

export class WorkerServer {
  readonly counters: WorkerCounters = { weightBytesReceived: 0, slicesReceived: 0, slicesFromCache: 0, slicesFromModel: 0, sessions: 0, errorsSent: 0, requests: 0, nodesReused: 0, cacheBytesEvicted: 0, authFailures: 0, tlsFailures: 0, connectionsClosed: 0, setupsTooLarge: 0 };
  /** Complete slices of finished sessions, by setup key, for the next client with the same plan. */
  private readonly parked = new Map<string, ModelSlice>();
  readonly cache: SliceCache;
  readonly gmac: number;
  private readonly sockets = new Set<net.Socket>();
  private modelFp: string | null = null;
  /** The --model's shape (SETUP must name exactly this one). */
  modelConfig: unknown = null;
  readonly limits: Limits;
  private readonly logLimiter = new LogLimiter();
  /** Connections that have not finished the handshake, by peer address: their deadline. */
  private readonly preauth = new Map<string, NodeJS.Timeout>();
  private readonly sessions = new Set<WorkerSession>();
  /** TCP connections open. */
  private raws = 0;
  /** Bytes buffered for every connection together (frames in progress, queued frames). */
  buffered = 0;
  private server!: net.Server;
  private acceptor: Acceptor | null = null;
  private readonly poller = new Poller();
  /** Sessions in the step program, by mesh session token (peers attach to them). */
  readonly meshes = new Map<string, Joined>();
  port = 0;
  host = "";

  private constructor(readonly opts: WorkerOptions) {
    this.cache = new SliceCache(opts.cacheDir, opts.cacheMaxBytes);
    this.limits = limitsWith(opts.limits, os.totalmem());
    if (opts.modelDir) {
      const { source, configText, config } = openWeights(opts.modelDir);
      this.modelFp = modelFingerprint(configText, source.files);
      this.modelConfig = config;
      source.close();
    }
    this.gmac = opts.gmac ?? measureGmac(opts.backend);
  }

  static async start(opts: WorkerOptions): Promise<WorkerServer> {
    const w = new WorkerServer(opts);
    w.acceptor = new Acceptor(w.security, (s, peer) => w.accept(s, peer), (peer, why, kind) => {
      if (kind === "tls") w.counters.tlsFailures++;
      w.logPeer(`worker: connection from ${peer} refused: ${why}`);
    });
    w.server = net.createServer((s) => w.admit(s));
    await new Promise<void>((resolve, reject) => {
      w.server.once("error", reject);
      w.server.listen(opts.port, opts.host ?? "0.0.0.0", () => {
        w.server.off("error", reject);
        resolve();
      });
    });
    const a = w.server.address() as net.AddressInfo;
    w.port = a.port;
    w.host = a.address;
    return w;
  }

  /** The addresses a client can use (the bound one, or every IPv4 interface for 0.0.0.0). */
  addresses(): string[] {
    if (this.host !== "0.0.0.0" && this.host !== "::") return [`${this.host}:${this.port}`];
    const out: string[] = [];
    for (const list of Object.values(os.networkInterfaces())) {
      for (const i of list ?? []) if (i.family === "IPv4") out.push(`${i.address}:${this.port}`);
    }
    return out;
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.acceptor?.close();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** How this worker's links are secured (secure.ts): its secret, and encryption unless turned off. */
  get security(): LinkSecurity {
    return linkSecurity(this.opts.secret ?? null, this.opts.encrypt);
  }

  /**
   * A new TCP connection: refused at once over the connection caps, else given the handshake
   * deadline (TLS included), then handed to the acceptor (secure.ts).
   */
  private admit(raw: net.Socket): void {
    const peer = `${raw.remoteAddress ?? "?"}:${raw.remotePort ?? "?"}`;
    raw.on("error", () => raw.destroy());
    if (this.raws >= this.limits.maxConnections || this.preauth.size >= this.limits.maxPreauthConnections) {
      this.counters.connectionsClosed++;
      this.logPeer(`worker: connection from ${peer} refused: ${this.raws} connections open, ${this.preauth.size} of them before the handshake (limits.ts)`);
      raw.destroy();
      return;
    }
    raw.setNoDelay(true);
    this.sockets.add(raw);
    this.raws++;
    const deadline = setTimeout(() => {
      this.counters.connectionsClosed++;
      this.logPeer(`worker: connection from ${peer} closed: no handshake within ${this.limits.handshakeDeadlineMs / 1000} s`);
      raw.destroy();
    }, this.limits.handshakeDeadlineMs);
    deadline.unref();
    this.preauth.set(peer, deadline);
    raw.once("close", () => {
      this.raws--;
      this.sockets.delete(raw);
      this.authenticated(peer);
    });
    this.acceptor!.accept(raw);
  }

  /** The connection from `peer` finished its handshake (or closed): its deadline is off. */
  authenticated(peer: string): void {
    const t = this.preauth.get(peer);
    if (t) clearTimeout(t);
    this.preauth.delete(peer);
  }

  private accept(socket: net.Socket, peer: string): void {
    socket.setNoDelay(true);
    this.sockets.add(socket);
    // a plain connection to a worker that encrypts: answered with one error, then closed
    const plainButEncrypted = this.security.encrypt && !(socket instanceof tls.TLSSocket);
    const session = new WorkerSession(this, socket, peer, plainButEncrypted);
    this.sessions.add(session);
    socket.on("data", (d: Buffer) => session.receive(d));
    socket.on("error", () => socket.destroy());
    socket.on("close", () => {
      this.sockets.delete(socket);
      this.sessions.delete(session);
      session.dispose();
    });
  }

  /** A line about a peer's misbehaviour: one line, rate-limited (a flood of bad frames is not a flood of log). */
  logPeer(line: string): void {
    const l = this.logLimiter.admit(line);
    if (l !== null) this.opts.log?.(l);
  }

  /**
   * May a session allocate `bytes` more for a slice? The slices of every other session and the
   * parked ones count; parked ones are let go first when that makes room.
   */
  admitSlice(bytes: number, asking: WorkerSession): boolean {
    const live = (): number => [...this.sessions].reduce((t, s) => t + (s === asking ? 0 : s.sliceBytes), 0);
    const parked = (): number => [...this.parked.values()].reduce((t, n) => t + arenaBytes(n), 0);
    if (live() + parked() + bytes <= this.limits.maxMemoryBytes) return true;
    for (const n of this.parked.values()) this.released(arenaBytes(n), () => n.dispose());
    this.parked.clear();
    return live() + bytes <= this.limits.maxMemoryBytes;
  }

  private lastReclaim = 0;

  /** A full collection now (at most one per 200 ms): a connection holding many MB was closed. */
  reclaim(): void {
    const now = Date.now();
    if (now - this.lastReclaim < 200) return;
    this.lastReclaim = now;
    collectGarbage();
  }

  /** Bytes of arenas let go since the last collection. */
  private unreclaimed = 0;

  /**
   * `dispose` lets go of `bytes` of arenas. A WebAssembly memory goes back to the system only when
   * it is collected, and V8 does not count it as pressure on its heap: a session that builds and
   * drops slices in a loop would grow the process far past the memory budget. So after 64 MB let
   * go, a full collection runs now (a few ms; legitimately only after a re-plan).
   */
  released(bytes: number, dispose: () => void): void {
    dispose();
    this.unreclaimed += bytes;
    if (this.unreclaimed >= 64 * 1024 * 1024) {
      this.unreclaimed = 0;
      collectGarbage();
    }
  }

  /** Poll for the next request for a few ms rather than sleep (see WorkerOptions.spinMs). */
  spin(): void {
    this.poller.keep(this.opts.spinMs ?? 5);
  }

  /**
   * Keep a finished session's slice for the next client with the same setup (a client restart
   * then costs nothing on the worker). Its KV cache is stale but harmless: every position is
   * written before it is read. At most 2 are kept.
   */
  park(key: string, node: ModelSlice): void {
    const old = this.parked.get(key);
    if (old) this.released(arenaBytes(old), () => old.dispose());
    this.parked.delete(key);
    this.parked.set(key, node);
    while (this.parked.size > 2) {
      const oldest = this.parked.keys().next().value!;
      const n = this.parked.get(oldest)!;
      this.released(arenaBytes(n), () => n.dispose()); // its arenas go back to the system
      this.parked.delete(oldest);
    }
  }

  takeParked(key: string): ModelSlice | null {
    const n = this.parked.get(key) ?? null;
    this.parked.delete(key);
    return n;
  }

  /** Open connections (of any state). */
  get connections(): number {
    return this.raws;
  }

  get fingerprint(): string | null {
    return this.modelFp;
  }

  get secret(): Buffer | null {
    return this.opts.secret ?? null;
  }
}

/** Bytes of memory a slice's arenas take. */
export function arenaBytes(n: ModelSlice): number {
  return n.arenas.reduce((t, a) => t + a.size, 0);
}

let gcFn: (() => void) | null | undefined;

/** A full garbage collection (V8's gc, exposed once for this purpose), or nothing where that is not possible. */
function collectGarbage(): void {
  if (gcFn === undefined) {
    try {
      v8.setFlagsFromString("--expose-gc");
      gcFn = vm.runInNewContext("gc") as () => void;
    } catch {
      gcFn = null;
    }
  }
  gcFn?.();
}
