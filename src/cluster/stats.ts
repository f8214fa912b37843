/**
 * What the client learns from each step, in one place: every member's DONE (its compute and wait
 * per sync, the bytes its sums moved) goes into the nodes' counters, the cluster totals, and, only
 * when a CSV was asked for (--perf-csv), one row per step, sync and member (in the relay: per member
 * with a part in that sync). The report and the CSV are made from these.
 */
import * as fs from "node:fs";
import { formatBytes } from "../core/format.js";
import { nodeDims } from "../engine/slice.js";
import type { LlamaConfig } from "../model/config.js";
import { emptyStats, type ClusterNode } from "./nodes.js";
import { HEADER_BYTES, type MemberTimes } from "./protocol.js";
import type { MemberInfo, ReduceKind } from "./reduce.js";

export interface ClusterStats {
  /** Tokens through the cluster (prompt tokens included) and forward time. */
  tokens: number;
  forwardMs: number;
  /** Syncs (2 per layer and the logits) and the time they took, seen from the client. */
  rounds: number;
  roundMs: number;
  nodes: {
    label: string;
    share: number;
    gmac: number;
    threads: number;
    macsPerToken: number;
    weightBytes: number;
    rounds: number;
    rttMs: number;
    computeMs: number;
    sent: number;
    received: number;
  }[];
}

type Op = "attn" | "ffn" | "logits";

interface CsvRow {
  pos: number;
  nTok: number;
  layer: number;
  op: Op;
  node: string;
  rttMs: number;
  computeMs: number;
  sent: number;
  received: number;
}

/** One member's part of a step: its node, its place in the program, what it measured. */
export interface MemberReport {
  node: ClusterNode;
  info: MemberInfo;
  times: MemberTimes;
  /** Bytes of the STEP and DONE frames (0 for the client's own member). */
  stepBytes: number;
  doneBytes: number;
}

export class StepLog {
  private readonly rows: CsvRow[] = [];
  private tokens = 0;
  private steps = 0;
  private forwardMs = 0;
  private rounds = 0;
  private roundMs = 0;

  /** `csvFile`: keep per-sync rows for it (nothing is kept without one). */
  constructor(private readonly csvFile: string | undefined) {}

  /** Rows held for the CSV (stays 0 without --perf-csv, however long the run). */
  get retainedRows(): number {
    return this.rows.length;
  }

  /** One step of nTok tokens at pos through `members` (reduce `kind`), taking `ms` at the client. */
  record(kind: ReduceKind, pos: number, nTok: number, dimP: number, members: readonly MemberReport[], ms: number): void {
    const nLinks = members.length - 1;
    const holders = [members.filter((m) => m.info.attn).length, members.filter((m) => m.info.ffn).length];
    for (const m of members) {
      const t = m.times;
      const st = m.node.stats;
      let comp = t.logitsUs;
      let wait = 0;
      for (let s = 0; s < t.computeUs.length; s++) {
        comp += t.computeUs[s]!;
        wait += t.waitUs[s]!;
        if (!this.csvFile) continue;
        const ffn = (s & 1) === 1;
        const has = ffn ? m.info.ffn : m.info.attn;
        // In the mesh and the scatter every member carries out every sync itself (it adds parts): a
        // row each. In the relay the sync happens at the client: a row per member that contributes a part.
        if (kind === "relay" && !has) continue;
        const { sent, received } = syncBytes(kind, has, m.node.kind === "local", holders[s & 1]!, nLinks, nTok * dimP);
        this.rows.push({
          pos, nTok, layer: s >> 1, op: ffn ? "ffn" : "attn", node: m.node.label,
          rttMs: (t.computeUs[s]! + t.waitUs[s]!) / 1000, computeMs: t.computeUs[s]! / 1000, sent, received,
        });
      }
      if (this.csvFile && m.info.logits) {
        this.rows.push({ pos, nTok, layer: t.computeUs.length >> 1, op: "logits", node: m.node.label, rttMs: t.logitsUs / 1000, computeMs: t.logitsUs / 1000, sent: m.doneBytes, received: 0 });
      }
      st.rounds += t.computeUs.length;
      st.rttMs += (comp + wait) / 1000;
      st.computeMs += comp / 1000;
      st.sent += t.bytesSent + m.doneBytes;
      st.received += t.bytesReceived + m.stepBytes;
    }
    this.tokens += nTok;
    this.steps++;
    this.forwardMs += ms;
    this.rounds += (members[0]?.times.computeUs.length ?? 0) + 1;
    this.roundMs += ms;
  }

  reset(nodes: readonly ClusterNode[]): void {
    this.tokens = this.steps = this.forwardMs = this.rounds = this.roundMs = 0;
    this.rows.length = 0;
    for (const n of nodes) n.stats = emptyStats();
  }

  stats(nodes: readonly ClusterNode[]): ClusterStats {
    return {
      tokens: this.tokens,
      forwardMs: this.forwardMs,
      rounds: this.rounds,
      roundMs: this.roundMs,
      nodes: nodes.map((n) => ({
        label: n.label, share: n.share, gmac: n.gmac, threads: n.threads, macsPerToken: n.macsPerToken, weightBytes: n.weightBytes, ...n.stats,
      })),
    };
  }

  report(kind: ReduceKind | null, nodes: readonly ClusterNode[], config: LlamaConfig, seqLen: number, clientBytes: number): string[] {
    const lines: string[] = [];
    const tok = Math.max(1, this.tokens);
    const total = nodes.reduce((s, n) => s + n.share, 0);
    const what = kind === "mesh" ? "mesh: the nodes add their partial sums among themselves"
      : kind === "scatter" ? "scatter: each node adds up a chunk of every sum and sends it to the others" : "star: every sync through the client";
    lines.push(`Cluster (${what}): ${nodes.length} node${nodes.length === 1 ? "" : "s"}, ${this.tokens} tokens through the cluster, ${(this.rounds / tok).toFixed(1)} sync rounds per token`);
    // a node's sync = its compute + its wait for the others (and, in the star, the trip through the client)
    const rows: string[][] = [["node", "share", "syncs", "avg sync ms", "wait ms", "compute ms/tok", "sent/tok", "recv/tok", "GMAC"]];
    let netTotal = 0;
    for (const n of nodes) {
      const st = n.stats;
      const avg = st.rounds ? st.rttMs / st.rounds : 0;
      const overhead = st.rounds ? (st.rttMs - st.computeMs) / st.rounds : 0;
      if (n.kind === "worker") netTotal += st.rttMs - st.computeMs;
      const gmac = st.computeMs > 0 ? (n.macsPerToken * tok) / (st.computeMs / 1000) / 1e9 : 0;
      rows.push([
        n.label, `${((100 * n.share) / total).toFixed(1)}%`, String(st.rounds), avg.toFixed(3), overhead.toFixed(3),
        (st.computeMs / tok).toFixed(2), formatBytes(st.sent / tok), formatBytes(st.received / tok), gmac.toFixed(2),
      ]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) lines.push("  " + r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  "));
    lines.push("Memory per node (weights + KV cache):");
    lines.push(`  client (embedding, norms): ${formatBytes(clientBytes)}`);
    for (const n of nodes) {
      const kv = config.nLayers * 2 * seqLen * nodeDims(config, n.slice).kvRows * 2;
      lines.push(`  ${n.label}: ${formatBytes(n.weightBytes)} + ${formatBytes(kv)}`);
    }
    // no tok/s here: the decode speed is the one `Speed` line (these steps include the prompt's batches and replays)
    lines.push(
      `Cluster speed: ${(this.forwardMs / Math.max(1, this.steps)).toFixed(2)} ms per step over ${this.steps} steps (${this.tokens} tokens, prompt batches included), ` +
        `${(this.roundMs / Math.max(1, this.rounds)).toFixed(3)} ms per sync round`,
    );
    // Verdict: compare the network cost per token against the compute the busiest worker saved.
    const remote = nodes.filter((n) => n.kind === "worker");
    if (remote.length > 0 && nodes.length > 1) {
      const netPerTok = netTotal / remote.length / tok;
      const maxCompute = Math.max(...nodes.map((n) => n.stats.computeMs / tok));
      const saved = nodes.reduce((s, n) => s + n.stats.computeMs / tok, 0) - maxCompute;
      if (netPerTok > saved) {
        lines.push(`Verdict: the network costs more than it saves (${netPerTok.toFixed(2)} ms/token of network overhead per worker vs ${saved.toFixed(2)} ms/token of compute saved by splitting); one machine would be faster`);
      }
    }
    return lines;
  }

  writeCsv(): void {
    if (!this.csvFile) return;
    const out = ["pos,n_tokens,layer,operation,node,round_trip_ms,compute_ms,network_ms,bytes_sent,bytes_received"];
    for (const r of this.rows) {
      out.push(`${r.pos},${r.nTok},${r.layer},${r.op},${r.node},${r.rttMs.toFixed(4)},${r.computeMs.toFixed(4)},${(r.rttMs - r.computeMs).toFixed(4)},${r.sent},${r.received}`);
    }
    fs.writeFileSync(this.csvFile, out.join("\n") + "\n");
  }
}

/**
 * The bytes one member's reduce moves in one sync of `values` floats, as reduce.ts sends them:
 * the mesh sends its part to every other member; the scatter sends a chunk of its part to every
 * other member and its summed chunk to every other member (chunks of about values / members);
 * the relay sends one part to the client and gets the sum back (the client's own part moves no bytes).
 */
function syncBytes(kind: ReduceKind, has: boolean, local: boolean, holders: number, links: number, values: number): { sent: number; received: number } {
  const frame = (n: number): number => HEADER_BYTES + 8 + n * 4; // one PARTIAL of n floats
  if (kind === "mesh") return { sent: has ? frame(values) * links : 0, received: (holders - (has ? 1 : 0)) * frame(values) };
  if (kind === "scatter") {
    const chunk = frame(Math.round(values / (links + 1)));
    return { sent: (has ? links : 0) * chunk + links * chunk, received: (holders - (has ? 1 : 0)) * chunk + links * chunk };
  }
  return local ? { sent: 0, received: 0 } : { sent: has ? frame(values) : 0, received: frame(values) };
}
