/**
 * The planner: which part of every layer each node computes. A pure function of the model shape
 * and the nodes' shares, so it can be re-run at any time (e.g. over the nodes left after one is
 * lost) and gives the same answer for the same input.
 *
 * - Attention is split by groups of KV heads. A node multiplies its heads' attention output by
 *   its COLUMNS of o_proj, and that product quantizes its input in blocks (32 columns, 256 for
 *   the K-quants); for the blocks to be the very blocks of the single-node pass, a node's columns
 *   must start on a multiple of the block. The unit is therefore lcm(headDim * nHeads/nKvHeads,
 *   block) columns, i.e. `kvPerUnit` KV heads (Q8_0: stories260K 2 of its 4, TinyLlama 1 of its
 *   4, Llama 2 7B 1 of 32; Q4_K: Llama 2 7B 2 of 32).
 * - The feed-forward is split by blocks of hidden units (rows of gate/up, columns of down; 32, or
 *   256 when down is a K-quant), counted over the hidden size padded to 32.
 * - The classifier is split by blocks of 32 vocabulary rows.
 *
 * Units are shared out by the largest-remainder method, in node order, as contiguous ranges;
 * a share of 0 gets nothing.
 */
import { LlameshError } from "../core/errors.js";
import type { NodeSlice } from "../engine/slice.js";

export type { NodeSlice };

export interface PlanShape {
  dim: number;
  hiddenDim: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  vocabSize: number;
}


export interface ClusterPlan {
  shares: number[];
  kvPerUnit: number;
  attnUnits: number;
  ffnUnits: number;
  vocabUnits: number;
  nodes: NodeSlice[];
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** Split `n` units in proportion to `shares` (largest remainder; ties to the earlier node). */
export function apportion(n: number, shares: readonly number[]): number[] {
  const total = shares.reduce((a, b) => a + b, 0);
  if (!(total > 0)) throw new LlameshError("--workers / --local-share: at least one node needs a share above 0");
  const exact = shares.map((s) => (n * s) / total);
  const counts = exact.map((e) => Math.floor(e + 1e-9));
  let left = n - counts.reduce((a, b) => a + b, 0);
  const order = exact.map((e, i) => ({ i, r: e - counts[i]! })).filter((o) => shares[o.i]! > 0).sort((a, b) => b.r - a.r || a.i - b.i);
  for (let k = 0; left > 0; k = (k + 1) % order.length, left--) counts[order[k]!.i]!++;
  return counts;
}

/**
 * `blocks`: the widest block (values) among o_proj's types (attn) and down's (ffn): a node's
 * columns of those start on a multiple of it. Default 32 (Q8_0).
 */
export function planCluster(shape: PlanShape, shares: readonly number[], blocks: { attn: number; ffn: number } = { attn: 32, ffn: 32 }): ClusterPlan {
  if (shares.length === 0) throw new LlameshError("shares: no nodes");
  for (const s of shares) if (!(s >= 0) || !Number.isFinite(s)) throw new LlameshError(`shares: ${s} is not a number >= 0`);
  const g = shape.nHeads / shape.nKvHeads;
  const groupCols = shape.headDim * g;
  const unitCols = (groupCols * blocks.attn) / gcd(groupCols, blocks.attn);
  const kvPerUnit = unitCols / groupCols;
  const attnUnits = Math.ceil(shape.nKvHeads / kvPerUnit);
  const ffnBlocks = blocks.ffn / 32; // blocks of 32 hidden units per unit
  const ffnUnits = Math.ceil(shape.hiddenDim / blocks.ffn);
  const vocabUnits = Math.ceil(shape.vocabSize / 32);
  const a = apportion(attnUnits, shares);
  const f = apportion(ffnUnits, shares);
  const v = apportion(vocabUnits, shares);
  const nodes: NodeSlice[] = [];
  let au = 0;
  let fu = 0;
  let vu = 0;
  for (let i = 0; i < shares.length; i++) {
    const hbEnd = Math.ceil(shape.hiddenDim / 32);
    nodes.push({
      kv0: Math.min(au * kvPerUnit, shape.nKvHeads),
      kv1: Math.min((au + a[i]!) * kvPerUnit, shape.nKvHeads),
      hb0: Math.min(fu * ffnBlocks, hbEnd),
      hb1: Math.min((fu + f[i]!) * ffnBlocks, hbEnd),
      v0: Math.min(vu * 32, shape.vocabSize),
      v1: Math.min((vu + v[i]!) * 32, shape.vocabSize),
    });
    au += a[i]!;
    fu += f[i]!;
    vu += v[i]!;
  }
  return { shares: [...shares], kvPerUnit, attnUnits, ffnUnits, vocabUnits, nodes };
}
