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
 * length is known); garbage (bad magic, over-long frame) ends that connection only.
 */
import * as net from "node:net";
import * as tls from "node:tls";
import * as os from "node:os";
import type { KernelBackend } from "../kernels/kernels.js";
import { q8RowBytes } from "../kernels/q8.js";
import { openWeights } from "../engine/open.js";
import { plannedArena } from "../engine/layout.js";
import type { ModelSlice } from "../engine/slice.js";
import { modelFingerprint, SliceCache } from "./cache.js";
import { Poller } from "./poller.js";
import { Acceptor, linkSecurity, type LinkSecurity } from "./secure.js";
import { FrameReader, type FrameError, type Frame } from "./protocol.js";
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
  readonly counters: WorkerCounters = { weightBytesReceived: 0, slicesReceived: 0, slicesFromCache: 0, slicesFromModel: 0, sessions: 0, errorsSent: 0, requests: 0, nodesReused: 0, cacheBytesEvicted: 0, authFailures: 0, tlsFailures: 0 };
  /** Complete slices of finished sessions, by setup key, for the next client with the same plan. */
  private readonly parked = new Map<string, ModelSlice>();
  readonly cache: SliceCache;
  readonly gmac: number;
  private readonly sockets = new Set<net.Socket>();
  private modelFp: string | null = null;
  private server!: net.Server;
  private acceptor: Acceptor | null = null;
  private readonly poller = new Poller();
  /** Sessions in the step program, by mesh session token (peers attach to them). */
  readonly meshes = new Map<string, Joined>();
  port = 0;
  host = "";

  private constructor(readonly opts: WorkerOptions) {
    this.cache = new SliceCache(opts.cacheDir, opts.cacheMaxBytes);
    if (opts.modelDir) {
      const { source, configText } = openWeights(opts.modelDir);
      this.modelFp = modelFingerprint(configText, source.files);
      source.close();
    }
    this.gmac = opts.gmac ?? measureGmac(opts.backend);
  }

  static async start(opts: WorkerOptions): Promise<WorkerServer> {
    const w = new WorkerServer(opts);
    w.acceptor = new Acceptor(w.security, (s, peer) => w.accept(s, peer), (peer, why, kind) => {
      if (kind === "tls") w.counters.tlsFailures++;
      opts.log?.(`worker: connection from ${peer} refused: ${why}`);
    });
    w.server = net.createServer((s) => {
      s.setNoDelay(true);
      w.sockets.add(s);
      s.once("close", () => w.sockets.delete(s));
      w.acceptor!.accept(s);
    });
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

  private accept(socket: net.Socket, peer: string): void {
    socket.setNoDelay(true);
    this.sockets.add(socket);
    // a plain connection to a worker that encrypts: answered with one error, then closed
    const plainButEncrypted = this.security.encrypt && !(socket instanceof tls.TLSSocket);
    const session = new WorkerSession(this, socket, peer, plainButEncrypted);
    const reader = new FrameReader();
    socket.on("data", (d: Buffer) => {
      let frames: Frame[];
      try {
        frames = reader.push(d);
      } catch (e) {
        const fe = e as FrameError;
        session.sendError(0, fe.message, fe.code);
        socket.end();
        socket.removeAllListeners("data");
        return;
      }
      for (const f of frames) session.enqueue(f);
    });
    socket.on("error", () => socket.destroy());
    socket.on("close", () => {
      this.sockets.delete(socket);
      session.dispose();
    });
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
    this.parked.get(key)?.dispose();
    this.parked.delete(key);
    this.parked.set(key, node);
    while (this.parked.size > 2) {
      const oldest = this.parked.keys().next().value!;
      this.parked.get(oldest)!.dispose(); // its arenas go back to the system
      this.parked.delete(oldest);
    }
  }

  takeParked(key: string): ModelSlice | null {
    const n = this.parked.get(key) ?? null;
    this.parked.delete(key);
    return n;
  }

  get fingerprint(): string | null {
    return this.modelFp;
  }

  get secret(): Buffer | null {
    return this.opts.secret ?? null;
  }
}
