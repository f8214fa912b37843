/**
 * One forward step on one node: the model's layer order, written once. A single machine runs it
 * on the whole model (forward.ts), and every member of a cluster runs it on its own slice
 * (cluster/member.ts); what differs is only how a sync adds up the nodes' partial sums (AllReduce):
 *
 *   x = embeddings of the step's tokens                         (the caller fills the stream)
 *   per layer:  x += allReduce(attention part(rmsnorm(x)))
 *               x += allReduce(feed-forward part(rmsnorm(x)))
 *   logits rows = classifier part(rmsnorm(x))                   (last token only; gathered by the caller)
 *
 * A node without a part in an operation (no attention heads, say) still takes part in the sync:
 * it receives the others' sum, so that every node's copy of the residual stream stays identical.
 */
import type { ModelSlice, Segment } from "./slice.js";
import type { ResidualStream } from "./residual.js";
import { normIndex } from "./weights.js";

/**
 * How the nodes add up their partial sums. `reduce` gets this node's partial sums of sync `seq`
 * (2 * layer for attention, 2 * layer + 1 for the feed-forward) of step `step`, or null when it has
 * no part in that operation, and returns the sum over every node with a part, added in node order
 * (residual.ts sumPartials), nTok x dimP values valid until the next call.
 */
export interface AllReduce {
  reduce(step: number, seq: number, own: Float32Array | null, nTok: number): Float32Array | Promise<Float32Array>;
}

/** One node, one machine: the sum is this node's own partial sums. */
export const LOCAL_REDUCE: AllReduce = {
  reduce(_step, seq, own) {
    if (!own) throw new RangeError(`sync ${seq}: a single node must hold every part of the model`);
    return own;
  },
};

/** What a node measured during one step: per sync, its compute and its wait for the others (µs). */
export interface StepTimes {
  computeUs: number[];
  waitUs: number[];
  /** Classifier compute (µs), 0 without vocabulary rows. */
  logitsUs: number;
}

export interface StepInput {
  /** Step number, unique per forward call of a session (keys the partial sums in flight). */
  step: number;
  /** The sequences' runs of tokens the step carries, in the order of the stream's rows. */
  segments: readonly Segment[];
}

/** Tokens a step carries (the stream's rows). */
export function stepTokens(input: StepInput): number {
  return input.segments.reduce((n, g) => n + g.nTok, 0);
}

/** Row of each segment's last token: the ones whose logits the step returns. */
export function lastRows(input: StepInput): number[] {
  const out: number[] = [];
  let t = 0;
  for (const g of input.segments) out.push((t += g.nTok) - 1);
  return out;
}

/**
 * Run every layer of `node` for the tokens whose embeddings are in `stream`, adding each sync's
 * sum through `allReduce`; returns this node's rows of the logits of each segment's last token
 * (one row per segment at node.logitsStride; a view, valid until the next step), or null when it
 * holds no vocabulary rows. With `times`, records what it measured.
 */
export async function runStep(node: ModelSlice, stream: ResidualStream, allReduce: AllReduce, input: StepInput, times?: StepTimes): Promise<Float32Array | null> {
  const { step, segments } = input;
  const nTok = stepTokens(input);
  const nLayers = node.config.nLayers;
  for (let l = 0; l < nLayers; l++) {
    for (const ffn of [false, true]) {
      const seq = normIndex(l, ffn);
      const t0 = times ? performance.now() : 0;
      const has = ffn ? node.hasFfn : node.hasAttention;
      const own = !has ? null : ffn ? node.ffn(l, nTok, stream.norm(seq, nTok)) : node.attention(l, segments, stream.norm(seq, nTok));
      const t1 = times ? performance.now() : 0;
      const sum = allReduce.reduce(step, seq, own, nTok);
      stream.add(sum instanceof Promise ? await sum : sum, nTok);
      if (times) {
        times.computeUs.push((t1 - t0) * 1000);
        times.waitUs.push((performance.now() - t1) * 1000);
      }
    }
  }
  if (!node.hasLogits) return null;
  const t0 = times ? performance.now() : 0;
  const rows = lastRows(input);
  const logits = node.logits(stream.normRows(2 * nLayers, rows), rows.length);
  if (times) times.logitsUs = (performance.now() - t0) * 1000;
  return logits;
}
