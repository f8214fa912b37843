/**
 * `node dist/bench/csv-analysis.js FILE.csv ...`: where a cluster token's time goes, from the
 * per-sync CSV of `--perf-csv` / `bench:cluster --csv PREFIX`. Per token (median over tokens): the
 * slowest node's compute summed over the syncs (the critical path), the spread between the
 * fastest and slowest node per sync (stragglers), and the wait of the node that finished last per
 * sync (the exchange itself: it waited only for the wire); and each node's mean compute.
 */
import * as fs from "node:fs";
import { median } from "./cluster-net.js";

interface Part {
  node: string;
  comp: number;
  net: number;
}

export function analyse(file: string): string {
  const rows = fs.readFileSync(file, "utf8").trim().split("\n").slice(1).map((l) => l.split(","));
  const byToken = new Map<string, Map<string, Part[]>>();
  for (const [pos, , layer, op, node, , comp, net] of rows) {
    if (op === "logits" || pos === undefined || node === undefined) continue;
    const syncs = byToken.get(pos) ?? new Map<string, Part[]>();
    byToken.set(pos, syncs);
    const key = `${layer}:${op}`;
    syncs.set(key, [...(syncs.get(key) ?? []), { node, comp: Number(comp), net: Number(net) }]);
  }
  if (byToken.size === 0) throw new Error(`${file}: no per-sync rows (a --perf-csv / bench:cluster --csv file was expected)`);
  const crit: number[] = [], spread: number[] = [], exchange: number[] = [], count: number[] = [];
  const nodeComp = new Map<string, number>();
  for (const syncs of byToken.values()) {
    let c = 0, s = 0, e = 0;
    for (const parts of syncs.values()) {
      const comps = parts.map((p) => p.comp);
      const last = parts.reduce((a, b) => (b.comp > a.comp ? b : a));
      c += Math.max(...comps);
      s += Math.max(...comps) - Math.min(...comps);
      e += last.net;
      for (const p of parts) nodeComp.set(p.node, (nodeComp.get(p.node) ?? 0) + p.comp / byToken.size);
    }
    crit.push(c); spread.push(s); exchange.push(e); count.push(syncs.size);
  }
  const perSync = (1000 * median(exchange)) / Math.max(1, median(count));
  const nodes = [...nodeComp].map(([k, v]) => `${k} ${v.toFixed(2)} ms`).join(", ");
  return `${file}: ${byToken.size} tokens, ${median(count)} syncs/token; per token (median): critical compute ${median(crit).toFixed(2)} ms, straggle ${median(spread).toFixed(2)} ms, exchange ${median(exchange).toFixed(2)} ms (${perSync.toFixed(0)} µs/sync); mean compute per node: ${nodes}`;
}

if (process.argv[1]?.endsWith("csv-analysis.js")) for (const f of process.argv.slice(2)) console.log(analyse(f));
