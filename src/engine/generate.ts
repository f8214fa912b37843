/**
 * The generation loop: prompt in batches (prefill), then one token at a time until the token
 * budget, an end-of-sequence token or the end of the context. Timings feed the report.
 */
import { LlameshError } from "../core/errors.js";
import { Sampler } from "./sampler.js";

/** Anything that turns tokens at positions into next-token logits: one machine or a cluster. */
export interface LogitsModel {
  /** Context length (positions available). */
  readonly seqLen: number;
  /** The trained context (max_position_embeddings), when known: the error below says so. */
  readonly config?: { readonly seqLen: number };
  /** Most tokens one forward call takes. */
  readonly batch: number;
  forward(tokens: readonly number[], pos: number): Float32Array | Promise<Float32Array>;
}

export interface GenerateOptions {
  maxNewTokens: number;
  sampler: Sampler;
  eosIds: readonly number[];
  /** Called with each new token as soon as it is chosen (not for end-of-sequence tokens). */
  onToken?: (id: number) => void;
  /** Asked after each token: true ends the generation there (a stop string, a client gone). */
  shouldStop?: () => boolean;
}

export type StopReason = "length" | "eos" | "context" | "stopped";

export interface GenerationResult {
  tokens: number[];
  stop: StopReason;
  promptTokens: number;
  promptMs: number;
  /** Forward passes after the prompt, and the time they took (with sampling). */
  decodeSteps: number;
  decodeMs: number;
}

export async function generate(model: LogitsModel, prompt: readonly number[], opts: GenerateOptions): Promise<GenerationResult> {
  if (prompt.length === 0) throw new LlameshError("the prompt encodes to no tokens (add text, or keep the BOS token)");
  if (prompt.length >= model.seqLen) {
    throw new LlameshError(
      `the prompt is ${prompt.length} tokens but the context holds ${model.seqLen} (--max-seq-len): ` +
        (model.config === undefined ? "shorten the prompt or raise --max-seq-len" : prompt.length < model.config.seqLen ? `shorten the prompt or raise --max-seq-len (up to ${model.config.seqLen}, the model's trained context)` : `shorten the prompt: it does not fit in the model's trained context of ${model.config.seqLen} tokens either`),
    );
  }
  const t0 = performance.now();
  let logits: Float32Array = new Float32Array(0);
  for (let i = 0; i < prompt.length; i += model.batch) {
    logits = await model.forward(prompt.slice(i, i + model.batch), i);
  }
  const promptMs = performance.now() - t0;

  const tokens: number[] = [];
  let pos = prompt.length;
  let stop: StopReason = "length";
  let decodeSteps = 0;
  const t1 = performance.now();
  while (tokens.length < opts.maxNewTokens) {
    const next = opts.sampler.sample(logits);
    if (opts.eosIds.includes(next)) {
      stop = "eos";
      break;
    }
    tokens.push(next);
    opts.onToken?.(next);
    if (opts.shouldStop?.()) {
      stop = "stopped";
      break;
    }
    if (tokens.length >= opts.maxNewTokens) break;
    if (pos >= model.seqLen) {
      stop = "context";
      break;
    }
    logits = await model.forward([next], pos);
    pos++;
    decodeSteps++;
  }
  return { tokens, stop, promptTokens: prompt.length, promptMs, decodeSteps, decodeMs: performance.now() - t1 };
}

/**
 * `n` greedy tokens after `prompt`, with no end-of-sequence stop: what the tests and benchmarks
 * compare between one machine, a cluster and llama.cpp. onToken runs before the next forward call.
 */
export async function greedyTokens(model: LogitsModel, prompt: readonly number[], n: number, onToken?: (id: number) => void): Promise<number[]> {
  const sampler = new Sampler({ temperature: 0, topP: 1, topK: 0, seed: 0 });
  return (await generate(model, prompt, { maxNewTokens: n, sampler, eosIds: [], ...(onToken ? { onToken } : {}) })).tokens;
}
