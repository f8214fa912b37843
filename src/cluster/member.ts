/**
 * A member of the cluster's step program: a node's ModelSlice, its own copy of the residual stream
 * and the way its syncs are reduced (mesh, scatter or relay, reduce.ts). Every worker holds one per session,
 * and so does the client when it computes a share itself. A step is engine/step.ts's layer loop;
 * the client sends the step's embeddings (STEP) and gathers the logits rows (DONE).
 */
import type { Arena } from "../kernels/arena.js";
import type { KernelBackend } from "../kernels/kernels.js";
import { LlameshError } from "../core/errors.js";
import { ResidualStream } from "../engine/residual.js";
import type { ModelSlice } from "../engine/slice.js";
import { runStep, stepTokens, type StepInput } from "../engine/step.js";
import type { MemberTimes } from "./protocol.js";
import type { LinkedReduce, RelayReduce } from "./reduce.js";
import { syncTrace } from "./sync-trace.js";

export class Member {
  private readonly stream: ResidualStream;
  private failed: Error | null = null;

  constructor(
    readonly node: ModelSlice,
    readonly rank: number,
    norms: Float32Array,
    backend: KernelBackend,
    readonly reduce: LinkedReduce | RelayReduce,
  ) {
    this.stream = new ResidualStream(node.config, norms, node.batch, backend);
  }

  /** The arena of this member's residual stream and norms. */
  get memory(): Arena {
    return this.stream.arena;
  }

  /** This member can take no more steps (a link is gone, the client aborted, it was replaced). */
  fail(e: Error): void {
    if (!this.failed) this.failed = e;
    this.reduce.fail(e);
  }

  /** Done with this member, for `why` (its slice is not: the worker may keep it for the next client). */
  dispose(why: string): void {
    this.fail(new LlameshError(why));
    this.stream.dispose();
  }

  /**
   * One step: x0 holds the tokens' embeddings (all segments' tokens x dimP); returns this member's
   * logits rows for each segment's last token (segment after segment, vRows each; a copy).
   */
  async step(input: StepInput, x0: Float32Array): Promise<{ times: MemberTimes; logits: Float32Array | null }> {
    const node = this.node;
    if (this.failed) throw this.failed;
    const nTok = stepTokens(input);
    if (!(nTok >= 1 && nTok <= node.batch)) throw new RangeError(`step of ${nTok} tokens, expected 1..${node.batch}`);
    for (const g of input.segments) {
      if (!(g.slot < node.slots)) throw new RangeError(`step: slot ${g.slot} outside 0..${node.slots - 1}`);
      if (g.pos + g.nTok > node.seqLen) throw new RangeError(`step: positions up to ${g.pos + g.nTok} exceed the context ${node.seqLen}`);
    }
    if (input.segments.length > Math.min(node.batch, node.slots)) throw new RangeError(`step of ${input.segments.length} segments, expected at most ${Math.min(node.batch, node.slots)}`);
    if (x0.length !== nTok * this.stream.dimP) throw new RangeError(`step: ${x0.length} embedding values, expected ${nTok} x ${this.stream.dimP}`);
    this.stream.values(nTok).set(x0);
    const r = this.reduce;
    const sent0 = r.bytesSent;
    const recv0 = r.bytesReceived;
    const times: MemberTimes = { computeUs: [], waitUs: [], logitsUs: 0, bytesSent: 0, bytesReceived: 0 };
    syncTrace?.step(input.step, true);
    const logits = await runStep(node, this.stream, r, input, times);
    syncTrace?.step(input.step, false);
    times.bytesSent = r.bytesSent - sent0;
    times.bytesReceived = r.bytesReceived - recv0; // (a fast member's first partial of the next step may count here)
    return { times, logits: logits ? compactRows(logits, input.segments.length, node.logitsStride, node.d.vRows) : null };
  }
}

/** n rows of `width` values out of rows laid out `stride` apart (a copy). */
function compactRows(x: Float32Array, n: number, stride: number, width: number): Float32Array {
  const out = new Float32Array(n * width);
  for (let i = 0; i < n; i++) out.set(x.subarray(i * stride, i * stride + width), i * width);
  return out;
}
