/**
 * `llamesh bench ab <other-checkout> <model>`: this checkout's bin/client against another
 * checkout's (an older commit, built: `git worktree add /tmp/base REV && cd /tmp/base && npm ci`)
 * on the same model, same threads, greedy, alternating A B A B ... so that both see the same
 * machine. Prints every run, then the best and the median of each side and their ratios (new / old).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { LlameshError } from "../src/core/errors.js";
import { runLlamesh, type RunFigures } from "./compare.js";
import { median } from "./stats.js";

export function benchAb(opts: { other: string; model: string; threads: number; runs?: number; n?: number; ctx?: number; log: (l: string) => void }): void {
  const other = path.resolve(opts.other);
  if (!fs.existsSync(path.join(other, "bin", "client")) || !fs.existsSync(path.join(other, "dist"))) {
    throw new LlameshError(`bench ab: ${other} is not a built llamesh checkout (expected bin/client and dist/; run npm ci there)`);
  }
  const runs = opts.runs ?? 4;
  const n = opts.n ?? 64;
  const ctx = opts.ctx ?? 1024;
  const log = opts.log;
  log(`A/B on ${opts.model}: A = ${other}, B = this checkout; ${opts.threads} threads, ${n} tokens, ${runs} runs each, alternating`);
  const a: RunFigures[] = [];
  const b: RunFigures[] = [];
  for (let i = 0; i < runs; i++) {
    // alternate which goes first, so neither always runs on a warmer (or busier) machine
    for (const side of i % 2 === 0 ? ["A", "B"] : ["B", "A"]) {
      const r = runLlamesh(opts.model, opts.threads, n, ctx, side === "A" ? other : undefined);
      (side === "A" ? a : b).push(r);
      log(`  run ${i + 1} ${side}: decode ${r.decodeTokPerS.toFixed(2)} tok/s, prompt ${r.promptTokPerS.toFixed(2)} tok/s`);
    }
  }
  for (const k of ["decodeTokPerS", "promptTokPerS"] as const) {
    const bestA = Math.max(...a.map((x) => x[k]));
    const bestB = Math.max(...b.map((x) => x[k]));
    const medA = median(a.map((x) => x[k]));
    const medB = median(b.map((x) => x[k]));
    log(`${k === "decodeTokPerS" ? "decode" : "prompt"}: best A ${bestA.toFixed(2)}, B ${bestB.toFixed(2)} tok/s (B/A ${(bestB / bestA).toFixed(3)}); median A ${medA.toFixed(2)}, B ${medB.toFixed(2)} (B/A ${(medB / medA).toFixed(3)})`);
  }
}
