/**
 * One connection to a worker, as an explicit state machine: a state holds exactly what the
 * connection has established so far, and each state names the messages it accepts.
 *
 *   connected --HELLO--> authenticated                 (with a secret: via challenged, then AUTH)
 *   connected --PEER---> peer                          (a mesh member linking to this worker's member)
 *   authenticated --SETUP--> receiving --READY--> ready --MESH--> joined --STEP--> joined ...
 *   receiving / ready / joined --SETUP--> receiving   (a new plan, after a lost worker)
 *   joined --MESH--> joined                            (new members)
 *   any --socket closed--> closed
 *
 * PING, PARTIAL and ABORT are handled at once, outside the message queue: the step in progress may
 * be waiting for exactly those. Everything else runs in order. A message the current state does not
 * accept gets an ERROR naming what comes first; the connection stays usable.
 *
 * What one connection may cost is bounded (limits.ts): until the handshake is done a frame is
 * at most 64 KiB and the worker's deadline runs; then idle sessions close, a peer that does not
 * read its replies or errs too often is closed, the frames waiting in the queue are counted, a
 * SETUP must fit the memory budget (and match --model), a mesh has at most MAX_MEMBERS members.
 * Error texts name the problem, never the input (a 1 MB field is not sent back nor logged).
 */
import type * as net from "node:net";
import { LlameshError } from "../core/errors.js";
import { openWeights } from "../engine/open.js";
import { extractSlices, ModelSlice, sliceDescs, type SliceDesc } from "../engine/slice.js";
import { checkTypePlan, type TypePlan } from "../engine/types.js";
import { authProof, isNonce, newNonce, openSession, proofMatches } from "./auth.js";
import { withKeys, type CacheWriter } from "./cache.js";
import { Connection, jsonOf } from "./connection.js";
import { Member } from "./member.js";
import {
  decodeMesh, decodeStep, decodeWeightChunk, encodeDone, encodeFrame, encodeJson, encodePartial, FrameError, FrameReader, MAX_FRAME_BYTES, MAX_SEGMENTS, MSG, MSG_NAMES, WEIGHT_CHUNK_BYTES,
  parseJson, PROTOCOL_VERSION, ProtocolError, type Frame,
} from "./protocol.js";
import { MAX_JSON_BYTES, MAX_MEMBERS, oneLine, PEER_FAILURE, QUEUE_PAUSE_BYTES } from "./limits.js";
import { isLinked, MeshReduce, RelayReduce, ScatterReduce, type LinkedReduce, type ReduceKind } from "./reduce.js";
import { configFrom, intIn, memberFrom, sameConfig, sliceBytesNeeded, sliceFrom } from "./validate.js";
import { arenaBytes, type WorkerServer } from "./worker.js";

/** Peers of a mesh must connect within this long once LINK has been sent to every member. */
const LINK_TIMEOUT_MS = 10_000;

interface Slice {
  node: ModelSlice;
  /** Setup key: the same key on a later session means the same slice (parked for reuse). */
  key: string;
}

type State =
  | { kind: "connected" }
  | { kind: "challenged"; cn: string; wn: string; opening: Frame }
  | { kind: "authenticated"; fingerprint: string }
  | { kind: "receiving"; fingerprint: string; slice: Slice; writers: Map<string, { w: CacheWriter; desc: SliceDesc }> }
  | { kind: "ready"; fingerprint: string; slice: Slice }
  | { kind: "joined"; fingerprint: string; slice: Slice; mesh: Joined }
  | { kind: "peer"; target: LinkedReduce; rank: number }
  | { kind: "closed" };

type StateKind = State["kind"];

/** What a session in the step program holds. */
export interface Joined {
  member: Member;
  /** Mesh session token (peers attach by it). */
  token: string;
  /** Rank of the client in the mesh, when it computes a share itself (its PARTIALs come on this connection). */
  clientRank: number;
  /** Links this worker opened to lower-ranked peers. */
  peers: Connection[];
  /** Called when a peer links to this member. */
  onLink: (() => void) | null;
}

type Handler = (f: Frame) => Promise<void> | void;

/** For each state, what must come before a message it does not accept. */
const EXPECTED: Record<StateKind, string> = {
  connected: "no handshake yet: send HELLO first",
  challenged: "authentication in progress: answer the challenge with AUTH first",
  authenticated: "no model slice yet: SETUP and READY first",
  receiving: "the slice is incomplete: send its WEIGHTS and READY first",
  ready: "send MESH first",
  joined: "not accepted during a session in the step program",
  peer: "a peer link carries PARTIAL frames only",
  closed: "the connection is closed",
};

export class WorkerSession {
  private state: State = { kind: "connected" };
  private chain: Promise<void> = Promise.resolve();
  /** Where the other end is, captured at accept (the socket may be gone when an error is logged). */
  private readonly peerLabel: string;
  /** Small frames only until the handshake is done (limits.ts). */
  private readonly reader: FrameReader;
  private errors = 0;
  /** Frames in the queue (received, not yet served), and their bytes. */
  private queuedFrames = 0;
  private queuedBytes = 0;
  private lastActivity = Date.now();
  private idleTimer: NodeJS.Timeout | null = null;
  /** Closing: nothing more is read or answered. */
  private closing = false;

  constructor(
    private readonly server: WorkerServer,
    private readonly socket: net.Socket,
    peer: string,
    /** A plain connection to a worker that encrypts: its first frame gets one error, then it closes. */
    private readonly refuse = false,
  ) {
    this.peerLabel = peer;
    this.reader = new FrameReader(server.limits.preauthMaxFrameBytes, maxBodyOf);
  }

  /** Bytes this connection holds now, as counted in the worker's total. */
  private accounted = 0;

  /** Bring the worker's total of buffered bytes up to date; false (and closed) when this connection takes it over the limit. */
  private account(): boolean {
    const mine = this.closing ? 0 : this.reader.buffered + this.queuedBytes;
    this.server.buffered += mine - this.accounted;
    this.accounted = mine;
    if (mine > 0 && this.server.buffered > this.server.limits.maxBufferedBytes) {
      this.close(`the worker holds ${this.server.buffered} bytes of unserved frames (at most ${this.server.limits.maxBufferedBytes})`);
      this.socket.destroy();
      this.reader.clear();
      this.account();
      this.server.reclaim(); // what it held goes back now, not at V8's next whim
      return false;
    }
    return true;
  }

  /** Bytes of memory this session's slice takes (counted against the worker's budget). */
  get sliceBytes(): number {
    const s = this.state;
    return s.kind === "receiving" || s.kind === "ready" || s.kind === "joined" ? arenaBytes(s.slice.node) : 0;
  }

  /** Bytes from the socket: cut into frames; garbage gets one error and ends this connection only. */
  receive(d: Buffer): void {
    if (this.closing) return;
    this.lastActivity = Date.now();
    let frames: Frame[];
    try {
      frames = this.reader.push(d);
    } catch (e) {
      const fe = e instanceof FrameError ? e : new FrameError("unreadable frame", "bad-frame");
      this.sendError(0, fe.message, fe.code);
      this.close();
      return;
    }
    for (const f of frames) {
      if (this.closing) break;
      this.enqueue(f);
    }
    if (!this.account()) return;
    // a queue that long is not a client waiting for its step: read no more until it is served
    if (this.queuedBytes > QUEUE_PAUSE_BYTES && !this.socket.isPaused()) this.socket.pause();
  }

  /** End this connection (after what was written): the worker goes on serving the others. */
  private close(why?: string): void {
    if (this.closing) return;
    this.closing = true;
    if (why) {
      this.server.counters.connectionsClosed++;
      this.server.logPeer(`worker: connection from ${this.peerLabel} closed: ${why}`);
    }
    this.socket.end();
    // a peer that does not read what is left would keep the socket open: gone after a grace period
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  /** The handshake is done: full-size frames, no deadline; a session (not a peer link) gets the idle timeout. */
  private promote(): void {
    this.reader.maxBody = MAX_FRAME_BYTES;
    this.server.authenticated(this.peerLabel);
    if (this.state.kind !== "peer") this.armIdle(this.server.limits.idleTimeoutMs);
  }

  private armIdle(ms: number): void {
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.state.kind === "closed" || this.closing) return;
      const idle = this.server.limits.idleTimeoutMs;
      const quiet = Date.now() - this.lastActivity;
      // a request in progress (a long SETUP, a step) is not idleness
      if (quiet >= idle && this.queuedFrames === 0) this.close(`idle for ${Math.round(quiet / 1000)} s`);
      else this.armIdle(Math.max(1000, idle - quiet));
    }, ms);
    this.idleTimer.unref();
  }

  /** Every frame to the peer goes here: one that does not read its replies is closed, not buffered. */
  private write(frame: Buffer): void {
    if (this.socket.destroyed || this.closing) return;
    const authed = this.reader.maxBody === MAX_FRAME_BYTES;
    const limit = authed ? this.server.limits.maxUnreadBytes : this.server.limits.preauthMaxUnreadBytes;
    if (this.socket.writableLength + frame.length > limit) {
      this.closing = true;
      this.server.counters.connectionsClosed++;
      this.server.logPeer(`worker: connection from ${this.peerLabel} closed: it does not read its replies (${this.socket.writableLength} bytes unread)`);
      this.socket.destroy();
      return;
    }
    this.socket.write(frame);
  }

  /** The handlers of the current state (the messages it accepts). */
  private handlers(): Partial<Record<number, Handler>> {
    const s = this.state;
    const stats: Handler = (f) => this.onStats(f);
    switch (s.kind) {
      case "connected":
        return { [MSG.HELLO]: (f) => this.onOpening(f), [MSG.PEER]: (f) => this.onOpening(f) };
      case "challenged":
        return { [MSG.AUTH]: (f) => this.onAuth(f, s) };
      case "authenticated":
        return { [MSG.SETUP]: (f) => this.onSetup(f, s.fingerprint), [MSG.STATS]: stats };
      case "receiving":
        return { [MSG.WEIGHTS]: (f) => this.onWeights(f, s), [MSG.READY]: (f) => this.onReady(f, s), [MSG.SETUP]: (f) => this.onSetup(f, s.fingerprint), [MSG.STATS]: stats };
      case "ready":
        return { [MSG.MESH]: (f) => this.onMesh(f, s.fingerprint, s.slice), [MSG.SETUP]: (f) => this.onSetup(f, s.fingerprint), [MSG.STATS]: stats };
      case "joined":
        return {
          [MSG.STEP]: (f) => this.onStep(f, s.mesh),
          [MSG.LINK]: (f) => this.onLink(f, s.mesh),
          [MSG.MESH]: (f) => this.onMesh(f, s.fingerprint, s.slice),
          [MSG.SETUP]: (f) => this.onSetup(f, s.fingerprint),
          [MSG.STATS]: stats,
        };
      case "peer":
      case "closed":
        return {};
    }
  }

  /** A frame arrived. */
  enqueue(f: Frame): void {
    if (this.refuse) {
      this.sendError(f.id, "this worker encrypts its links (it has a shared secret): connect with the same --secret-file, without --no-encryption", "needs-secret");
      this.close();
      return;
    }
    const s = this.state;
    const authed = s.kind !== "connected" && s.kind !== "challenged";
    if (this.server.secret && !authed && f.type !== MSG.HELLO && f.type !== MSG.PEER && f.type !== MSG.AUTH) {
      this.sendError(f.id, `${MSG_NAMES[f.type] ?? `message ${f.type}`}: not authenticated: open the session with HELLO (or PEER) and AUTH first`, "auth");
      return;
    }
    // at once, never queued behind a STEP: the step may be waiting for exactly these
    if (f.type === MSG.PARTIAL) return this.onPartial(f);
    if (f.type === MSG.PING) return this.reply(MSG.PONG, f.id, "{}");
    if (f.type === MSG.ABORT) {
      if (s.kind === "joined") s.mesh.member.fail(new LlameshError("step aborted by the client (a member is lost)"));
      return;
    }
    const lim = this.server.limits;
    if (this.queuedFrames >= lim.maxQueuedFrames || this.queuedBytes + f.body.length > lim.maxQueuedBytes) {
      return this.close(`${this.queuedFrames} requests (${this.queuedBytes} bytes) waiting to be served`);
    }
    this.queuedFrames++;
    this.queuedBytes += f.body.length;
    this.chain = this.chain.then(() => this.handle(f)).catch((e: unknown) => {
      const pe = e instanceof ProtocolError ? e : null;
      const msg = e instanceof Error ? e.message : String(e);
      this.sendError(f.id, `${MSG_NAMES[f.type] ?? `message ${f.type}`}: ${msg}`, pe?.code ?? "failed");
    }).finally(() => {
      this.queuedFrames--;
      this.queuedBytes -= f.body.length;
      this.lastActivity = Date.now();
      this.account();
      if (this.socket.isPaused() && this.queuedBytes <= QUEUE_PAUSE_BYTES / 2 && !this.closing) this.socket.resume();
    });
  }

  private async handle(f: Frame): Promise<void> {
    if (f.version !== PROTOCOL_VERSION) {
      throw new ProtocolError(`protocol version ${f.version} is not supported (this worker speaks version ${PROTOCOL_VERSION}; update llamesh on one side)`, "version");
    }
    if (MSG_NAMES[f.type] === undefined) throw new ProtocolError(`unknown message type ${f.type}`, "unknown-type");
    const h = this.handlers()[f.type];
    if (!h) throw new ProtocolError(refusal(f.type, this.state.kind), "order");
    await h(f);
  }

  /** An ERROR reply (one line, bounded); the connection's error budget is spent by one. */
  sendError(id: number, message: string, code: string): void {
    if (this.closing) return;
    const text = oneLine(message);
    this.server.counters.errorsSent++;
    this.server.logPeer(`worker: error sent to ${this.peerLabel}: ${text}`);
    this.write(encodeJson(MSG.ERROR, id, { message: text, code: oneLine(code, 32) }));
    if (++this.errors >= this.server.limits.maxErrorsPerConnection) this.close(`${this.errors} errors`);
  }

  private reply(type: number, id: number, body: Uint8Array | string): void {
    this.write(encodeFrame(type, id, body));
  }

  // ---- handshake -------------------------------------------------------------------------

  /** HELLO or PEER: challenge first when there is a secret, else carry it out now. */
  private onOpening(f: Frame): void | Promise<void> {
    const secret = this.server.secret;
    if (!secret) return this.open(f);
    const cn = parseJson(f.body, MSG_NAMES[f.type]!.toLowerCase())["nonce"];
    if (!isNonce(cn)) throw new ProtocolError("this worker requires a shared secret: send a nonce and answer its challenge (--secret-file on the client)", "auth");
    const wn = newNonce();
    this.state = { kind: "challenged", cn, wn, opening: f };
    this.reply(MSG.AUTH_CHALLENGE, f.id, JSON.stringify({ nonce: wn, proof: authProof(secret, "worker", cn, wn) }));
  }

  private onAuth(f: Frame, s: Extract<State, { kind: "challenged" }>): void | Promise<void> {
    const secret = this.server.secret!;
    this.state = { kind: "connected" };
    if (!proofMatches(secret, "client", s.cn, s.wn, parseJson(f.body, "auth")["proof"])) {
      this.server.counters.authFailures++;
      this.sendError(f.id, "authentication failed: wrong shared secret", "auth");
      this.close(); // this connection only; the worker keeps serving
      return;
    }
    return this.open({ ...s.opening, id: f.id }); // answered as the HELLO or PEER it completes
  }

  private open(f: Frame): void {
    if (f.type === MSG.PEER) return this.onPeer(f);
    const c = this.server.counters;
    const fp = parseJson(f.body, "hello")["fingerprint"];
    if (typeof fp !== "string" || !/^[0-9a-f]{32}$/.test(fp)) throw new ProtocolError("model fingerprint is malformed (expected 32 hex digits)", "fingerprint");
    const mine = this.server.fingerprint;
    if (mine !== null && fp !== mine) {
      throw new ProtocolError(`model fingerprint mismatch: the client's model is ${fp}, this worker's --model ${this.server.opts.modelDir} is ${mine}`, "fingerprint");
    }
    c.sessions++;
    this.state = { kind: "authenticated", fingerprint: fp };
    this.promote();
    this.reply(MSG.HELLO_OK, f.id, JSON.stringify({
      worker: "llamesh", protocol: PROTOCOL_VERSION, threads: this.server.opts.backend.threads, gmac: this.server.gmac,
      hasModel: mine !== null, counters: c,
    }));
  }

  /** A mesh peer of higher rank links to this worker's member of session `session`. */
  private onPeer(f: Frame): void {
    const j = parseJson(f.body, "peer");
    const target = typeof j["session"] === "string" ? this.server.meshes.get(j["session"]) : undefined;
    if (!target) throw new ProtocolError("peer: unknown mesh session", "bad-peer");
    const reduce = target.member.reduce;
    const rank = intIn(j["rank"], "peer.rank", 0, "bad-peer");
    const m = isLinked(reduce) ? reduce.members.find((x) => x.rank === rank) : undefined;
    if (!isLinked(reduce) || !m || m.host === undefined || rank <= target.member.rank) throw new ProtocolError(`peer: rank ${rank} may not link to rank ${target.member.rank}`, "bad-peer");
    this.state = { kind: "peer", target: reduce, rank };
    this.promote();
    reduce.links.set(rank, { send: (fr) => this.write(fr), idle: () => this.socket.writableLength === 0 });
    this.reply(MSG.PEER_OK, f.id, "{}");
    target.onLink?.();
  }

  // ---- the node's slice --------------------------------------------------------------------

  private async onSetup(f: Frame, fingerprint: string): Promise<void> {
    const c = this.server.counters;
    const j = parseJson(f.body, "setup");
    const config = configFrom(j["config"]);
    if (this.server.modelConfig !== null && !sameConfig(config, this.server.modelConfig)) {
      throw new ProtocolError(`setup: the config does not match this worker's --model ${this.server.opts.modelDir}`, "fingerprint");
    }
    const sliceSpec = sliceFrom(j["slice"], config);
    const seqLen = intIn(j["seqLen"], "seqLen", 1);
    const batch = intIn(j["batch"], "batch", 1);
    const slots = j["slots"] === undefined ? 1 : intIn(j["slots"], "slots", 1, "bad-setup", 256);
    if (seqLen > config.seqLen * 64 || batch > 4096) throw new ProtocolError("setup: seqLen or batch out of range", "bad-setup");
    let plan: TypePlan;
    try {
      plan = checkTypePlan(j["types"], config);
    } catch (e) {
      throw new ProtocolError(`setup: ${(e as Error).message}`, "bad-setup");
    }
    this.leaveSlice(this.state, "mesh: the session's slice is replaced");
    this.state = { kind: "authenticated", fingerprint };
    const descs = withKeys(sliceDescs(config, sliceSpec, plan), fingerprint);
    const key = JSON.stringify({ fp: fingerprint, config, slice: sliceSpec, seqLen, batch, slots, plan });
    const parked = this.server.takeParked(key);
    // every size is in range; the sum must also fit this worker's memory, checked before allocating
    const need = parked ? 0 : sliceBytesNeeded(config, sliceSpec, descs, seqLen, batch, slots);
    if (!parked && !this.server.admitSlice(need, this)) {
      c.setupsTooLarge++;
      const gb = (b: number): string => (b / 1e9).toFixed(2);
      throw new ProtocolError(`setup: this node's slice needs ${gb(need)} GB, over this worker's memory budget of ${gb(this.server.limits.maxMemoryBytes)} GB: spread the model over more nodes or a shorter context`, "too-large");
    }
    if (parked) {
      c.nodesReused++;
      this.state = { kind: "receiving", fingerprint, slice: { node: parked, key }, writers: new Map() };
      this.reply(MSG.SETUP_OK, f.id, JSON.stringify({ missing: [], slices: descs.length, weightBytes: parked.weightBytes, reused: true }));
      return;
    }
    const node = new ModelSlice(config, sliceSpec, plan, this.server.opts.backend, { seqLen, batch, slots, descs });
    const fromModel: SliceDesc[] = [];
    const missing: SliceDesc[] = [];
    for (const d of descs) {
      if (this.server.cache.readInto(d.key, node.view(d.id))) c.slicesFromCache++;
      else if (this.server.opts.modelDir) fromModel.push(d);
      else missing.push(d);
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
    const writers = new Map(missing.map((d) => [d.key, { w: this.server.cache.writer(d.key, d.bytes), desc: d }]));
    this.state = { kind: "receiving", fingerprint, slice: { node, key }, writers };
    this.reply(MSG.SETUP_OK, f.id, JSON.stringify({ missing: missing.map((d) => d.key), slices: descs.length, weightBytes: node.weightBytes }));
  }

  private onWeights(f: Frame, s: Extract<State, { kind: "receiving" }>): void {
    const { key, offset, data } = decodeWeightChunk(f.body);
    const e = s.writers.get(key);
    if (!e) throw new ProtocolError("weight chunk for a slice this worker did not ask for", "bad-weights");
    if (!(offset >= 0 && offset + data.length <= e.desc.bytes)) throw new ProtocolError(`weight chunk outside slice ${e.desc.id}`, "bad-weights");
    s.slice.node.view(e.desc.id).set(data, offset);
    e.w.write(offset, data);
    this.server.counters.weightBytesReceived += data.length;
  }

  private onReady(f: Frame, s: Extract<State, { kind: "receiving" }>): void {
    const c = this.server.counters;
    const short: string[] = [];
    for (const { w, desc } of s.writers.values()) {
      if (w.commit()) c.slicesReceived++;
      else short.push(desc.id);
    }
    s.writers.clear();
    if (short.length > 0) throw new ProtocolError(`slices incomplete: ${short.join(", ")}`, "incomplete");
    // every slice is in (cache, model folder, wire): the kernels' own layouts from here on
    s.slice.node.seal();
    const freed = this.server.cache.evict(new Set(s.slice.node.descs.map((d) => d.key)));
    if (freed > 0) {
      c.cacheBytesEvicted += freed;
      this.server.opts.log?.(`worker: cache over ${(this.server.cache.maxBytes / 1e9).toFixed(2)} GB, ${(freed / 1e6).toFixed(1)} MB of least recently used slices deleted`);
    }
    this.state = { kind: "ready", fingerprint: s.fingerprint, slice: s.slice };
    this.reply(MSG.READY_OK, f.id, JSON.stringify({ counters: c }));
  }

  /** Give up the slice and mesh of state `s` (a complete slice is parked for reuse). */
  private leaveSlice(s: State, why: string): void {
    if (s.kind === "joined") this.leaveMesh(s.mesh, why);
    if (s.kind === "receiving") {
      for (const { w } of s.writers.values()) w.abort();
      const node = s.slice.node;
      this.server.released(arenaBytes(node), () => node.dispose()); // never completed: nobody can reuse it
    }
    if (s.kind === "ready" || s.kind === "joined") this.server.park(s.slice.key, s.slice.node);
  }

  // ---- the step program ---------------------------------------------------------------------

  private onMesh(f: Frame, fingerprint: string, slice: Slice): void {
    // the JSON (at most MAX_MEMBERS members) and the norms: nothing longer is copied
    const c = slice.node.config;
    if (f.body.length > 64 * 1024 + 4 * (2 * c.nLayers + 1) * c.dim) throw new ProtocolError(`mesh: a body of ${f.body.length} bytes, more than the members and this model's norms take`, "bad-mesh");
    const { json, norms } = decodeMesh(f.body);
    const token = json["session"];
    if (typeof token !== "string" || !/^[0-9a-f]{32}$/.test(token)) throw new ProtocolError("mesh: session must be 32 hex digits", "bad-mesh");
    const rank = intIn(json["rank"], "mesh.rank", 0, "bad-mesh");
    const kind = reduceKindOf(json["reduce"]);
    if (!Array.isArray(json["members"])) throw new ProtocolError("mesh: members must be a list", "bad-mesh");
    // bounded before anything is dialled or built (a list of 200 addresses is not 200 connections)
    if (json["members"].length < 1 || json["members"].length > MAX_MEMBERS) throw new ProtocolError(`mesh: ${json["members"].length} members, expected 1..${MAX_MEMBERS}`, "bad-mesh");
    const members = (json["members"] as unknown[]).map(memberFrom);
    const me = members.find((m) => m.rank === rank);
    const n = slice.node;
    if (!me || me.attn !== n.hasAttention || me.ffn !== n.hasFfn || me.logits !== n.hasLogits) throw new ProtocolError(`mesh: rank ${rank} does not match this node's slice`, "bad-mesh");
    if (new Set(members.map((m) => m.rank)).size !== members.length) throw new ProtocolError("mesh: duplicate ranks", "bad-mesh");
    if (this.state.kind === "joined") this.leaveMesh(this.state.mesh, "mesh: replaced by a new mesh");
    const spin = (): void => this.server.spin();
    const write = (fr: Buffer): void => this.write(fr);
    const reduce = kind !== "relay"
      ? new (kind === "mesh" ? MeshReduce : ScatterReduce)(rank, members, n.d.dimP, n.batch, spin)
      : new RelayReduce(rank, (step, seq, values) => {
        const fr = encodeFrame(MSG.PARTIAL, step, encodePartial(step, seq, values));
        write(fr);
        return fr.length;
      }, spin);
    let member: Member;
    try {
      member = new Member(n, rank, norms, this.server.opts.backend, reduce);
    } catch (e) {
      throw new ProtocolError((e as Error).message, "bad-mesh");
    }
    const client = members.find((m) => m.host === undefined && m.rank !== rank);
    if (isLinked(reduce) && client) reduce.links.set(client.rank, { send: write, idle: () => this.socket.writableLength === 0 });
    const mesh: Joined = { member, token, clientRank: client?.rank ?? -1, peers: [], onLink: null };
    this.server.meshes.set(token, mesh);
    this.state = { kind: "joined", fingerprint, slice, mesh };
    this.reply(MSG.MESH_OK, f.id, "{}");
  }

  private leaveMesh(mesh: Joined, why: string): void {
    mesh.member.dispose(why);
    if (this.server.meshes.get(mesh.token) === mesh) this.server.meshes.delete(mesh.token);
    for (const c of mesh.peers.splice(0)) c.close();
  }

  /** Mesh only: connect to the lower-ranked workers, wait for the higher-ranked ones to connect. */
  private async onLink(f: Frame, mesh: Joined): Promise<void> {
    const reduce = mesh.member.reduce;
    if (!isLinked(reduce)) throw new ProtocolError("LINK in a relay session: its members do not link to each other", "order");
    const me = mesh.member.rank;
    const lower = reduce.members.filter((m) => m.host !== undefined && m.rank < me);
    const t0 = Date.now();
    const failed = (await Promise.all(lower.map((m) => this.connectPeer(m.rank, m.host!, m.port!, mesh, reduce).then(() => null, () => `${m.host}:${m.port}`))))
      .filter((x): x is string => x !== null);
    if (failed.length > 0) {
      // reported after the same delay whatever went wrong: how fast a port refuses tells what listens there
      await new Promise((r) => setTimeout(r, Math.max(0, this.server.limits.peerConnectMs - (Date.now() - t0))));
      throw new ProtocolError(`mesh: cannot link to peer ${failed.join(", ")}: ${PEER_FAILURE}; list every worker by an address the other workers can reach`, "peer");
    }
    const need = reduce.members.length - 1;
    if (reduce.links.size < need) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          mesh.onLink = null;
          const missing = reduce.members.filter((m) => m.rank !== me && !reduce.links.has(m.rank)).map((m) => m.label);
          reject(new ProtocolError(`mesh: no link from ${missing.join(", ")} within ${LINK_TIMEOUT_MS / 1000} s`, "peer"));
        }, LINK_TIMEOUT_MS);
        mesh.onLink = () => {
          if (reduce.links.size < need) return;
          clearTimeout(timer);
          mesh.onLink = null;
          resolve();
        };
      });
    }
    this.reply(MSG.LINK_OK, f.id, "{}");
  }

  /**
   * Connect to a lower-ranked worker of the mesh; its partial sums come back on this connection.
   * Rejects without saying why (see PEER_FAILURE): connect and handshake within peerConnectMs.
   */
  private async connectPeer(rank: number, host: string, port: number, mesh: Joined, reduce: LinkedReduce): Promise<void> {
    const label = `${host}:${port}`;
    const ms = this.server.limits.peerConnectMs;
    const conn = await Connection.connect(host, port, ms, this.server.security);
    conn.requestTimeoutMs = ms;
    mesh.peers.push(conn);
    conn.onUnsolicited = (fr) => reduce.deliver(rank, fr);
    conn.onClosed = () => mesh.member.fail(new LlameshError(`mesh: link to peer ${label} closed`));
    try {
      jsonOf(await openSession(conn, MSG.PEER, { session: mesh.token, rank: mesh.member.rank }, this.server.secret), MSG.PEER_OK, `peer ${label}`);
    } catch (e) {
      conn.onClosed = null;
      conn.close();
      throw e;
    }
    reduce.links.set(rank, { send: (fr) => conn.write(fr), idle: () => conn.idle });
  }

  private async onStep(f: Frame, mesh: Joined): Promise<void> {
    const n = mesh.member.node;
    if (f.body.length > 8 + 12 * MAX_SEGMENTS + 4 * n.batch * n.d.dimP) throw new ProtocolError(`step of ${f.body.length} bytes, more than a batch of ${n.batch} tokens`, "bad-body");
    const { step, segments, x0 } = decodeStep(f.body);
    this.server.counters.requests++;
    let out: Awaited<ReturnType<Member["step"]>>;
    try {
      out = await mesh.member.step({ step, segments }, x0);
    } catch (e) {
      if (e instanceof RangeError) throw new ProtocolError(e.message, "bad-body");
      throw e;
    }
    this.reply(MSG.DONE, f.id, encodeDone(out.times, out.logits));
    this.server.spin();
  }

  /** At once: a partial sum for this connection's member (peer link), or for this session's member. */
  private onPartial(f: Frame): void {
    const s = this.state;
    try {
      if (s.kind === "peer") {
        s.target.deliver(s.rank, f);
      } else if (s.kind === "joined") {
        const r = s.mesh.member.reduce;
        if (r instanceof RelayReduce) r.deliver(f);
        else if (s.mesh.clientRank >= 0) r.deliver(s.mesh.clientRank, f);
        else throw new ProtocolError("partial sum from a client without a share in this mesh", "order");
      } else {
        throw new ProtocolError("partial sum outside a mesh", "order");
      }
    } catch (e) {
      this.sendError(f.id, `PARTIAL: ${(e as Error).message}`, e instanceof ProtocolError ? e.code : "failed");
      // a sum that cannot be used breaks the step program: this link is not trusted any more
      if (s.kind === "peer" || s.kind === "joined") this.close("a partial sum was refused");
    }
  }

  private onStats(f: Frame): void {
    this.reply(MSG.STATS_OK, f.id, JSON.stringify({ counters: { ...this.server.counters, arenasBound: this.server.opts.backend.boundArenas } }));
  }

  /** The socket closed: let go of everything this connection held. */
  dispose(): void {
    const s = this.state;
    this.state = { kind: "closed" };
    this.closing = true;
    this.account();
    if (s.kind === "peer") {
      // the member of that mesh only: the session may have a newer one since
      const label = s.target.members.find((m) => m.rank === s.rank)?.label ?? `rank ${s.rank}`;
      s.target.fail(new LlameshError(`mesh: link to peer ${label} closed`));
      return;
    }
    this.leaveSlice(s, "mesh: the client disconnected");
    this.server.opts.backend.idle();
  }
}

/** The messages whose body is binary (the rest carry JSON, at most MAX_JSON_BYTES). */
const BINARY: ReadonlySet<number> = new Set([MSG.MESH, MSG.STEP, MSG.PARTIAL, MSG.WEIGHTS]);

/** The largest body a frame of `type` may have (checked on the header, before it is buffered). */
function maxBodyOf(type: number): number {
  if (type === MSG.WEIGHTS) return WEIGHT_CHUNK_BYTES + 64 * 1024;
  return BINARY.has(type) ? MAX_FRAME_BYTES : MAX_JSON_BYTES;
}

/** Why a message is refused in a state: what has to come first, in the session's order. */
function refusal(type: number, state: StateKind): string {
  const name = MSG_NAMES[type]!;
  if (state === "connected" || state === "challenged" || state === "peer" || state === "closed") return EXPECTED[state];
  if ((type === MSG.STEP || type === MSG.LINK) && state !== "joined") return `${name} before MESH: ${EXPECTED[state]}`;
  if (type === MSG.MESH) return `MESH before READY: ${EXPECTED[state]}`;
  if (type === MSG.READY || type === MSG.WEIGHTS) return `${name} before SETUP: a slice is received only between SETUP and READY`;
  return `${EXPECTED[state]}`;
}

/** MESH's reduce field (absent: the mesh, as version 2's first workers knew only it). */
function reduceKindOf(v: unknown): ReduceKind {
  if (v === undefined) return "mesh";
  if (v === "mesh" || v === "relay" || v === "scatter") return v;
  throw new ProtocolError(`mesh: unknown reduce, expected "mesh", "scatter" or "relay"`, "bad-mesh");
}
