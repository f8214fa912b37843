/**
 * The report printed on stderr, modelled on the seed's: files, tensors, config, memory by layer
 * type, then prompt and generation speed and the multiply-accumulate rate achieved.
 */
import * as path from "node:path";
import type { LoadedModel } from "../engine/open.js";
import type { GenerationResult } from "../engine/generate.js";
import { formatBytes } from "../core/format.js";

/** A path as the user would type it from here, unless that climbs far up the tree. */
function relativeToCwd(p: string): string {
  const r = path.relative(process.cwd(), p);
  return r.startsWith("..") && r.split(path.sep).filter((x) => x === "..").length > 2 ? p : r || ".";
}

function table(rows: string[][], align: ("l" | "r")[]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) =>
    r.map((cell, i) => (align[i] === "r" ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join("  ").trimEnd(),
  );
}

/** `distributed`: the model runs on workers; its memory summary is the whole cluster's (each node's part comes in the cluster report). */
export function modelReport(m: LoadedModel, backendName: string, distributed = false): string[] {
  const c = m.config;
  const mem = m.memory;
  const lines: string[] = [];
  for (const f of m.files) lines.push(`Processed ${relativeToCwd(f.file)} (${formatBytes(f.bytes)})`);
  lines.push(`Loaded ${mem.tensorsLoaded} tensors in ${(m.loadMs / 1000).toFixed(2)} s, tokenizer from ${m.tokenizer.source}`);
  lines.push(
    `Config: dim ${c.dim}, hidden_dim ${c.hiddenDim}, n_layers ${c.nLayers}, n_heads ${c.nHeads}, ` +
      `n_kv_heads ${c.nKvHeads}, vocab_size ${c.vocabSize}, seq_len ${m.seqLen}` +
      (m.seqLen !== c.seqLen ? ` (model max ${c.seqLen})` : ""),
  );
  // the kernels' own layouts (e.g. Q4_0 rows interleaved by four, the same results, faster)
  const repacked = Object.entries(mem.repacked).map(([l, n]) => `${n} ${l === "Q4_0x4" ? "Q4_0 matrices interleaved by four rows (Q4_0x4)" : `matrices as ${l}`}`);
  lines.push(`Kernels: ${backendName}; ${mem.arenas} arena${mem.arenas > 1 ? "s" : ""}${repacked.length > 0 ? `; ${repacked.join(", ")}` : ""}`);
  lines.push(distributed ? "Memory by layer type, across the cluster (each node's part: Memory per node, below):" : "Memory by layer type:");
  const rows: string[][] = [["layer type", "quant", "memory", "params (M)", "bytes/param"]];
  let params = 0;
  for (const r of mem.byType) {
    params += r.params;
    rows.push([r.type, r.quant, formatBytes(r.bytes), (r.params / 1e6).toFixed(3), (r.bytes / r.params).toFixed(4)]);
  }
  for (const l of table(rows, ["l", "l", "r", "r", "r"])) lines.push(`  ${l}`);
  const total = mem.runState + mem.kvCache + mem.model;
  lines.push(`  parameters: ${(params / 1e6).toFixed(2)} M, layers: ${c.nLayers}`);
  lines.push(
    `  memory: run state ${formatBytes(mem.runState)} + KV cache (BF16) ${formatBytes(mem.kvCache)} + ` +
      `model ${formatBytes(mem.model)} = ${formatBytes(total)}`,
  );
  return lines;
}

/** `interrupted`: the caller's stop was Ctrl-C. */
export function speedReport(r: GenerationResult, macsPerToken: number, interrupted = false): string[] {
  const lines: string[] = [];
  const promptRate = r.promptTokens / (r.promptMs / 1000);
  lines.push(`Prompt: ${r.promptTokens} tokens in ${r.promptMs.toFixed(1)} ms, ${promptRate.toFixed(2)} tok/s`);
  const stop = interrupted
    ? "interrupted"
    : { length: "reached -n", eos: "end-of-sequence token", context: "context full (--max-seq-len)", stopped: "stopped by the caller" }[r.stop];
  lines.push(`Generated: ${r.tokens.length} tokens (stopped: ${stop})`);
  if (r.decodeSteps > 0) {
    const msPer = r.decodeMs / r.decodeSteps;
    const tps = 1000 / msPer;
    lines.push(`Speed: ${tps.toFixed(2)} tok/s, ${msPer.toFixed(2)} ms/token`);
    lines.push(`GMAC: ${((macsPerToken * tps) / 1e9).toFixed(2)}`);
  } else {
    lines.push("Speed: n/a (no token generated after the prompt)");
  }
  return lines;
}
