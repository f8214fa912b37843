/**
 * The worker: a TCP server holding one node's slice of the model per client connection.
 *
 * A session: HELLO (protocol version in the frame header, model fingerprint in the body) ->
 * SETUP (the node's plan; the worker answers which slices it lacks, after looking in its disk
 * cache and, with --model, cutting them from its own copy of the checkpoint) -> WEIGHTS chunks
 * for the missing slices -> READY -> ATTN / FFN / LOGITS requests, one RESULT each.
 *
 * Any bad request is answered with an ERROR frame naming the problem, and the worker keeps
 * serving: a wrong version or an unexpected message leaves the connection usable (the frame
 * length is known); garbage (bad magic, over-long frame) ends that connection only.
 */
import * as net from "node:net";
import * as os from "node:os";
import { Arena } from "../kernels/arena.js";
import type { KernelBackend } from "../kernels/kernels.js";
import { q8RowBytes } from "../kernels/q8.js";
import type { LlamaConfig } from "../model/config.js";
import { LlameshError } from "../core/errors.js";
import { openWeights } from "../engine/open.js";
import { backendScratchBytes } from "../engine/weights.js";
import { modelFingerprint, SliceCache, withKeys, type CacheWriter } from "./cache.js";
import { authProof, isNonce, newNonce, openSession, proofMatches } from "./auth.js";
import { MeshMember, Poller, type MemberInfo } from "./mesh.js";
import {
  decodeActRequest, decodeMesh, decodeStep, decodeWeightChunk, encodeDone, encodeFrame, encodeJson, encodeResult,
  Connection, FrameError, FrameReader, jsonOf, MSG, MSG_NAMES, parseJson, PROTOCOL_VERSION, ProtocolError, type Frame,
} from "./protocol.js";
import { extractSlices, ModelSlice, sliceDescs, type NodeSlice, type SliceDesc } from "../engine/slice.js";

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
}

export interface WorkerOptions {
  port: number;
  host?: string;
  backend: KernelBackend;
  cacheDir: string;
  /** Shared secret every client and peer must prove it knows (auth.ts); null: none. */
  secret?: Buffer | null;
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
  const arena = new Arena(rows * rb + 2 * rb + rows * 4 + backendScratchBytes(backend.threads) + 4096, "gmac");
  const w = arena.alloc(rows * rb);
  const x = arena.alloc(rb);
  const out = arena.alloc(rows * 4);
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
  const k = backend.bind(arena);
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

function intIn(v: unknown, what: string, min = 0): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) throw new ProtocolError(`${what}: expected an integer >= ${min}, got ${JSON.stringify(v)}`, "bad-setup");
  return v;
}

function configFrom(v: unknown): LlamaConfig {
  if (typeof v !== "object" || v === null) throw new ProtocolError("setup: missing config", "bad-setup");
  const o = v as Record<string, unknown>;
  const c: LlamaConfig = {
    dim: intIn(o["dim"], "config.dim", 1),
    hiddenDim: intIn(o["hiddenDim"], "config.hiddenDim", 1),
    nLayers: intIn(o["nLayers"], "config.nLayers", 1),
    nHeads: intIn(o["nHeads"], "config.nHeads", 1),
    nKvHeads: intIn(o["nKvHeads"], "config.nKvHeads", 1),
    vocabSize: intIn(o["vocabSize"], "config.vocabSize", 1),
    seqLen: intIn(o["seqLen"], "config.seqLen", 1),
    normEps: Number(o["normEps"]),
    ropeTheta: Number(o["ropeTheta"]),
    tiedEmbeddings: o["tiedEmbeddings"] === true,
    headDim: intIn(o["headDim"], "config.headDim", 2),
    bosTokenId: null,
    eosTokenIds: [],
  };
  if (c.nHeads % c.nKvHeads !== 0 || c.headDim * c.nHeads !== c.dim || !(c.ropeTheta > 0)) throw new ProtocolError("setup: inconsistent config", "bad-setup");
  return c;
}

function sliceFrom(v: unknown, c: LlamaConfig): NodeSlice {
  if (typeof v !== "object" || v === null) throw new ProtocolError("setup: missing slice", "bad-setup");
  const o = v as Record<string, unknown>;
  const s: NodeSlice = {
    kv0: intIn(o["kv0"], "slice.kv0"), kv1: intIn(o["kv1"], "slice.kv1"),
    hb0: intIn(o["hb0"], "slice.hb0"), hb1: intIn(o["hb1"], "slice.hb1"),
    v0: intIn(o["v0"], "slice.v0"), v1: intIn(o["v1"], "slice.v1"),
  };
  if (s.kv0 > s.kv1 || s.kv1 > c.nKvHeads || s.hb0 > s.hb1 || s.hb1 * 32 > Math.ceil(c.hiddenDim / 32) * 32 || s.v0 > s.v1 || s.v1 > c.vocabSize) {
    throw new ProtocolError("setup: slice outside the model", "bad-setup");
  }
  return s;
}

export class WorkerServer {
  readonly counters: WorkerCounters = { weightBytesReceived: 0, slicesReceived: 0, slicesFromCache: 0, slicesFromModel: 0, sessions: 0, errorsSent: 0, requests: 0, nodesReused: 0, cacheBytesEvicted: 0, authFailures: 0 };
  /** Complete slices of finished sessions, by setup key, for the next client with the same plan. */
  private readonly parked = new Map<string, ModelSlice>();
  readonly cache: SliceCache;
  readonly gmac: number;
  private readonly sockets = new Set<net.Socket>();
  private modelFp: string | null = null;
  private server!: net.Server;
  private readonly poller = new Poller();
  /** Sessions in mesh mode, by mesh session token (peers attach to them). */
  readonly meshes = new Map<string, Session>();
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
    w.server = net.createServer((s) => w.accept(s));
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
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    socket.setNoDelay(true);
    this.sockets.add(socket);
    const session = new Session(this, socket);
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

/** Peers of a mesh must connect within this long once LINK has been sent to every member. */
const LINK_TIMEOUT_MS = 10_000;

function memberFrom(v: unknown): MemberInfo {
  if (typeof v !== "object" || v === null) throw new ProtocolError("mesh: bad member", "bad-mesh");
  const o = v as Record<string, unknown>;
  const m: MemberInfo = {
    rank: intIn(o["rank"], "member.rank"),
    label: typeof o["label"] === "string" ? o["label"] : "?",
    attn: o["attn"] === true,
    ffn: o["ffn"] === true,
    logits: o["logits"] === true,
  };
  if (o["host"] !== undefined) {
    if (typeof o["host"] !== "string") throw new ProtocolError("mesh: member host must be a string", "bad-mesh");
    m.host = o["host"];
    m.port = intIn(o["port"], "member.port", 1);
  }
  return m;
}

class Session {
  private chain: Promise<void> = Promise.resolve();
  private member: MeshMember | null = null;
  private meshToken = "";
  /** Rank of the client in the mesh, when it computes a share itself. */
  private clientRank = -1;
  /** This connection is a peer link: its PARTIAL frames go to that session's member. */
  private peerOf: { member: MeshMember; rank: number } | null = null;
  private readonly peerConns: Connection[] = [];
  /** With a secret: whether this connection proved it knows it, and the open challenge. */
  private authed = false;
  private challenge: { cn: string; wn: string; frame: Frame } | null = null;
  private linkWaiter: (() => void) | null = null;
  private hello = false;
  private fingerprint = "";
  private node: ModelSlice | null = null;
  private nodeKey = "";
  private nodeReady = false;
  private writers = new Map<string, { w: CacheWriter; desc: SliceDesc }>();

  constructor(private readonly server: WorkerServer, private readonly socket: net.Socket) {}

  enqueue(f: Frame): void {
    if (this.server.secret && !this.authed && f.type !== MSG.HELLO && f.type !== MSG.PEER && f.type !== MSG.AUTH) {
      this.sendError(f.id, `${MSG_NAMES[f.type] ?? `message ${f.type}`}: not authenticated: open the session with HELLO (or PEER) and AUTH first`, "auth");
      return;
    }
    if (f.type === MSG.PARTIAL) {
      // never queued behind a STEP: the step is waiting for exactly these
      this.onPartial(f);
      return;
    }
    if (f.type === MSG.PING) {
      this.reply(MSG.PONG, f.id, "{}");
      return;
    }
    if (f.type === MSG.ABORT) {
      // nor this: the STEP may be waiting for a peer that hangs
      this.member?.fail(new LlameshError("mesh: step aborted by the client (a peer is lost)"));
      return;
    }
    this.chain = this.chain.then(() => this.handle(f)).catch((e: unknown) => {
      const pe = e instanceof ProtocolError ? e : null;
      const msg = e instanceof Error ? e.message : String(e);
      this.sendError(f.id, `${MSG_NAMES[f.type] ?? `message ${f.type}`}: ${msg}`, pe?.code ?? "failed");
    });
  }

  sendError(id: number, message: string, code: string): void {
    this.server.counters.errorsSent++;
    this.server.opts.log?.(`worker: error sent to ${this.socket.remoteAddress}:${this.socket.remotePort}: ${message}`);
    if (!this.socket.destroyed) this.socket.write(encodeJson(MSG.ERROR, id, { message, code }));
  }

  /** Give up the current slice (kept for reuse when it was complete). */
  private dropNode(): void {
    if (this.node && this.nodeReady) this.server.park(this.nodeKey, this.node);
    else this.node?.dispose(); // never completed: nobody can reuse it
    this.node = null;
    this.nodeReady = false;
  }

  private onPartial(f: Frame): void {
    try {
      if (this.peerOf) {
        this.peerOf.member.deliver(this.peerOf.rank, f);
      } else if (this.member && this.clientRank >= 0) {
        this.member.deliver(this.clientRank, f);
      } else {
        throw new ProtocolError("partial sum outside a mesh", "order");
      }
    } catch (e) {
      this.sendError(f.id, `PARTIAL: ${(e as Error).message}`, e instanceof ProtocolError ? e.code : "failed");
    }
  }

  /** A peer connected to this session's member (called on the peer's session). */
  private linkAdded(): void {
    this.linkWaiter?.();
  }

  private endMesh(why: string): void {
    this.member?.dispose(why);
    this.member = null;
    if (this.meshToken && this.server.meshes.get(this.meshToken) === this) this.server.meshes.delete(this.meshToken);
    this.meshToken = "";
    this.clientRank = -1;
    for (const c of this.peerConns.splice(0)) c.close();
  }

  /** Connect to a lower-ranked worker of the mesh; its partial sums come back on this connection. */
  private async connectPeer(m: MemberInfo, me: number, member: MeshMember): Promise<void> {
    const label = `${m.host}:${m.port}`;
    const hint = "list every worker by an address the other workers can reach";
    let conn: Connection;
    try {
      conn = await Connection.connect(m.host!, m.port!, LINK_TIMEOUT_MS);
    } catch (e) {
      throw new ProtocolError(`mesh: cannot reach peer ${label} (${(e as Error).message}); ${hint}`, "peer");
    }
    this.peerConns.push(conn);
    conn.onUnsolicited = (f) => member.deliver(m.rank, f);
    conn.onClosed = () => member.fail(new LlameshError(`mesh: link to peer ${label} closed`));
    try {
      jsonOf(await openSession(conn, MSG.PEER, { session: this.meshToken, rank: me }, this.server.secret), MSG.PEER_OK, `peer ${label}`);
    } catch (e) {
      conn.close();
      const msg = (e as Error).message;
      throw new ProtocolError(`mesh: peer ${label} refused the link: ${msg}${/closed|ECONN/.test(msg) ? `; ${hint}` : ""}`, "peer");
    }
    member.links.set(m.rank, { send: (fr) => conn.write(fr) });
  }

  dispose(): void {
    if (this.peerOf) {
      // the member of that mesh only: the session may have a newer one since
      const { member, rank } = this.peerOf;
      member.fail(new LlameshError(`mesh: link to peer ${member.members.find((m) => m.rank === rank)?.label ?? `rank ${rank}`} closed`));
      this.peerOf = null;
      return;
    }
    this.endMesh("mesh: the client disconnected");
    for (const { w } of this.writers.values()) w.abort();
    this.writers.clear();
    this.dropNode();
    this.server.opts.backend.idle();
  }

  private reply(type: number, id: number, body: Uint8Array | string): void {
    if (!this.socket.destroyed) this.socket.write(encodeFrame(type, id, body));
  }

  private async handle(f: Frame): Promise<void> {
    const c = this.server.counters;
    if (f.version !== PROTOCOL_VERSION) {
      throw new ProtocolError(`protocol version ${f.version} is not supported (this worker speaks version ${PROTOCOL_VERSION}; update llamesh on one side)`, "version");
    }
    if (f.type !== MSG.HELLO && f.type !== MSG.PEER && f.type !== MSG.AUTH && !this.hello) throw new ProtocolError("no handshake yet: send HELLO first", "no-hello");
    const secret = this.server.secret;
    if (secret && !this.authed && (f.type === MSG.HELLO || f.type === MSG.PEER)) {
      // challenge first; the HELLO or PEER is carried out once AUTH proves the secret
      const cn = parseJson(f.body, MSG_NAMES[f.type]!.toLowerCase())["nonce"];
      if (!isNonce(cn)) throw new ProtocolError("this worker requires a shared secret: send a nonce and answer its challenge (--secret-file on the client)", "auth");
      const wn = newNonce();
      this.challenge = { cn, wn, frame: f };
      this.reply(MSG.AUTH_CHALLENGE, f.id, JSON.stringify({ nonce: wn, proof: authProof(secret, "worker", cn, wn) }));
      return;
    }
    if (f.type === MSG.AUTH) {
      const ch = this.challenge;
      this.challenge = null;
      if (!secret || !ch) throw new ProtocolError("AUTH without a challenge", "order");
      if (!proofMatches(secret, "client", ch.cn, ch.wn, parseJson(f.body, "auth")["proof"])) {
        this.server.counters.authFailures++;
        this.sendError(f.id, "authentication failed: wrong shared secret", "auth");
        this.socket.end(); // this connection only; the worker keeps serving
        return;
      }
      this.authed = true;
      return this.handle({ ...ch.frame, id: f.id }); // answered as the HELLO or PEER it completes
    }
    switch (f.type) {
      case MSG.HELLO: {
        const j = parseJson(f.body, "hello");
        const fp = j["fingerprint"];
        if (typeof fp !== "string" || !/^[0-9a-f]{32}$/.test(fp)) throw new ProtocolError(`model fingerprint ${JSON.stringify(fp)} is malformed (expected 32 hex digits)`, "fingerprint");
        const mine = this.server.fingerprint;
        if (mine !== null && fp !== mine) {
          throw new ProtocolError(`model fingerprint mismatch: the client's model is ${fp}, this worker's --model ${this.server.opts.modelDir} is ${mine}`, "fingerprint");
        }
        this.hello = true;
        this.fingerprint = fp;
        c.sessions++;
        this.reply(MSG.HELLO_OK, f.id, JSON.stringify({
          worker: "llamesh", protocol: PROTOCOL_VERSION, threads: this.server.opts.backend.threads, gmac: this.server.gmac,
          hasModel: mine !== null, counters: c,
        }));
        return;
      }
      case MSG.SETUP: {
        const j = parseJson(f.body, "setup");
        const config = configFrom(j["config"]);
        const slice = sliceFrom(j["slice"], config);
        const seqLen = intIn(j["seqLen"], "seqLen", 1);
        const batch = intIn(j["batch"], "batch", 1);
        if (seqLen > config.seqLen * 64 || batch > 4096) throw new ProtocolError("setup: seqLen or batch out of range", "bad-setup");
        for (const { w } of this.writers.values()) w.abort();
        this.writers.clear();
        this.dropNode();
        const descs = withKeys(sliceDescs(config, slice), this.fingerprint);
        const key = JSON.stringify({ fp: this.fingerprint, config, slice, seqLen, batch });
        const parked = this.server.takeParked(key);
        if (parked) {
          c.nodesReused++;
          this.node = parked;
          this.nodeKey = key;
          this.reply(MSG.SETUP_OK, f.id, JSON.stringify({ missing: [], slices: descs.length, weightBytes: parked.weightBytes, reused: true }));
          return;
        }
        const node = new ModelSlice(config, slice, seqLen, batch, this.server.opts.backend, descs);
        const fromModel: SliceDesc[] = [];
        const missing: string[] = [];
        for (const d of descs) {
          if (this.server.cache.readInto(d.key, node.view(d.id))) c.slicesFromCache++;
          else if (this.server.opts.modelDir) fromModel.push(d);
          else missing.push(d.key);
        }
        if (fromModel.length > 0) {
          const src = openWeights(this.server.opts.modelDir!).source;
          try {
            await extractSlices(src, this.server.opts.backend, [fromModel], (_n, d, off, data) => void node.view(d.id).set(data, off));
          } finally {
            src.close();
          }
          c.slicesFromModel += fromModel.length;
        }
        for (const d of descs) if (missing.includes(d.key)) this.writers.set(d.key, { w: this.server.cache.writer(d.key, d.bytes), desc: d });
        this.node = node;
        this.nodeKey = key;
        this.reply(MSG.SETUP_OK, f.id, JSON.stringify({ missing, slices: descs.length, weightBytes: node.weightBytes }));
        return;
      }
      case MSG.WEIGHTS: {
        const { key, offset, data } = decodeWeightChunk(f.body);
        const e = this.writers.get(key);
        if (!e || !this.node) throw new ProtocolError(`weight chunk for unknown slice ${key}`, "bad-weights");
        if (!(offset >= 0 && offset + data.length <= e.desc.bytes)) throw new ProtocolError(`weight chunk outside slice ${e.desc.id}`, "bad-weights");
        this.node.view(e.desc.id).set(data, offset);
        e.w.write(offset, data);
        c.weightBytesReceived += data.length;
        return;
      }
      case MSG.READY: {
        if (!this.node) throw new ProtocolError("READY before SETUP", "order");
        const short: string[] = [];
        for (const { w, desc } of this.writers.values()) {
          if (w.commit()) c.slicesReceived++;
          else short.push(desc.id);
        }
        this.writers.clear();
        if (short.length > 0) throw new ProtocolError(`slices incomplete: ${short.join(", ")}`, "incomplete");
        const freed = this.server.cache.evict(new Set(this.node.descs.map((d) => d.key)));
        if (freed > 0) {
          c.cacheBytesEvicted += freed;
          this.server.opts.log?.(`worker: cache over ${(this.server.cache.maxBytes / 1e9).toFixed(2)} GB, ${(freed / 1e6).toFixed(1)} MB of least recently used slices deleted`);
        }
        this.nodeReady = true;
        this.reply(MSG.READY_OK, f.id, JSON.stringify({ counters: c }));
        return;
      }
      case MSG.ATTN:
      case MSG.FFN:
      case MSG.LOGITS: {
        if (!this.node) throw new ProtocolError("no model slice yet: SETUP and READY first", "order");
        const r = decodeActRequest(f.body);
        if (r.layer >= this.node.config.nLayers) throw new ProtocolError(`layer ${r.layer} out of range`, "bad-body");
        c.requests++;
        const t0 = performance.now();
        let out: Float32Array;
        try {
          out =
            f.type === MSG.ATTN ? this.node.attention(r.layer, r.pos, r.nTok, r.xq)
            : f.type === MSG.FFN ? this.node.ffn(r.layer, r.nTok, r.xq)
            : this.node.logits(r.xq);
        } catch (e) {
          if (e instanceof RangeError) throw new ProtocolError(e.message, "bad-body");
          throw e;
        }
        const us = (performance.now() - t0) * 1000;
        this.reply(MSG.RESULT, f.id, encodeResult(us, out));
        this.server.spin();
        return;
      }
      case MSG.MESH: {
        if (!this.node || !this.nodeReady) throw new ProtocolError("MESH before READY", "order");
        const { json, norms } = decodeMesh(f.body);
        const token = json["session"];
        if (typeof token !== "string" || !/^[0-9a-f]{32}$/.test(token)) throw new ProtocolError("mesh: session must be 32 hex digits", "bad-mesh");
        const rank = intIn(json["rank"], "mesh.rank");
        if (!Array.isArray(json["members"])) throw new ProtocolError("mesh: members must be a list", "bad-mesh");
        const members = (json["members"] as unknown[]).map(memberFrom);
        const me = members.find((m) => m.rank === rank);
        const n = this.node;
        if (!me || me.attn !== n.hasAttention || me.ffn !== n.hasFfn || me.logits !== n.hasLogits) throw new ProtocolError(`mesh: rank ${rank} does not match this node's slice`, "bad-mesh");
        if (new Set(members.map((m) => m.rank)).size !== members.length) throw new ProtocolError("mesh: duplicate ranks", "bad-mesh");
        this.endMesh("mesh: replaced by a new mesh");
        let member: MeshMember;
        try {
          member = new MeshMember(n.config, n, rank, members, norms, this.server.opts.backend, () => this.server.spin());
        } catch (e) {
          throw new ProtocolError((e as Error).message, "bad-mesh");
        }
        this.member = member;
        this.meshToken = token;
        const client = members.find((m) => m.host === undefined && m.rank !== rank);
        if (client) {
          this.clientRank = client.rank;
          member.links.set(client.rank, { send: (fr) => void this.socket.write(fr) });
        }
        this.server.meshes.set(token, this);
        this.reply(MSG.MESH_OK, f.id, "{}");
        return;
      }
      case MSG.LINK: {
        const member = this.member;
        if (!member) throw new ProtocolError("LINK before MESH", "order");
        const lower = member.members.filter((m) => m.host !== undefined && m.rank < member.rank);
        await Promise.all(lower.map((m) => this.connectPeer(m, member.rank, member)));
        const need = member.members.length - 1;
        if (member.links.size < need) {
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => {
              this.linkWaiter = null;
              const missing = member.members.filter((m) => m.rank !== member.rank && !member.links.has(m.rank)).map((m) => m.label);
              reject(new ProtocolError(`mesh: no link from ${missing.join(", ")} within ${LINK_TIMEOUT_MS / 1000} s`, "peer"));
            }, LINK_TIMEOUT_MS);
            this.linkWaiter = () => {
              if (member.links.size < need) return;
              clearTimeout(timer);
              this.linkWaiter = null;
              resolve();
            };
          });
        }
        this.reply(MSG.LINK_OK, f.id, "{}");
        return;
      }
      case MSG.PEER: {
        const j = parseJson(f.body, "peer");
        const target = typeof j["session"] === "string" ? this.server.meshes.get(j["session"]) : undefined;
        if (!target || !target.member) throw new ProtocolError("peer: unknown mesh session", "bad-peer");
        const rank = intIn(j["rank"], "peer.rank");
        const m = target.member.members.find((x) => x.rank === rank);
        if (!m || m.host === undefined || rank <= target.member.rank) throw new ProtocolError(`peer: rank ${rank} may not link to rank ${target.member.rank}`, "bad-peer");
        this.peerOf = { member: target.member, rank };
        target.member.links.set(rank, { send: (fr) => void this.socket.write(fr) });
        this.reply(MSG.PEER_OK, f.id, "{}");
        target.linkAdded();
        return;
      }
      case MSG.STEP: {
        const member = this.member;
        if (!member) throw new ProtocolError("STEP before MESH", "order");
        const { step, pos, nTok, x0 } = decodeStep(f.body);
        c.requests++;
        let out: Awaited<ReturnType<MeshMember["step"]>>;
        try {
          out = await member.step(step, pos, nTok, x0);
        } catch (e) {
          if (e instanceof RangeError) throw new ProtocolError(e.message, "bad-body");
          throw e;
        }
        this.reply(MSG.DONE, f.id, encodeDone(out.times, out.logits));
        this.server.spin();
        return;
      }
      case MSG.STATS:
        this.reply(MSG.STATS_OK, f.id, JSON.stringify({ counters: { ...c, arenasBound: this.server.opts.backend.boundArenas } }));
        return;
      default:
        throw new ProtocolError(`unknown message type ${f.type}`, "unknown-type");
    }
  }
}
