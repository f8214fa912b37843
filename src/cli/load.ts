/**
 * The flags that say how to load a model (threads, context, kernels, cluster) and the loading
 * itself, shared by `bin/client` (run.ts) and `llamesh serve` (serve.ts): one machine, or this
 * machine coordinating workers; both give a LoadedModel.
 */
import * as os from "node:os";
import { loadSecret } from "../cluster/auth.js";
import { openDistributedModel, parseWorkersFlag, type DistributedModel, type DistributedOptions } from "../cluster/client.js";
import { openModel, type LoadedModel } from "../engine/open.js";
import { parseQuantChoice, QUANT_CHOICES, type QuantChoice } from "../engine/types.js";
import { createBackend } from "../kernels/backend.js";
import type { KernelBackend } from "../kernels/kernels.js";
import { LlameshError } from "../core/errors.js";
import { defaultThreads, type Flags, type FlagSpecs } from "./args.js";
import { ProgressBar } from "./progress.js";

export const modelFlags = {
  threads: { type: "int", aliases: ["-t"], min: 1, max: 256, help: "compute threads" },
  "max-seq-len": { type: "int", aliases: ["-c", "--ctx-size"], min: 2, max: 1 << 20, help: "context length to allocate" },
  kernels: { type: "string", choices: ["wasm", "ts"], default: "wasm", help: "wasm or ts (the plain TypeScript reference)" },
  quant: { type: "string", aliases: ["-q"], help: `the matrices' type: ${QUANT_CHOICES} (default: q8_0 for a folder, a GGUF's own types)` },
  workers: { type: "string", help: "worker list host:port[@share],..." },
  "local-share": { type: "number", min: 0, max: 1e6, help: "this machine's share of the work when using --workers (0 = coordinate only)" },
  "perf-csv": { type: "string", help: "per-token timing CSV of the cluster run" },
  "secret-file": { type: "string", help: "file holding the cluster's shared secret (else LLAMESH_SECRET); workers must prove they know it, and every link is encrypted" },
  "no-encryption": { type: "boolean", help: "with --secret-file: authenticate only, do not encrypt (the workers must say the same)" },
  "step-timeout": { type: "number", min: 0.1, max: 86400, help: "seconds a token may wait for a worker before it is pinged, and as long again before it is dropped as hung (default 30)" },
  "no-warmup": { type: "boolean", help: "skip the warm-up passes after loading (llama.cpp's flag)" },
  topology: { type: "string", choices: ["auto", "mesh", "scatter", "star"], help: "auto (default: mesh up to 4 nodes, scatter above), mesh (the nodes add their partial sums among themselves), scatter (each node sums a chunk, for 5+ nodes) or star (every sync through this machine)" },
} as const satisfies FlagSpecs;

/** What was loaded, and how to let go of it. */
export interface Loaded {
  model: LoadedModel;
  /** Set when the model runs on workers. */
  distributed: DistributedModel | null;
  backend: KernelBackend;
  /** The warm-up's report line, or null when there was none (--no-warmup, a cluster). */
  warmup: string | null;
  close(): Promise<void>;
}

/** The model-loading flags, checked (before anything heavy), with their defaults. */
export interface ModelSettings {
  threads: number;
  kernels: "wasm" | "ts";
  maxSeqLen: number | undefined;
  /** --quant; undefined: the default (q8_0 for a folder, a GGUF's own types). */
  quant: QuantChoice | undefined;
  /** Run warmUp() after loading (not --no-warmup). */
  warmup: boolean;
  /** With --workers: how to reach and use them. */
  cluster: Pick<DistributedOptions, "workers" | "localShare" | "perfCsv" | "topology" | "stepTimeoutMs" | "secret" | "encrypt"> | null;
}

/**
 * `defaultPerfCsv`: the per-sync CSV written without --perf-csv (the client's matmul_perf.csv, as
 * the seed did); `serve` has none, so a long-running server keeps no per-token rows.
 */
export function modelSettings(flags: Flags<typeof modelFlags>, command: string, defaultPerfCsv?: string): ModelSettings {
  const workersFlag = flags.workers;
  if (flags["local-share"] !== undefined && workersFlag === undefined) {
    throw new LlameshError(`${command}: --local-share needs --workers (it is this machine's part next to theirs)`);
  }
  for (const f of ["topology", "step-timeout", "perf-csv", "secret-file"] as const) {
    if (flags[f] !== undefined && workersFlag === undefined) throw new LlameshError(`${command}: --${f} needs --workers`);
  }
  const stepTimeout = flags["step-timeout"];
  return {
    threads: flags.threads ?? defaultThreads(process.env, os.availableParallelism()),
    kernels: flags.kernels,
    maxSeqLen: flags["max-seq-len"],
    quant: flags.quant === undefined ? undefined : parseQuantChoice(flags.quant, `${command}: --quant`),
    warmup: !flags["no-warmup"],
    cluster:
      workersFlag === undefined
        ? null
        : {
            workers: parseWorkersFlag(workersFlag),
            localShare: flags["local-share"],
            perfCsv: flags["perf-csv"] ?? defaultPerfCsv,
            topology: flags.topology,
            stepTimeoutMs: stepTimeout === undefined ? undefined : stepTimeout * 1000,
            secret: loadSecret(flags["secret-file"]),
            encrypt: !flags["no-encryption"],
          },
  };
}

/**
 * llama.cpp's warning for a context past the trained one ("n_ctx > n_ctx_train: possible training
 * context overflow"): allowed, but positions the model never saw in training may degrade the text.
 */
export function contextWarning(model: LoadedModel): string | null {
  if (model.seqLen <= model.config.seqLen) return null;
  return `Warning: --max-seq-len ${model.seqLen} is beyond the model's trained context (${model.config.seqLen} tokens): text past position ${model.config.seqLen} may degrade`;
}

/** Tokens of the warm-up's prompt-sized passes: a short prompt's batch. */
const WARMUP_TOKENS = 8;

/**
 * llama.cpp's habit (it decodes a token or two "to warm up" unless --no-warmup): a few passes of
 * the model's own kernels before the first prompt, so that the user's first prompt does not pay
 * what only the first passes of a process do: the KV cache and scratch pages touched for the
 * first time, and the thread pool's first epochs (kernels/pool-adapt.ts), whose times are 1.3-1.5x
 * the steady ones; on a busy machine they also let the pool find out before the prompt whether
 * its helper threads pay (a 9-token 1.1B prompt is over before its first probe otherwise).
 * Measured, 1.1B Q8_0, 2 threads, a 10-token prompt, 5 processes each: first pass median 134 ms
 * without, 118 ms after two 10-token passes (the experiment before this code); steady passes 112
 * ms. Two prompt-sized passes and
 * one single-token pass (decode's kernels) at positions 0.. of slot 0, which the first prompt
 * then overwrites (a slot's KV rows past its sequence are never read).
 */
export async function warmUp(model: LoadedModel): Promise<{ passes: number; tokens: number; ms: number }> {
  const t0 = performance.now();
  const n = Math.max(1, Math.min(WARMUP_TOKENS, model.batch, model.seqLen));
  const tok = model.tokenizer.bosId ?? 0;
  const passes = [n, n, 1];
  for (const k of passes) await model.forwardBatch([{ slot: 0, pos: 0, tokens: new Array<number>(k).fill(tok) }]);
  return { passes: passes.length, tokens: n, ms: performance.now() - t0 };
}

/** Load `dir` as the settings say, with a progress bar on stderr; `slots` KV regions (serve's --parallel, default 1). */
export async function loadModel(dir: string, s: ModelSettings, log: (line: string) => void, slots?: number): Promise<Loaded> {
  const backend = await createBackend({ threads: s.threads, log, forceReference: s.kernels === "ts" });
  const bar = new ProgressBar(s.cluster ? "Loading and sending weights" : "Loading");
  const onProgress = (d: number, t: number): void => bar.update(d, t);
  try {
    const distributed = s.cluster ? await openDistributedModel(dir, { ...s.cluster, backend, maxSeqLen: s.maxSeqLen, quant: s.quant, slots, onProgress, log }) : null;
    const model: LoadedModel = distributed ?? (await openModel(dir, { backend, maxSeqLen: s.maxSeqLen, quant: s.quant, slots, onProgress }));
    bar.done();
    const warm = s.warmup && !distributed ? await warmUp(model) : null;
    backend.idle();
    return {
      model,
      warmup: warm && `Warm-up: ${warm.passes} passes of up to ${warm.tokens} tokens in ${warm.ms.toFixed(0)} ms (--no-warmup skips it)`,
      distributed,
      backend,
      close: async () => {
        await distributed?.close();
        await backend.close();
      },
    };
  } catch (e) {
    bar.done();
    await backend.close();
    throw e;
  }
}
