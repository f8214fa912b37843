/**
 * `llamesh run` / `bin/client`: load a model folder, stream the continuation of a prompt to
 * stdout, and print the report on stderr.
 *
 * stdout carries exactly the model's text, nothing added (`-n 0` prints nothing). When stderr is
 * a terminal and the text did not end in a newline, one newline goes to stderr, so that the
 * report starts on its own line wherever the text is shown, and stdout stays exact.
 *
 * Ctrl-C during the generation stops it after the current token: the report follows with
 * `stopped: interrupted`, the cluster's CSV is written, and the exit status is 130. A second
 * Ctrl-C, or one before the generation started, exits at once.
 */
import { generate, type LogitsModel } from "../engine/generate.js";
import { Sampler, type SamplerOptions } from "../engine/sampler.js";
import { TextStream } from "../engine/text-stream.js";
import { modelMacsPerToken } from "../engine/weights.js";
import { applyChatTemplate } from "../model/chat.js";
import { LlameshError } from "../core/errors.js";
import { parseArgs, usageText, type FlagSpecs } from "./args.js";
import { contextWarning, loadModel, modelFlags, modelSettings, type ModelSettings } from "./load.js";
import { promptSource, readPrompt, type PromptInput, type PromptSource } from "./prompt.js";
import { modelReport, speedReport } from "./report.js";

export const runFlags = {
  "max-new-tokens": { type: "int", aliases: ["-n"], min: 0, max: 1_000_000, default: 100, help: "how many tokens to generate" },
  prompt: { type: "string", aliases: ["-i", "-p"], help: "the text to continue (- reads it from stdin)" },
  file: { type: "string", aliases: ["-f"], help: "a file holding the text to continue" },
  temperature: { type: "number", aliases: ["--temp"], min: 0, max: 100, default: 0.8, help: "0 = greedy" },
  "top-p": { type: "number", min: 0, max: 1, default: 0.95, help: "nucleus sampling mass, 1 = off" },
  "top-k": { type: "int", min: 0, max: 1_000_000, default: 40, help: "keep the k most likely tokens, 0 = off" },
  seed: { type: "int", aliases: ["-s"], min: 0, max: Number.MAX_SAFE_INTEGER, help: "random seed for sampling" },
  chat: { type: "boolean", help: "format the prompt with the model's chat template (tokenizer_config.json)" },
  system: { type: "string", help: "with --chat: a system message" },
  ...modelFlags,
} as const satisfies FlagSpecs;

export function runUsage(command: string): string {
  return usageText(
    command,
    [
      "<model-dir> -n <max-new-tokens> -i <prompt>|-f <file> [--temp T] [--top-p P] [--top-k K]",
      "[--seed S] [-t|--threads N] [--max-seq-len L] [--kernels wasm|ts] [--chat [--system TEXT]]",
      "[--workers host:port[@share],... [--local-share N] [--perf-csv FILE] [--topology auto|mesh|scatter|star] [--step-timeout S] [--secret-file FILE]]",
    ],
    `  Streams the continuation of the prompt to stdout (exactly the model's text); the report goes to stderr.
  -i - reads the prompt from stdin, -f FILE from a file (one final newline dropped, as llama.cpp does).
  As in llama.cpp: -t is --threads, --temp is --temperature, -p is -i, -c (--ctx-size) is --max-seq-len, -s is --seed.
  Defaults: -n 100, temperature 0.8, top-p 0.95, top-k 40, seed from the clock (printed),
  threads = OMP_NUM_THREADS or the core count, max-seq-len = the model's max_position_embeddings,
  at most 4096 as in llama.cpp (more is allowed, with a warning past the trained context).
  Ctrl-C stops the generation and prints the report (exit status 130); a second Ctrl-C exits at once.
  With --workers, every token's work is split over the workers (bin/worker <port> on each machine)
  and, with --local-share N, this machine; shares default to each node's measured GMAC.
  Topology: mesh (the workers add their partial sums among themselves; they must reach each other
  at the addresses given to --workers), scatter (the same links; each node adds up one chunk of
  every sum: fewer bytes per node, one more trip per sync), star (every sync goes through this
  machine), or auto (default: mesh up to 4 nodes, scatter above, star when the workers cannot
  reach each other).`,
  );
}

/** Everything `bin/client` was asked to do, checked before anything heavy. */
export interface RunSettings {
  dir: string;
  prompt: PromptSource;
  maxNewTokens: number;
  sampling: SamplerOptions;
  /** --chat: the prompt is the user's message in the model's chat template. */
  chat: { system: string | undefined } | null;
  model: ModelSettings;
}

/** The parsed command line as settings, or "help" when --help asked for the usage. */
export function runSettings(argv: readonly string[], command: string): RunSettings | "help" {
  const { positionals, flags, help } = parseArgs(argv, runFlags, command);
  if (help) return "help";
  if (positionals.length !== 1) {
    throw new LlameshError(`${command}: expected one model folder, got ${positionals.length === 0 ? "none" : positionals.join(" ")}\n${runUsage(command)}`);
  }
  const prompt = promptSource(flags.prompt, flags.file, command);
  const model = modelSettings(flags, command, "matmul_perf.csv");
  if (flags.system !== undefined && !flags.chat) throw new LlameshError(`${command}: --system needs --chat`);
  return {
    dir: positionals[0]!,
    prompt,
    maxNewTokens: flags["max-new-tokens"],
    sampling: {
      temperature: flags.temperature,
      topP: flags["top-p"],
      topK: flags["top-k"],
      seed: flags.seed ?? Date.now() % 2147483647,
    },
    chat: flags.chat ? { system: flags.system } : null,
    model,
  };
}

/** Where the command reads and writes; the process's streams unless a test gives others. */
export interface RunIo {
  stdout: { write(text: string): unknown; isTTY?: boolean };
  stderr: { write(text: string): unknown; isTTY?: boolean };
  stdin: PromptInput;
}

const processIo = (): RunIo => ({ stdout: process.stdout, stderr: process.stderr, stdin: process.stdin });

/** Exit status after Ctrl-C, as shells report a process ended by SIGINT (128 + 2). */
export const INTERRUPTED_STATUS = 130;

/** Runs the command; resolves with the exit status (0, or 130 after Ctrl-C). */
export async function runCommand(argv: readonly string[], command = "client", io: RunIo = processIo()): Promise<number> {
  const s = runSettings(argv, command);
  if (s === "help") {
    io.stdout.write(runUsage(command) + "\n");
    return 0;
  }
  const log = (line: string): void => void io.stderr.write(line + "\n");

  // Ctrl-C: during the generation, stop after the current token; otherwise (loading, a second
  // Ctrl-C) exit at once.
  let generating = false;
  let interrupted = false;
  const onSigint = (): void => {
    if (!generating || interrupted) process.exit(INTERRUPTED_STATUS);
    interrupted = true;
  };
  process.on("SIGINT", onSigint);
  try {
    const promptText = await readPrompt(s.prompt, command, io.stdin, log);
    const chatText = s.chat
      ? applyChatTemplate(s.dir, [...(s.chat.system !== undefined ? [{ role: "system" as const, content: s.chat.system }] : []), { role: "user", content: promptText }])
      : null;
    const sampler = new Sampler(s.sampling);

    const { model, distributed, backend, warmup, close } = await loadModel(s.dir, s.model, log);
    try {
      for (const l of modelReport(model, backend.name, distributed !== null)) log(l);
      if (warmup) log(warmup);
      const warning = contextWarning(model);
      if (warning) log(warning);

      // A chat template writes its own BOS (as transformers does, no special tokens are added to it).
      const ids = chatText === null ? model.tokenizer.encode(promptText, true) : model.tokenizer.encode(chatText, false);
      const o = sampler.opts;
      log(`Sampling: ${o.temperature === 0 ? "greedy (temperature 0)" : `temperature ${o.temperature}, top-p ${o.topP}, top-k ${o.topK}, seed ${o.seed}`}`);
      log(`Prompt: ${ids.length} tokens; generating up to ${s.maxNewTokens}`);

      const stream = new TextStream(model.tokenizer);
      let wrote = false;
      let endsInNewline = false;
      const out = (text: string): void => {
        if (!text) return;
        io.stdout.write(text);
        wrote = true;
        endsInNewline = text.endsWith("\n");
      };
      generating = true;
      const result = await generate(listening(model), ids, {
        maxNewTokens: s.maxNewTokens,
        sampler,
        eosIds: model.tokenizer.eosIds,
        onToken: (id) => out(stream.push(id)),
        shouldStop: () => interrupted,
      });
      out(stream.end());
      if (wrote && !endsInNewline && io.stderr.isTTY) io.stderr.write("\n");
      for (const l of speedReport(result, modelMacsPerToken(model.config), interrupted && result.stop === "stopped")) log(l);
      if (distributed) for (const l of distributed.clusterReport()) log(l);
    } finally {
      await close(); // with --workers, this writes the --perf-csv
    }
    return interrupted ? INTERRUPTED_STATUS : 0;
  } finally {
    process.off("SIGINT", onSigint);
  }
}

/** How often, at most, the generation lets the event loop run (to hear Ctrl-C). */
const YIELD_EVERY_MS = 20;

/**
 * The model with its forward passes giving the event loop a turn every YIELD_EVERY_MS: a
 * single machine's forward is synchronous, so without it a Ctrl-C would only be heard once the
 * whole generation had ended.
 */
function listening(model: LogitsModel): LogitsModel {
  let last = performance.now();
  return {
    seqLen: model.seqLen,
    batch: model.batch,
    config: model.config,
    forward: async (tokens, pos) => {
      if (performance.now() - last >= YIELD_EVERY_MS) {
        await new Promise((resolve) => setImmediate(resolve));
        last = performance.now();
      }
      return model.forward(tokens, pos);
    },
  };
}
