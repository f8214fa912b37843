/**
 * The nodes of a cluster plan, as the client knows them: the client's own share (a ModelSlice in
 * this process) or a worker (a connection). Both run the same step program (member.ts).
 */
import { formatBytes } from "../core/format.js";
import type { ModelSlice, NodeSlice } from "../engine/slice.js";
import type { LlamaConfig } from "../model/config.js";
import type { Connection } from "./connection.js";
import type { ClusterPlan } from "./planner.js";

/** What the client measured of one node since the last reset (stats.ts). */
export interface NodeStats {
  /** Syncs taken part in, and their total time (the node's compute plus its wait for the others). */
  rounds: number;
  rttMs: number;
  computeMs: number;
  sent: number;
  received: number;
}

export function emptyStats(): NodeStats {
  return { rounds: 0, rttMs: 0, computeMs: 0, sent: 0, received: 0 };
}

interface NodeBase {
  label: string;
  share: number;
  slice: NodeSlice;
  threads: number;
  gmac: number;
  macsPerToken: number;
  weightBytes: number;
  stats: NodeStats;
}

/** The client's own share: its slice lives in this process. */
export interface LocalNode extends NodeBase {
  kind: "local";
  model: ModelSlice;
}

/** A worker: reached over its connection. */
export interface WorkerNode extends NodeBase {
  kind: "worker";
  conn: Connection;
  /** Where the worker listens, as --workers gave it (the other workers reach it there). */
  addr: { host: string; port: number };
  weightBytesSent: number;
}

export type ClusterNode = LocalNode | WorkerNode;

export function planLines(c: LlamaConfig, plan: ClusterPlan, nodes: readonly ClusterNode[]): string[] {
  const lines = [`Plan (attention unit: ${plan.kvPerUnit} KV head${plan.kvPerUnit === 1 ? "" : "s"}; ${plan.attnUnits} attention, ${plan.ffnUnits} feed-forward, ${plan.vocabUnits} vocabulary units):`];
  const total = plan.shares.reduce((a, b) => a + b, 0);
  for (const n of nodes) {
    const s = n.slice;
    lines.push(
      `  ${n.label.padEnd(22)} share ${((100 * n.share) / total).toFixed(1).padStart(5)}%  kv heads ${s.kv0}-${s.kv1}  hidden ${s.hb0 * 32}-${Math.min(s.hb1 * 32, c.hiddenDim)}  vocab ${s.v0}-${s.v1}  weights ${formatBytes(n.weightBytes)}`,
    );
  }
  return lines;
}
