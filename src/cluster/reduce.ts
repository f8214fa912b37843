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
import { decodePartial, encodeFrame, encodePartial, HEADER_BYTES, MSG, ProtocolError, type Frame } from "./protocol.js";

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
  protected readonly inbox: Inbox<Float32Array>;
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
    this.inbox = new Inbox(WAIT_MS, (key) => `${what}: no partial sum from ${labelOf(members, Number(key.split(":")[0]))}`, 8 * members.length + 8);
  }

  abstract reduce(step: number, seq: number, own: Float32Array | null, nTok: number): Promise<Float32Array>;

  /** Partial sums received and not yet used. */
  get pending(): number {
    return this.inbox.size;
  }

  /** A PARTIAL frame arrived from member `from` (a malformed one throws a ProtocolError). */
  deliver(from: number, f: Frame): void {
    if (f.body.length > 8 + 4 * this.acc.length) throw new ProtocolError(`${this.what}: a partial sum of ${f.body.length} bytes, more than a step of this mesh holds`, "bad-body");
    const { step, seq, values } = decodePartial(f.body);
    syncTrace?.arrival(step, seq);
    this.bytesReceived += HEADER_BYTES + f.body.length;
    this.inbox.put(`${from}:${step}:${seq}`, values);
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
    let v = this.inbox.take(`${from}:${step}:${seq}`);
    if (v instanceof Promise) {
      if (!waited.v) this.onWait();
      waited.v = true;
      v = await v;
    }
    if (v.length !== want) throw new LlameshError(`${this.what}: ${labelOf(this.members, from)} sent ${v.length} values for sync ${seq & ~GATHER} of step ${step}, expected ${want}`);
    return v;
  }
}

export class MeshReduce extends LinkedBase {
  constructor(rank: number, members: readonly MemberInfo[], dimP: number, batch: number, onWait: () => void = () => undefined) {
    super(rank, members, dimP, batch, onWait, "mesh");
  }

  async reduce(step: number, seq: number, own: Float32Array | null, nTok: number): Promise<Float32Array> {
    const t0 = syncTrace ? performance.now() : 0;
    const len = nTok * this.dimP;
    if (own) {
      const frame = partialFrame(step, seq, own);
      for (const link of this.links.values()) link.send(frame);
      this.bytesSent += frame.length * this.links.size;
    }
    const t1 = syncTrace ? performance.now() : 0;
    const parts: Float32Array[] = [];
    const waited = { v: false };
    for (const r of this.holders[seq & 1]!) parts.push(r === this.rank ? own! : await this.take(r, step, seq, len, waited));
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
    const waited = { v: false };
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
    const parts: Float32Array[] = [];
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
