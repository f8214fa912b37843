/**
 * Mesh mode: the nodes add up their partial sums among themselves, without the client.
 *
 * In the star (client.ts), every sync of a layer is a round trip through the client: it sends
 * the normalised input, wakes up for each reply, adds the partial sums and sends the next input.
 * In the mesh, every member (each worker, and the client when it has a share) keeps its own copy
 * of the residual stream; per sync it normalises and quantizes it itself, computes its part, sends
 * the partial sum straight to every other member and adds theirs in rank order. The client only
 * sends each token's embedding (STEP) and collects the logits rows (DONE): a sync costs one
 * one-way trip instead of a round trip, and the client's machine is free while a token runs.
 *
 * Every member adds the same partial sums in the same (rank) order, with the same kernels, so
 * every copy of the residual stream is identical, and identical to the star's (which adds them in
 * node order too). Traffic per sync: each member with a part sends dim floats to each other
 * member, so a node's link carries (N-1) x dim floats each way, against N x dim at the star's
 * client.
 */
import type { Arena } from "../kernels/arena.js";
import type { KernelBackend } from "../kernels/kernels.js";
import type { LlamaConfig } from "../model/config.js";
import { LlameshError } from "../core/errors.js";
import { normIndex } from "../engine/weights.js";
import { decodePartial, encodeFrame, encodePartial, HEADER_BYTES, MSG, type Frame, type StepTimes } from "./protocol.js";
import { ResidualStream } from "../engine/residual.js";
import type { ModelSlice } from "../engine/slice.js";

/** A member of the mesh as every member knows it (ranks are the plan's node order). */
export interface MemberInfo {
  rank: number;
  /** host:port of a worker, "client" for the client's own share. */
  label: string;
  /** Where the other workers reach this worker (absent for the client). */
  host?: string;
  port?: number;
  attn: boolean;
  ffn: boolean;
  logits: boolean;
}

/** Sends frames to one other member. */
export interface MeshLink {
  send(frame: Buffer): void;
}

/** A step waits this long at most for a partial sum before failing (a member hangs). */
const WAIT_MS = 120_000;

/** Keeps the event loop polling (setImmediate) until `until`, so that a reply is seen at once. */
export class Poller {
  private until = 0;
  private running = false;

  keep(ms: number): void {
    if (ms <= 0) return;
    this.until = Math.max(this.until, performance.now() + ms);
    if (this.running) return;
    this.running = true;
    const loop = (): void => {
      if (performance.now() < this.until) setImmediate(loop);
      else this.running = false;
    };
    setImmediate(loop);
  }
}

export class MeshMember {
  private readonly stream: ResidualStream;
  private readonly attnRanks: number[];
  private readonly ffnRanks: number[];
  readonly links = new Map<number, MeshLink>();
  private readonly inbox = new Map<string, Float32Array>();
  private readonly waiters = new Map<string, { resolve: (v: Float32Array) => void; reject: (e: Error) => void }>();
  private failed: Error | null = null;
  private received = 0;

  constructor(
    readonly config: LlamaConfig,
    readonly node: ModelSlice,
    readonly rank: number,
    readonly members: MemberInfo[],
    norms: Float32Array,
    backend: KernelBackend,
    /** Called before waiting for partial sums (keep the event loop polling). */
    private readonly onWait: () => void = () => undefined,
  ) {
    this.stream = new ResidualStream(config, norms, node.batch, backend);
    this.attnRanks = members.filter((m) => m.attn).map((m) => m.rank).sort((p, q) => p - q);
    this.ffnRanks = members.filter((m) => m.ffn).map((m) => m.rank).sort((p, q) => p - q);
  }

  /** The arena of this member's residual stream and norms. */
  get memory(): Arena {
    return this.stream.arena;
  }

  private label(rank: number): string {
    return this.members.find((m) => m.rank === rank)?.label ?? `rank ${rank}`;
  }

  /** Done with this member, for `why` (its slice is not: the worker may keep it for the next client). */
  dispose(why: string): void {
    this.fail(new LlameshError(why));
    this.stream.dispose();
  }

  /** A PARTIAL frame arrived from member `from` (a malformed one throws a ProtocolError). */
  deliver(from: number, f: Frame): void {
    const { step, seq, values } = decodePartial(f.body);
    this.received += HEADER_BYTES + f.body.length;
    const key = `${from}:${step}:${seq}`;
    const w = this.waiters.get(key);
    if (w) {
      this.waiters.delete(key);
      w.resolve(values);
    } else {
      this.inbox.set(key, values);
    }
  }

  /** A link is gone: every wait fails now, and every later step. */
  fail(e: Error): void {
    if (!this.failed) this.failed = e;
    for (const w of this.waiters.values()) w.reject(e);
    this.waiters.clear();
  }

  private take(from: number, step: number, seq: number): Float32Array | Promise<Float32Array> {
    const key = `${from}:${step}:${seq}`;
    const v = this.inbox.get(key);
    if (v) {
      this.inbox.delete(key);
      return v;
    }
    if (this.failed) throw this.failed;
    return new Promise<Float32Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(key);
        reject(new LlameshError(`mesh: no partial sum from ${this.label(from)} within ${WAIT_MS / 1000} s`));
      }, WAIT_MS);
      timer.unref();
      this.waiters.set(key, {
        resolve: (x) => {
          clearTimeout(timer);
          resolve(x);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  /**
   * One forward step of nTok tokens at pos (x0: their embeddings, nTok x dimP): every layer with
   * the others, then this member's rows of the logits of the last token (null without any).
   */
  async step(step: number, pos: number, nTok: number, x0: Float32Array): Promise<{ times: StepTimes; logits: Float32Array | null }> {
    const c = this.config;
    const node = this.node;
    if (this.failed) throw this.failed;
    if (!(nTok >= 1 && nTok <= node.batch)) throw new RangeError(`step of ${nTok} tokens, expected 1..${node.batch}`);
    if (pos + nTok > node.seqLen) throw new RangeError(`step: positions up to ${pos + nTok} exceed the context ${node.seqLen}`);
    if (x0.length !== nTok * this.stream.dimP) throw new RangeError(`step: ${x0.length} embedding values, expected ${nTok} x ${this.stream.dimP}`);
    this.stream.values(nTok).set(x0);
    const times: StepTimes = { computeUs: [], waitUs: [], logitsUs: 0, bytesSent: 0, bytesReceived: 0 };
    const nLinks = this.links.size;
    for (let l = 0; l < c.nLayers; l++) {
      for (const ffn of [false, true]) {
        const seq = normIndex(l, ffn);
        const holders = ffn ? this.ffnRanks : this.attnRanks;
        const t0 = performance.now();
        let own: Float32Array | null = null;
        if (holders.includes(this.rank)) {
          const xq = this.stream.normQ(seq, nTok);
          own = ffn ? node.ffn(l, nTok, xq) : node.attention(l, pos, nTok, xq);
          const frame = encodeFrame(MSG.PARTIAL, step, encodePartial(step, seq, own));
          for (const link of this.links.values()) link.send(frame);
          times.bytesSent += frame.length * nLinks;
        }
        const t1 = performance.now();
        const parts: Float32Array[] = [];
        let waited = false;
        for (const r of holders) {
          if (r === this.rank) {
            parts.push(own!);
            continue;
          }
          let v = this.take(r, step, seq);
          if (v instanceof Promise) {
            if (!waited) this.onWait();
            waited = true;
            v = await v;
          }
          parts.push(v);
        }
        this.stream.addPartials(parts, nTok);
        times.computeUs.push((t1 - t0) * 1000);
        times.waitUs.push((performance.now() - t1) * 1000);
      }
    }
    let logits: Float32Array | null = null;
    if (node.hasLogits) {
      const t0 = performance.now();
      logits = node.logits(this.stream.normQ(2 * c.nLayers, nTok, true)).slice();
      times.logitsUs = (performance.now() - t0) * 1000;
    }
    times.bytesReceived = this.received; // (a fast member's first partial of the next step may count here)
    this.received = 0;
    return { times, logits };
  }
}
