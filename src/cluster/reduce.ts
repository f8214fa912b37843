/**
 * The two ways a cluster adds up a sync's partial sums (engine/step.ts AllReduce), for the same
 * step program and the same messages:
 *
 * - MeshReduce: every member sends its partial sums straight to every other member and adds
 *   theirs. A sync costs one one-way trip, and the client's machine is free during a step. Each
 *   link carries (N-1) x dim floats per sync each way.
 * - RelayReduce + RelayHub: every member sends its partial sums to the client (the hub), which adds
 *   them and sends the sum back to every member. For workers that cannot reach each other (NAT,
 *   firewalls): a round trip through the client per sync, N x dim floats each way at the client.
 *
 * - ScatterReduce: for larger clusters (reduce-scatter + all-gather over the same links): the sum
 *   is cut into one chunk per member; every member with a part sends chunk j to member j, which
 *   adds the chunk's parts and sends the summed chunk to everyone. Two one-way trips per sync, but
 *   each member sends 2(N-1)/N x dim floats instead of the mesh's (N-1) x dim.
 *
 * Every way, every member adds the same parts in the same (rank) order with the same code
 * (residual.ts sumPartials; per element, which is all a chunk changes), so every copy of the
 * residual stream is identical, bit for bit, whichever reduction runs, and identical to the
 * single-machine forward pass when one node holds everything.
 */
import { LlameshError } from "../core/errors.js";
import { sumPartials } from "../engine/residual.js";
import type { AllReduce } from "../engine/step.js";
import { Inbox } from "./inbox.js";
import { syncTrace } from "./sync-trace.js";
import { checkPartialBody, decodePartial, encodeFrame, encodePartial, HEADER_BYTES, MSG, ProtocolError, writePartialHead, type Frame } from "./protocol.js";

/** A member of the step program as every member knows it (ranks are the plan's node order). */
export interface MemberInfo {
  rank: number;
  /** host:port of a worker, "local" for the client's own share. */
  label: string;
  /** Where the other workers reach this worker (absent for the client's own share). */
  host?: string;
  port?: number;
  attn: boolean;
  ffn: boolean;
  logits: boolean;
}

export type ReduceKind = "mesh" | "relay" | "scatter";

/** Above this many members, "auto" picks the scatter reduce over the mesh (see docs/cluster.md). */
export const SCATTER_ABOVE = 4;

/** Sends frames to one other member (or the hub). */
export interface Link {
  send(frame: Buffer): void;
  /**
   * Nothing of what was sent is still queued (the socket has handed every byte to the kernel, or
   * to TLS): a frame buffer sent on this link may be written again. Absent: never assume so.
   */
  idle?(): boolean;
}

/** A step waits this long at most for a partial sum before failing (a member hangs). */
const WAIT_MS = 120_000;

/** The ranks holding a part of sync `seq` (odd: feed-forward, even: attention), ascending. */
export function holdersOf(members: readonly MemberInfo[], seq: number): number[] {
  return members.filter((m) => ((seq & 1) === 1 ? m.ffn : m.attn)).map((m) => m.rank).sort((a, b) => a - b);
}

function partialFrame(step: number, seq: number, values: Float32Array): Buffer {
  return encodeFrame(MSG.PARTIAL, step, encodePartial(step, seq, values));
}

/**
 * The inbox key of (member, step, sync) as one number, not a string per partial sum: 6 bits of
 * member (MAX_MEMBERS = 64), 17 of sync (16 bits of index, the GATHER bit), 30 of step (two steps
 * in flight are never 2^30 apart).
 */
function keyOf(from: number, step: number, seq: number): number {
  return (step & 0x3fffffff) * 0x800000 + ((seq & 0xffff) | (seq >>> 31 << 16)) * 64 + from;
}

/** A received partial sum, copied into a buffer that is used again once its sync is added. */
interface Received {
  /** Capacity: a whole step's values. */
  readonly f32: Float32Array;
  /** The same memory as bytes (the socket's bytes are copied here). */
  readonly bytes: Buffer;
  /** The values of this partial sum: f32's first n (the view is kept while n stays the same). */
  view: Float32Array;
}

function labelOf(members: readonly MemberInfo[], rank: number): string {
  return members.find((m) => m.rank === rank)?.label ?? `rank ${rank}`;
}

/** Bytes a member's reduce moved (reported in DONE). */
export interface ReduceTraffic {
  bytesSent: number;
  bytesReceived: number;
}

/**
 * What the mesh and the scatter share: links to every other member, an inbox of the PARTIAL
 * frames received (keyed by member, step and sync), traffic counters.
 */
abstract class LinkedBase implements AllReduce, ReduceTraffic {
  readonly links = new Map<number, Link>();
  protected readonly inbox: Inbox<Received, number>;
  /** Receive buffers free for the next partial sum, and those of the sync being added (freed at the next reduce). */
  private readonly free: Received[] = [];
  private readonly used: Received[] = [];
  /** The parts of the sync being added, in rank order (reused). */
  protected readonly parts: Float32Array[] = [];
  protected readonly waited = { v: false };
  protected readonly holders: [number[], number[]];
  protected readonly acc: Float32Array;
  bytesSent = 0;
  bytesReceived = 0;

  constructor(
    readonly rank: number,
    readonly members: readonly MemberInfo[],
    protected readonly dimP: number,
    batch: number,
    /** Called before waiting for partial sums (keep the event loop polling). */
    private readonly onWait: () => void,
    protected readonly what: string,
  ) {
    this.holders = [holdersOf(members, 0), holdersOf(members, 1)];
    this.acc = new Float32Array(batch * dimP);
    // a member is at most a sync or two ahead of another (each needs every part to go on): a few
    // values per member and kind (the scatter's parts and summed chunks), no more (inbox.ts)
    this.inbox = new Inbox<Received, number>(WAIT_MS, (key) => `${what}: no partial sum from ${labelOf(members, key % 64)}`, 8 * members.length + 8);
  }

  /** A new sync starts: the buffers of the last one's received parts are free again (its sum has been added). */
  protected startSync(): void {
    for (const r of this.used) this.free.push(r);
    this.used.length = 0;
    this.parts.length = 0;
    this.waited.v = false;
  }

  abstract reduce(step: number, seq: number, own: Float32Array | null, nTok: number): Promise<Float32Array>;

  /** Partial sums received and not yet used. */
  get pending(): number {
    return this.inbox.size;
  }

  /** A PARTIAL frame arrived from member `from` (a malformed one throws a ProtocolError). */
  deliver(from: number, f: Frame): void {
    const body = f.body;
    if (body.length > 8 + 4 * this.acc.length) throw new ProtocolError(`${this.what}: a partial sum of ${body.length} bytes, more than a step of this mesh holds`, "bad-body");
    checkPartialBody(body);
    const step = body.readUInt32LE(0), seq = body.readUInt32LE(4);
    if ((seq & 0x7fffffff) > 0xffff) throw new ProtocolError(`${this.what}: sync index ${seq & 0x7fffffff} out of range`, "bad-body");
    syncTrace?.arrival(step, seq);
    const r = this.free.pop() ?? this.newReceived();
    const n = (body.length - 8) / 4;
    body.copy(r.bytes, 0, 8);
    if (r.view.length !== n) r.view = r.f32.subarray(0, n);
    this.bytesReceived += HEADER_BYTES + body.length;
    try {
      this.inbox.put(keyOf(from, step, seq), r);
    } catch (e) {
      this.free.push(r);
      throw e;
    }
  }

  private newReceived(): Received {
    const f32 = new Float32Array(this.acc.length);
    return { f32, bytes: Buffer.from(f32.buffer, f32.byteOffset, f32.byteLength), view: f32 };
  }

  /** A link is gone: every wait fails now, and every later step. */
  fail(e: Error): void {
    this.inbox.fail(e);
  }

  protected send(to: number, step: number, seq: number, values: Float32Array): void {
    const frame = partialFrame(step, seq, values);
    this.links.get(to)!.send(frame);
    this.bytesSent += frame.length;
  }

  /** Member `from`'s values for (step, seq), which must be `want` long; `waited.v` is set once the first wait starts. */
  protected async take(from: number, step: number, seq: number, want: number, waited: { v: boolean }): Promise<Float32Array> {
    let r = this.inbox.take(keyOf(from, step, seq));
    if (r instanceof Promise) {
      if (!waited.v) this.onWait();
      waited.v = true;
      r = await r;
    }
    this.used.push(r);
    const v = r.view;
    if (v.length !== want) throw new LlameshError(`${this.what}: ${labelOf(this.members, from)} sent ${v.length} values for sync ${seq & ~GATHER} of step ${step}, expected ${want}`);
    return v;
  }
}

export class MeshReduce extends LinkedBase {
  /** The last PARTIAL frame sent, written again for the next sync when every link has sent it all. */
  private frame: Buffer | null = null;
  private frameBytes: Buffer | null = null;
  private frameValues: Float32Array | null = null;

  constructor(rank: number, members: readonly MemberInfo[], dimP: number, batch: number, onWait: () => void = () => undefined) {
    super(rank, members, dimP, batch, onWait, "mesh");
  }

  /** This sync's PARTIAL frame, in the last one's buffer when no link still holds it (no 8 KB buffer per sync). */
  private frameOf(step: number, seq: number, own: Float32Array): Buffer {
    const n = HEADER_BYTES + 8 + own.byteLength;
    let reuse = this.frameBytes !== null && this.frameBytes.length >= n;
    if (reuse) for (const link of this.links.values()) if (!link.idle?.()) reuse = false;
    if (!reuse) {
      this.frameBytes = Buffer.allocUnsafeSlow(HEADER_BYTES + 8 + 4 * this.acc.length);
      this.frameValues = new Float32Array(this.frameBytes.buffer, this.frameBytes.byteOffset + HEADER_BYTES + 8, this.acc.length);
      this.frame = null;
    }
    const b = this.frameBytes!;
    if (this.frame === null || this.frame.length !== n) this.frame = b.subarray(0, n);
    writePartialHead(b, step, seq, own.byteLength);
    this.frameValues!.set(own);
    return this.frame;
  }

  async reduce(step: number, seq: number, own: Float32Array | null, nTok: number): Promise<Float32Array> {
    const t0 = syncTrace ? performance.now() : 0;
    this.startSync();
    const len = nTok * this.dimP;
    if (own) {
      const frame = this.frameOf(step, seq, own);
      for (const link of this.links.values()) link.send(frame);
      this.bytesSent += frame.length * this.links.size;
    }
    const t1 = syncTrace ? performance.now() : 0;
    const parts = this.parts;
    for (const r of this.holders[seq & 1]!) parts.push(r === this.rank ? own! : await this.take(r, step, seq, len, this.waited));
    const sum = sumPartials(parts, len, this.acc);
    syncTrace?.sync(step, seq, t0, t1, performance.now());
    return sum;
  }
}

/** Bit 31 of a PARTIAL's sync index marks a summed chunk (the all-gather half of ScatterReduce). */
const GATHER = 0x80000000;

/** Chunk j of n over `len` values: [start, end). */
function chunkOf(len: number, j: number, n: number): [number, number] {
  return [Math.floor((len * j) / n), Math.floor((len * (j + 1)) / n)];
}

export class ScatterReduce extends LinkedBase {
  private readonly ranks: number[];
  private readonly out: Float32Array;

  constructor(rank: number, members: readonly MemberInfo[], dimP: number, batch: number, onWait: () => void = () => undefined) {
    super(rank, members, dimP, batch, onWait, "scatter");
    this.ranks = members.map((m) => m.rank).sort((a, b) => a - b);
    this.out = new Float32Array(batch * dimP);
  }

  async reduce(step: number, seq: number, own: Float32Array | null, nTok: number): Promise<Float32Array> {
    const len = nTok * this.dimP;
    const n = this.ranks.length;
    const me = this.ranks.indexOf(this.rank);
    this.startSync();
    const waited = this.waited;
    // scatter: chunk j of this member's part to member j
    if (own) {
      this.ranks.forEach((r, j) => {
        if (r === this.rank) return;
        const [a, b] = chunkOf(len, j, n);
        this.send(r, step, seq, own.subarray(a, b));
      });
    }
    // reduce this member's chunk, in rank order, then send it to everyone
    const [a, b] = chunkOf(len, me, n);
    const parts = this.parts;
    for (const r of this.holders[seq & 1]!) parts.push(r === this.rank ? own!.subarray(a, b) : await this.take(r, step, seq, b - a, waited));
    const mine = sumPartials(parts, b - a, this.acc);
    for (const r of this.ranks) if (r !== this.rank) this.send(r, step, (seq | GATHER) >>> 0, mine.subarray(0, b - a));
    this.out.set(mine.subarray(0, b - a), a);
    // gather: every other member's summed chunk
    for (const [j, r] of this.ranks.entries()) {
      if (r === this.rank) continue;
      const [ca, cb] = chunkOf(len, j, n);
      this.out.set(await this.take(r, step, (seq | GATHER) >>> 0, cb - ca, waited), ca);
    }
    return this.out.subarray(0, len);
  }
}

/** A member's side of the relay: its parts go to the hub, the sums come back from it. */
export class RelayReduce implements AllReduce, ReduceTraffic {
  private readonly inbox = new Inbox<Float32Array>(WAIT_MS, () => "relay: no sum from the client", 16);
  bytesSent = 0;
  bytesReceived = 0;

  constructor(
    readonly rank: number,
    /** Hands this member's partial sums of a sync to the hub (a frame to the client, or a direct call). */
    private readonly toHub: (step: number, seq: number, values: Float32Array) => number,
    private readonly onWait: () => void = () => undefined,
  ) {}

  /** A PARTIAL frame from the hub: the sum of a sync. */
  deliver(f: Frame): void {
    const { step, seq, values } = decodePartial(f.body);
    this.bytesReceived += HEADER_BYTES + f.body.length;
    this.putSum(step, seq, values);
  }

  putSum(step: number, seq: number, values: Float32Array): void {
    this.inbox.put(`${step}:${seq}`, values);
  }

  fail(e: Error): void {
    this.inbox.fail(e);
  }

  async reduce(step: number, seq: number, own: Float32Array | null): Promise<Float32Array> {
    if (own) this.bytesSent += this.toHub(step, seq, own);
    const v = this.inbox.take(`${step}:${seq}`);
    if (!(v instanceof Promise)) return v;
    this.onWait();
    return v;
  }
}

/**
 * The client's side of the relay: collects each sync's partial sums from the members that hold a
 * part, adds them in rank order, and sends the sum to every worker member (and to the client's own
 * member, if it has a share).
 */
export class RelayHub {
  private readonly holders: [number[], number[]];
  private readonly parts = new Map<string, Map<number, Float32Array>>();
  private readonly acc: Float32Array;
  private failed: Error | null = null;

  constructor(
    readonly members: readonly MemberInfo[],
    dimP: number,
    batch: number,
    /** Links to the worker members, by rank. */
    private readonly workers: ReadonlyMap<number, Link>,
    /** The client's own member, when it has a share. */
    private readonly local: RelayReduce | null,
  ) {
    this.holders = [holdersOf(members, 0), holdersOf(members, 1)];
    this.acc = new Float32Array(batch * dimP);
  }

  /** Syncs with some parts in and some still missing. */
  get pending(): number {
    return this.parts.size;
  }

  /** A worker's PARTIAL frame (a malformed one throws a ProtocolError). */
  deliver(from: number, f: Frame): void {
    const { step, seq, values } = decodePartial(f.body);
    this.contribute(from, step, seq, values);
  }

  /** Member `from`'s partial sums of sync `seq` of step `step`. */
  contribute(from: number, step: number, seq: number, values: Float32Array): void {
    if (this.failed) return;
    const holders = this.holders[seq & 1]!;
    if (!holders.includes(from)) throw new LlameshError(`relay: ${labelOf(this.members, from)} sent a partial sum of sync ${seq} it holds no part of`);
    const key = `${step}:${seq}`;
    let got = this.parts.get(key);
    if (!got) this.parts.set(key, (got = new Map()));
    got.set(from, values);
    if (got.size < holders.length) return;
    this.parts.delete(key);
    const sum = sumPartials(holders.map((r) => got.get(r)!), values.length, this.acc);
    const frame = partialFrame(step, seq, sum);
    for (const link of this.workers.values()) link.send(frame);
    this.local?.putSum(step, seq, sum.slice());
  }

  /** The step cannot complete (a member is lost): forget what was collected. */
  fail(e: Error): void {
    this.failed = e;
    this.parts.clear();
    this.local?.fail(e);
  }
}

/** The reductions whose members link to each other (LINK/PEER), as opposed to the relay. */
export type LinkedReduce = MeshReduce | ScatterReduce;

export function isLinked(r: unknown): r is LinkedReduce {
  return r instanceof MeshReduce || r instanceof ScatterReduce;
}
