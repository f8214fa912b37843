/**
 * The cluster wire format, in one place (the client end of a connection is connection.ts). Every
 * message is a frame:
 *
 *   offset size  field
 *   0      4     magic "LMSH" (0x4c 0x4d 0x53 0x48)
 *   4      2     protocol version (u16 LE)
 *   6      2     message type (u16 LE, see MSG)
 *   8      4     request id (u32 LE; a reply carries the id of its request)
 *   12     4     body length in bytes (u32 LE, at most MAX_FRAME_BYTES)
 *   16     ...   body
 *
 * Little-endian everywhere. Control messages (hello, authentication, setup, stats, errors) carry a
 * UTF-8 JSON body, so the handshake can grow without a new frame layout; the hot messages (a
 * step, its partial sums, weight chunks) carry binary bodies laid out by the helpers below.
 * Sockets run with TCP_NODELAY.
 *
 * A session, client -> worker: HELLO (+ AUTH with a secret), SETUP (the node's slice) and its
 * WEIGHTS, READY, MESH (join the step program: the members, the norms, how sums are reduced),
 * LINK (mesh only: the workers connect to each other with PEER), then one STEP per forward call,
 * answered by DONE; during a step the members exchange PARTIAL frames (directly in the mesh, via
 * the client in the relay). See worker-session.ts for the states a connection goes through.
 */
import type { Segment } from "../engine/slice.js";
import { type StepTimes } from "../engine/step.js";

export const MAGIC = 0x48534d4c; // "LMSH" read as a little-endian u32
/** 2: one step program for every topology (version 1 had separate per-layer star requests). */
export const PROTOCOL_VERSION = 2;
export const HEADER_BYTES = 16;
/** Largest body accepted: weight chunks are 4 MB, activations far smaller. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;
/** Weight slices travel in chunks of this many bytes. */
export const WEIGHT_CHUNK_BYTES = 4 * 1024 * 1024;

export const MSG = {
  /** Any direction: {message, code}. The request failed; a worker keeps serving. */
  ERROR: 0,
  /** client -> worker: {fingerprint, client, ...}; reply HELLO_OK {worker, threads, gmac, protocol, counters}. */
  HELLO: 1,
  HELLO_OK: 2,
  /** client -> worker: {plan for this node, config, seqLen, batch, slices: [{key, bytes}]}; reply SETUP_OK {missing: keys}. */
  SETUP: 3,
  SETUP_OK: 4,
  /** client -> worker: binary weight chunk (see encodeWeightChunk); no reply. */
  WEIGHTS: 5,
  /** client -> worker: {} after the last chunk; reply READY_OK {counters} once the node is built. */
  READY: 6,
  READY_OK: 7,
  // 8-11: version 1's per-layer star requests, retired
  /** client -> worker: {}; reply STATS_OK {counters}. */
  STATS: 12,
  STATS_OK: 13,
  /**
   * client -> worker: join the step program: u32 JSON length, JSON {session, rank, members,
   * reduce: "mesh" | "scatter" | "relay"}, then the norms as f32 (see encodeMesh); reply MESH_OK {} once the
   * session accepts peers.
   */
  MESH: 14,
  MESH_OK: 15,
  /** client -> worker: {}; the worker connects to the lower-ranked workers; reply LINK_OK once every link is up. */
  LINK: 16,
  LINK_OK: 17,
  /** worker -> worker, first frame of a peer connection: {session, rank}; reply PEER_OK {}. */
  PEER: 18,
  PEER_OK: 19,
  /** client -> worker: one forward step (see encodeStep); reply DONE (see encodeDone). */
  STEP: 20,
  DONE: 21,
  /**
   * No reply: one partial sum of a step (see encodePartial), member -> member in the mesh,
   * member -> client and client -> member (the sum) in the relay; in the scatter a chunk of a
   * part, or with bit 31 of the sync index set a summed chunk, member -> member.
   */
  PARTIAL: 22,
  /** client -> worker, no reply, handled at once: fail the running step (a peer is lost). */
  ABORT: 23,
  /** client -> worker, handled at once even during a step: {}; reply PONG {} (the worker is alive). */
  PING: 24,
  PONG: 25,
  /** worker -> client, answering HELLO or PEER when the worker has a secret: {nonce, proof} (see auth.ts). */
  AUTH_CHALLENGE: 26,
  /** client -> worker: {proof}; answered as the HELLO or PEER it completes (HELLO_OK / PEER_OK). */
  AUTH: 27,
} as const;
export type MsgType = (typeof MSG)[keyof typeof MSG];

export const MSG_NAMES: Record<number, string> = Object.fromEntries(Object.entries(MSG).map(([k, v]) => [v, k]));

export interface Frame {
  version: number;
  type: number;
  id: number;
  body: Buffer;
}

export function encodeFrame(type: number, id: number, body: Uint8Array | string = new Uint8Array(0), version = PROTOCOL_VERSION): Buffer {
  const b = typeof body === "string" ? Buffer.from(body, "utf8") : body;
  if (b.length > MAX_FRAME_BYTES) throw new RangeError(`frame body of ${b.length} bytes exceeds ${MAX_FRAME_BYTES}`);
  const out = Buffer.allocUnsafe(HEADER_BYTES + b.length);
  writeHeader(out, type, id, b.length, version);
  out.set(b, HEADER_BYTES);
  return out;
}

/** The HEADER_BYTES of a frame at out[0..): magic, version, type, id, body length. */
export function writeHeader(out: Buffer, type: number, id: number, bodyBytes: number, version = PROTOCOL_VERSION): void {
  out.writeUInt32LE(MAGIC, 0);
  out.writeUInt16LE(version, 4);
  out.writeUInt16LE(type, 6);
  out.writeUInt32LE(id >>> 0, 8);
  out.writeUInt32LE(bodyBytes, 12);
}

export function encodeJson(type: number, id: number, value: unknown): Buffer {
  return encodeFrame(type, id, JSON.stringify(value));
}

/** A framing problem: the stream cannot be trusted past this point. */
export class FrameError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

/**
 * Cuts a byte stream into frames. push() returns the complete frames; it throws FrameError on a
 * bad magic or an over-long body (the header's version is checked by the caller, which can still
 * answer with an error frame because the length is known).
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private have = 0;

  /**
   * Largest body accepted now: a worker keeps it small until the peer has authenticated
   * (limits.ts), so a stranger cannot make it buffer a 64 MB frame.
   */
  constructor(
    public maxBody = MAX_FRAME_BYTES,
    /** A tighter limit by message type (a JSON control message is never megabytes long). */
    public maxBodyOf: ((type: number) => number) | null = null,
  ) {}

  /** Let go of what is held (the connection is closed). */
  clear(): void {
    this.chunks = [];
    this.have = 0;
  }

  /** Bytes held for a frame not yet complete. */
  get buffered(): number {
    return this.have;
  }

  push(data: Buffer): Frame[] {
    this.chunks.push(data);
    this.have += data.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.have < HEADER_BYTES) break;
      const head = this.peek(HEADER_BYTES);
      const magic = head.readUInt32LE(0);
      // the message names no received byte: a remote's bytes are never echoed (nor logged)
      if (magic !== MAGIC) throw new FrameError(`bad magic: not a llamesh frame (expected "LMSH")`, "bad-magic");
      const len = head.readUInt32LE(12);
      const max = Math.min(this.maxBody, this.maxBodyOf?.(head.readUInt16LE(6)) ?? Infinity);
      if (len > max) throw new FrameError(`frame body of ${len} bytes exceeds the ${max}-byte maximum`, "too-large");
      if (this.have < HEADER_BYTES + len) break;
      const all = this.take(HEADER_BYTES + len);
      frames.push({ version: all.readUInt16LE(4), type: all.readUInt16LE(6), id: all.readUInt32LE(8), body: all.subarray(HEADER_BYTES) });
    }
    return frames;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    const b = Buffer.concat(this.chunks);
    this.chunks = [b];
    return b;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const b = Buffer.concat(this.chunks);
      out = b.subarray(0, n);
      this.chunks = b.length > n ? [b.subarray(n)] : [];
    }
    this.have -= n;
    return out;
  }
}

export function parseJson(body: Buffer, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(body.toString("utf8"));
  } catch {
    throw new ProtocolError(`${what}: body is not valid JSON`, "bad-json");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ProtocolError(`${what}: expected a JSON object`, "bad-json");
  return v as Record<string, unknown>;
}

/** A request the peer can be told about in an error frame (the connection stays usable). */
export class ProtocolError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

// ---- binary bodies ----

/** Weight chunk: u16 key length, key (ASCII), f64 offset, then the bytes. */
export function encodeWeightChunk(key: string, offset: number, data: Uint8Array): Buffer {
  const k = Buffer.from(key, "ascii");
  const b = Buffer.allocUnsafe(2 + k.length + 8 + data.length);
  b.writeUInt16LE(k.length, 0);
  b.set(k, 2);
  b.writeDoubleLE(offset, 2 + k.length);
  b.set(data, 10 + k.length);
  return b;
}

export function decodeWeightChunk(body: Buffer): { key: string; offset: number; data: Buffer } {
  if (body.length < 2) throw new ProtocolError("weight chunk too short", "bad-body");
  const kl = body.readUInt16LE(0);
  if (body.length < 10 + kl) throw new ProtocolError("weight chunk too short", "bad-body");
  return { key: body.toString("ascii", 2, 2 + kl), offset: body.readDoubleLE(2 + kl), data: body.subarray(10 + kl) };
}

/**
 * MESH body: u32 JSON length, the JSON, then the f32 norm weights (padding to 4 bytes after the
 * JSON so the floats are aligned in the body).
 */
export function encodeMesh(json: unknown, norms: Float32Array): Buffer {
  const j = Buffer.from(JSON.stringify(json), "utf8");
  const off = 4 + j.length + ((4 - ((4 + j.length) % 4)) % 4);
  const b = Buffer.alloc(off + norms.byteLength);
  b.writeUInt32LE(j.length, 0);
  b.set(j, 4);
  b.set(new Uint8Array(norms.buffer, norms.byteOffset, norms.byteLength), off);
  return b;
}

export function decodeMesh(body: Buffer): { json: Record<string, unknown>; norms: Float32Array } {
  if (body.length < 4) throw new ProtocolError("mesh: body too short", "bad-body");
  const len = body.readUInt32LE(0);
  if (4 + len > body.length) throw new ProtocolError("mesh: JSON length beyond the body", "bad-body");
  const json = parseJson(body.subarray(4, 4 + len), "mesh");
  const off = 4 + len + ((4 - ((4 + len) % 4)) % 4);
  return { json, norms: f32Copy(body.subarray(Math.min(off, body.length))) };
}

/** Most segments (sequences) one step may carry. */
export const MAX_SEGMENTS = 1024;

/**
 * STEP body: u32 step, u32 nSeg, nSeg x (u32 slot, u32 pos, u32 nTok), then the tokens'
 * embeddings, segment after segment (sum of nTok x dimP f32).
 */
export function encodeStep(step: number, segments: readonly Segment[], x0: Float32Array): Buffer {
  const head = 8 + 12 * segments.length;
  const b = Buffer.allocUnsafe(head + x0.byteLength);
  b.writeUInt32LE(step >>> 0, 0);
  b.writeUInt32LE(segments.length, 4);
  segments.forEach((g, i) => {
    b.writeUInt32LE(g.slot, 8 + 12 * i);
    b.writeUInt32LE(g.pos, 12 + 12 * i);
    b.writeUInt32LE(g.nTok, 16 + 12 * i);
  });
  b.set(new Uint8Array(x0.buffer, x0.byteOffset, x0.byteLength), head);
  return b;
}

export function decodeStep(body: Buffer): { step: number; segments: Segment[]; x0: Float32Array } {
  if (body.length < 8) throw new ProtocolError(`step of ${body.length} bytes is shorter than its 8-byte header`, "bad-body");
  const n = body.readUInt32LE(4);
  if (n < 1 || n > MAX_SEGMENTS || 8 + 12 * n > body.length) throw new ProtocolError(`step: ${n} segments do not fit its ${body.length} bytes (at most ${MAX_SEGMENTS})`, "bad-body");
  const segments: Segment[] = [];
  for (let i = 0; i < n; i++) segments.push({ slot: body.readUInt32LE(8 + 12 * i), pos: body.readUInt32LE(12 + 12 * i), nTok: body.readUInt32LE(16 + 12 * i) });
  return { step: body.readUInt32LE(0), segments, x0: f32Copy(body.subarray(8 + 12 * n)) };
}

/** PARTIAL body: u32 step, u32 sync index (2 * layer + 0 attention / 1 feed-forward), then f32 values. */
export function encodePartial(step: number, seq: number, values: Float32Array): Buffer {
  const b = Buffer.allocUnsafe(8 + values.byteLength);
  b.writeUInt32LE(step >>> 0, 0);
  b.writeUInt32LE(seq, 4);
  b.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), 8);
  return b;
}

/**
 * In place, what encodeFrame(MSG.PARTIAL, step, encodePartial(step, seq, values)) writes before
 * the values, for valueBytes of them (a sender that reuses one frame buffer).
 */
export function writePartialHead(out: Buffer, step: number, seq: number, valueBytes: number): void {
  writeHeader(out, MSG.PARTIAL, step, 8 + valueBytes);
  out.writeUInt32LE(step >>> 0, HEADER_BYTES);
  out.writeUInt32LE(seq >>> 0, HEADER_BYTES + 4);
}

/** Throws unless body has a PARTIAL body's shape: step, seq, whole f32 values. */
export function checkPartialBody(body: Buffer): void {
  if (body.length < 8 || (body.length - 8) % 4 !== 0) throw new ProtocolError(`partial of ${body.length} bytes is malformed`, "bad-body");
}

export function decodePartial(body: Buffer): { step: number; seq: number; values: Float32Array } {
  checkPartialBody(body);
  return { step: body.readUInt32LE(0), seq: body.readUInt32LE(4), values: f32Copy(body.subarray(8)) };
}

/** What a member measured during one step (step.ts StepTimes) and the bytes its sums moved. */
export interface MemberTimes extends StepTimes {
  bytesSent: number;
  bytesReceived: number;
}

/**
 * DONE body: u32 nSync, u32 logits µs, u32 bytes sent, u32 bytes received, nSync x (u32 compute
 * µs, u32 wait µs), then the member's rows of the logits (f32, possibly none): its vocabulary
 * rows for each segment's last token, segment after segment.
 */
export function encodeDone(t: MemberTimes, logits: Float32Array | null): Buffer {
  const n = t.computeUs.length;
  const head = 16 + 8 * n;
  const b = Buffer.allocUnsafe(head + (logits ? logits.byteLength : 0));
  const u32 = (v: number): number => Math.min(0xffffffff, Math.max(0, Math.round(v)));
  b.writeUInt32LE(n, 0);
  b.writeUInt32LE(u32(t.logitsUs), 4);
  b.writeUInt32LE(u32(t.bytesSent), 8);
  b.writeUInt32LE(u32(t.bytesReceived), 12);
  for (let i = 0; i < n; i++) {
    b.writeUInt32LE(u32(t.computeUs[i]!), 16 + 8 * i);
    b.writeUInt32LE(u32(t.waitUs[i]!), 20 + 8 * i);
  }
  if (logits) b.set(new Uint8Array(logits.buffer, logits.byteOffset, logits.byteLength), head);
  return b;
}

export function decodeDone(body: Buffer): { times: MemberTimes; logits: Float32Array } {
  if (body.length < 16) throw new ProtocolError("done: body too short", "bad-body");
  const n = body.readUInt32LE(0);
  const head = 16 + 8 * n;
  if (head > body.length) throw new ProtocolError("done: timings beyond the body", "bad-body");
  const computeUs: number[] = [];
  const waitUs: number[] = [];
  for (let i = 0; i < n; i++) {
    computeUs.push(body.readUInt32LE(16 + 8 * i));
    waitUs.push(body.readUInt32LE(20 + 8 * i));
  }
  return {
    times: { computeUs, waitUs, logitsUs: body.readUInt32LE(4), bytesSent: body.readUInt32LE(8), bytesReceived: body.readUInt32LE(12) },
    logits: f32Copy(body.subarray(head)),
  };
}

/** The bytes as f32 values, copied (a frame's body need not be 4-aligned). */
export function f32Copy(bytes: Uint8Array): Float32Array {
  const out = new Float32Array(bytes.length >> 2);
  new Uint8Array(out.buffer).set(bytes.subarray(0, out.length * 4));
  return out;
}
