/**
 * llama.cpp itself as a test reference, through node-llama-cpp's prebuilt CPU binary. The tests
 * never install it: `.ci/run` (and bench/compare.ts) install node-llama-cpp into a cache outside
 * the repo, found here through $LLAMESH_CACHE, ../cache or .cache. Without it, the tests that need
 * it skip with the reason `llamaCppSkip` gives. The reference copy (`llama-cpp-reference`, made by
 * scripts/install-llama-cpp.mjs) is preferred: it holds llama.cpp's portable baseline CPU variant
 * only (x64: no FMA), so the reference does not depend on the CPU; the best-fitting variants
 * disagree with it and with one another on a near tie (the script's header has the measurement).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { after } from "node:test";

const CACHES = [process.env["LLAMESH_CACHE"], path.resolve("../cache"), path.resolve(".cache")].filter((d): d is string => d !== undefined);
const ENTRY = CACHES.flatMap((d) => ["llama-cpp-reference", "llama-cpp"].map((n) => path.join(d, n, "node_modules", "node-llama-cpp", "dist", "index.js"))).find((f) => fs.existsSync(f));

/** Why llama.cpp tests skip, or false when node-llama-cpp is installed. */
export const llamaCppSkip: string | false = ENTRY === undefined
  ? `node-llama-cpp is not installed in ${CACHES.map((d) => path.join(d, "llama-cpp")).join(" or ")} (.ci/run installs it; see bench/compare.ts)`
  : false;

interface NlcSequence {
  controlledEvaluate(input: (number | [number, { generateNext?: { logits?: boolean; token?: boolean; options?: { temperature: number } } }])[]): Promise<({ next: { token?: number | null; logits?: Map<number, number> } } | undefined)[]>;
}
interface NlcContext {
  getSequence(): NlcSequence;
  dispose(): Promise<void>;
}
interface NlcModel {
  createContext(o: { contextSize: number; threads: number; batchSize?: number; sequences?: number; flashAttention?: boolean; experimentalKvCacheKeyType?: string; experimentalKvCacheValueType?: string }): Promise<NlcContext>;
  tokenize(text: string, specialTokens?: boolean): readonly number[];
  dispose(): Promise<void>;
}
interface NlcLlama {
  loadModel(o: { modelPath: string; vocabOnly?: boolean }): Promise<NlcModel>;
  dispose(): Promise<void>;
}
interface NlcModule {
  getLlama(o: { gpu: false; build: "never"; logLevel: "disabled" | "error" }): Promise<NlcLlama>;
}

let llama: Promise<NlcLlama> | undefined;
function getLlama(): Promise<NlcLlama> {
  if (!ENTRY) throw new Error(llamaCppSkip as string);
  llama ??= import(pathToFileURL(ENTRY).href).then((m: NlcModule) => m.getLlama({ gpu: false, build: "never", logLevel: "disabled" }));
  return llama;
}
after(async () => {
  if (llama) await (await llama).dispose();
});

export interface LlamaCppRun {
  /** The logits after each input token (vocabulary order). */
  logits: Float32Array[];
  /** With `generate`: the greedy continuation. */
  generated: number[];
}

/**
 * Run `tokens` through llama.cpp on `gguf` (BF16 KV cache by default, as the issues' references
 * are made: `-ctk bf16 -ctv bf16`) and return the logits after every token; then, with
 * `generate`, that many greedy tokens.
 */
export async function llamaCppRun(gguf: string, tokens: readonly number[], opts: { generate?: number; kvType?: "BF16" | "F16" | "F32"; vocabSize: number; contextSize?: number }): Promise<LlamaCppRun> {
  const l = await getLlama();
  const model = await l.loadModel({ modelPath: gguf });
  const kv = opts.kvType ?? "BF16";
  const context = await model.createContext({
    contextSize: opts.contextSize ?? 256, threads: 1, batchSize: 512, sequences: 1, flashAttention: false,
    experimentalKvCacheKeyType: kv, experimentalKvCacheValueType: kv,
  });
  try {
    const seq = context.getSequence();
    const toVector = (m: Map<number, number> | undefined): Float32Array => {
      const v = new Float32Array(opts.vocabSize).fill(-Infinity);
      for (const [t, x] of m ?? []) v[t] = x;
      return v;
    };
    const out = await seq.controlledEvaluate(tokens.map((t) => [t, { generateNext: { logits: true, token: true, options: { temperature: 0 } } }]));
    const logits = out.map((o) => toVector(o?.next.logits));
    const generated: number[] = [];
    let next = out[out.length - 1]?.next.token ?? null;
    for (let i = 0; i < (opts.generate ?? 0) && next !== null; i++) {
      generated.push(next);
      const r = await seq.controlledEvaluate([[next, { generateNext: { token: true, options: { temperature: 0 } } }]]);
      next = r[0]?.next.token ?? null;
    }
    return { logits, generated };
  } finally {
    await context.dispose();
    await model.dispose();
  }
}

/** Softmax of a logits vector (f64), for comparing probabilities. */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += p[i] = Math.exp(logits[i]! - max);
  for (let i = 0; i < p.length; i++) p[i] = p[i]! / sum;
  return p;
}
