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

if (process.argv[1]?.endsWith("csv-analysis.js") && process.argv[2] !== "--trace") for (const f of process.argv.slice(2)) console.log(analyse(f));

interface TraceSync {
  who: string;
  /** Own part written (after enter), and when the peer's part reached this node's reduce (NaN: not seen). */
  sent: number;
  arr: number;
  step: number;
  seq: number;
  enter: number;
  exit: number;
  /** Compute before it: from the previous sync's exit (or the step's start) to enter. */
  comp: number;
}

interface TraceFile {
  who: string;
  syncs: TraceSync[];
  gcs: { t: number; ms: number; kind: number }[];
  /** Per step start: [time, run ns, wait ns] at begin and end. */
  steps: { step: number; t0: number; t1: number; runNs: number; waitNs: number }[];
}

function readTrace(file: string): TraceFile {
  const who = file.replace(/^.*?-(worker-[ab]|tls-worker-[ab]|ab-worker-[ab]|client-run\d+)-\d+\.trace$/, "$1");
  const out: TraceFile = { who, syncs: [], gcs: [], steps: [] };
  const open = new Map<number, [number, number, number]>();
  const rows = fs.readFileSync(file, "utf8").trim().split("\n").slice(1);
  for (const l of rows) {
    const [kind, a, b, t, x, y] = l.split(",");
    if (kind === "gc") out.gcs.push({ t: Number(t), ms: Number(x), kind: Number(a) });
    else if (kind === "step") {
      const step = Number(a);
      if (b === "1") open.set(step, [Number(t), Number(x), Number(y)]);
      else {
        const o = open.get(step);
        if (o) out.steps.push({ step, t0: o[0], t1: Number(t), runNs: Number(x) - o[1], waitNs: Number(y) - o[2] });
        open.delete(step);
      }
    }
  }
  // syncs after steps so that the step start is known (a sync's compute starts at the step's start or the previous sync's end)
  const stepStart = out.steps.map((s) => s.t0).sort((p, q) => p - q);
  const lastExit = new Map<number, number>();
  const arrivals = new Map<string, number[]>();
  for (const l of rows) {
    const [kind, a, b, t] = l.split(",");
    if (kind === "arr") arrivals.set(`${a}:${b}`, [...(arrivals.get(`${a}:${b}`) ?? []), Number(t)]);
  }
  for (const l of rows) {
    const [kind, a, b, t, x, y] = l.split(",");
    if (kind !== "sync") continue;
    const step = Number(a), seq = Number(b), enter = Number(t), exit = Number(x);
    let from = lastExit.get(step);
    if (from === undefined || enter - from > 1000) {
      // the step's start: the latest step start before enter
      let lo = 0, hi = stepStart.length - 1, best = enter;
      while (lo <= hi) {
        const m = (lo + hi) >> 1;
        if (stepStart[m]! <= enter) (best = stepStart[m]!), (lo = m + 1);
        else hi = m - 1;
      }
      from = best;
    }
    // the arrival of this (step, seq) nearest before exit
    let arr = NaN;
    for (const v of arrivals.get(`${step}:${seq}`) ?? []) if (v <= exit + 0.001 && exit - v < 1000 && !(v <= arr)) arr = v;
    out.syncs.push({ who, step, seq, enter, exit, comp: enter - from, sent: y ? Number(y) : NaN, arr });
    lastExit.set(step, exit);
  }
  return out;
}

/**
 * `--trace FILE.trace ...` (bench:cluster --trace PREFIX): the syncs of two worker traces paired
 * (same step and sync, within 0.5 s), the slow ones (the larger wait above `slowMs`), and for each
 * whether a V8 collection on either worker overlapped it, or the scheduler kept one of the
 * workers off its core during that step (schedstat wait), or neither.
 */
export function analyseTraces(files: string[], slowMs = 1.5): string {
  const traces = files.map(readTrace);
  const workers = traces.filter((t) => /worker-[ab]$/.test(t.who));
  const lines: string[] = [];
  for (const t of traces) {
    const gcMs = t.gcs.map((g) => g.ms);
    const minor = t.gcs.filter((g) => g.kind === 1).map((g) => g.ms);
    lines.push(`${t.who}: ${t.syncs.length} syncs, ${t.steps.length} steps, ${t.gcs.length} collections (${minor.length} scavenges: median ${minor.length ? median(minor).toFixed(2) : "-"} ms, max ${minor.length ? Math.max(...minor).toFixed(2) : "-"} ms; all: ${gcMs.reduce((s, v) => s + v, 0).toFixed(1)} ms)`);
  }
  const pairs = new Map<string, TraceSync[]>();
  for (const w of workers) for (const s of w.syncs) {
    const k = `${s.step}:${s.seq}:${Math.round(s.enter / 2000)}`;
    pairs.set(k, [...(pairs.get(k) ?? []), s]);
  }
  const paired = [...pairs.values()].filter((p) => p.length === 2 && p[0]!.who !== p[1]!.who && Math.abs(p[0]!.enter - p[1]!.enter) < 500);
  const gcIn = (w: TraceFile | undefined, a: number, b: number): { t: number; ms: number; kind: number }[] => (w ? w.gcs.filter((g) => g.t < b && g.t + g.ms > a) : []);
  const stepOf = (w: TraceFile | undefined, t: number): TraceFile["steps"][number] | undefined => w?.steps.find((s) => s.t0 <= t && t <= s.t1 + 0.01);
  let slow = 0, byGc = 0, bySched = 0, neither = 0, slowMsSum = 0;
  const waits: number[] = [], minWaits: number[] = [];
  const examples: string[] = [];
  for (const p of paired) {
    const w0 = p[0]!.exit - p[0]!.enter, w1 = p[1]!.exit - p[1]!.enter;
    waits.push(Math.max(w0, w1));
    minWaits.push(Math.min(w0, w1));
    if (Math.max(w0, w1) < slowMs) continue;
    slow++;
    slowMsSum += Math.max(w0, w1);
    const a = Math.min(p[0]!.enter, p[1]!.enter) - Math.max(p[0]!.comp, p[1]!.comp), b = Math.max(p[0]!.exit, p[1]!.exit);
    const gcs = p.flatMap((s) => gcIn(workers.find((w) => w.who === s.who), a, b).map((g) => `${s.who} ${g.kind === 1 ? "scavenge" : `gc kind ${g.kind}`} ${g.ms.toFixed(2)} ms`));
    const sched = p.map((s) => {
      const st = stepOf(workers.find((w) => w.who === s.who), s.enter);
      return st ? st.waitNs / 1e6 : 0;
    });
    const kind = gcs.length > 0 ? "gc" : Math.max(...sched) >= 0.8 * Math.max(w0, w1) ? "sched" : "neither";
    if (kind === "gc") byGc++;
    else if (kind === "sched") bySched++;
    else neither++;
    if (examples.length < 12) examples.push(`  step ${p[0]!.step} sync ${p[0]!.seq}: waits ${p.map((s) => `${s.who} ${(s.exit - s.enter).toFixed(2)}`).join(", ")} ms, computes ${p.map((s) => s.comp.toFixed(2)).join(", ")} ms; ${gcs.length ? gcs.join("; ") : "no collection"}; the step's run-queue wait ${sched.map((x) => x.toFixed(2)).join(", ")} ms -> ${kind}`);
  }
  const q = (x: number[], f: number): number => [...x].sort((m, n) => m - n)[Math.min(x.length - 1, Math.floor(f * x.length))] ?? NaN;
  lines.push(`paired syncs: ${paired.length}; larger wait median ${q(waits, 0.5).toFixed(3)} ms, p90 ${q(waits, 0.9).toFixed(3)}, p99 ${q(waits, 0.99).toFixed(3)}; smaller wait median ${q(minWaits, 0.5).toFixed(3)} ms`);
  // the exchange's parts, per sync: the early node (it finished its compute first) polls while the
  // late one computes; the late one's part reaches it after the write + the wire + its poll turn
  const sendCost: number[] = [], delivery: number[] = [], pickup: number[] = [], post: number[] = [], lateWait: number[] = [];
  for (const p of paired) {
    const [e, l] = p[0]!.enter <= p[1]!.enter ? [p[0]!, p[1]!] : [p[1]!, p[0]!];
    if (!(e.arr > 0 && l.arr > 0 && l.sent > 0)) continue;
    sendCost.push(e.sent - e.enter, l.sent - l.enter);
    delivery.push(e.arr - l.sent);
    pickup.push(l.arr - l.sent);
    post.push(e.exit - e.arr, l.exit - l.arr);
    lateWait.push(l.exit - l.enter);
  }
  const us = (x: number[]): string => `${(1000 * q(x, 0.5)).toFixed(0)} µs (p90 ${(1000 * q(x, 0.9)).toFixed(0)})`;
  lines.push(`per sync, median: own part encoded + written ${us(sendCost)}; late node's part to the early node's reduce ${us(delivery)}; early node's part, already there, to the late node's reduce after its own write ${us(pickup)}; from the part's arrival to the sum in hand ${us(post)}; the late node's whole wait ${us(lateWait)}`);
  lines.push(`slow syncs (larger wait >= ${slowMs} ms): ${slow} (${slowMsSum.toFixed(1)} ms in all): a collection on a worker during it ${byGc}, no collection but the scheduler kept a worker off its core that step ${bySched}, neither ${neither}`);
  // run-queue wait per step, for every step of the paired run(s)
  for (const w of workers) {
    const st = w.steps.filter((s) => s.t1 - s.t0 < 1000);
    const rq = st.map((s) => s.waitNs / 1e6);
    lines.push(`${w.who}: per step, run-queue wait median ${q(rq, 0.5).toFixed(2)} ms, p90 ${q(rq, 0.9).toFixed(2)}, max ${Math.max(...rq).toFixed(2)}; steps with >= 1 ms: ${rq.filter((x) => x >= 1).length}/${rq.length}`);
  }
  return [...lines, ...examples].join("\n");
}

if (process.argv[1]?.endsWith("csv-analysis.js") && process.argv[2] === "--trace") console.log(analyseTraces(process.argv.slice(3)));
