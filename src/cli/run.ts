/**
 * `llamesh run` / `bin/client`: load a model folder, stream the continuation of a prompt to
 * stdout, and print the report on stderr.
 */
import { generate } from "../engine/generate.js";
import { Sampler } from "../engine/sampler.js";
import { TextStream } from "../engine/text-stream.js";
import { modelMacsPerToken } from "../engine/weights.js";
import { applyChatTemplate } from "../model/chat.js";
import { LlameshError } from "../core/errors.js";
import { parseArgs, type FlagSpec } from "./args.js";
import { loadModel, modelFlags, modelSettings } from "./load.js";
import { modelReport, speedReport } from "./report.js";

export const runFlags: Record<string, FlagSpec> = {
  "max-new-tokens": { type: "int", aliases: ["-n"], min: 0, max: 1_000_000, help: "how many tokens to generate" },
  prompt: { type: "string", aliases: ["-i"], help: "the text to continue" },
  temperature: { type: "number", aliases: ["-t"], min: 0, max: 100, help: "0 = greedy" },
  "top-p": { type: "number", min: 0, max: 1, help: "nucleus sampling mass, 1 = off" },
  "top-k": { type: "int", min: 0, max: 1_000_000, help: "keep the k most likely tokens, 0 = off" },
  seed: { type: "int", min: 0, max: Number.MAX_SAFE_INTEGER, help: "random seed for sampling" },
  chat: { type: "boolean", help: "format the prompt with the model's chat template (tokenizer_config.json)" },
  system: { type: "string", help: "with --chat: a system message" },
  ...modelFlags,
  help: { type: "boolean", aliases: ["-h"], help: "show usage" },
};

export const RUN_USAGE = `usage: client <model-dir> -n <max-new-tokens> -i <prompt> [--temperature T] [--top-p P] [--top-k K]
              [--seed S] [--threads N] [--max-seq-len L] [--kernels wasm|ts] [--chat [--system TEXT]]
              [--workers host:port[@share],... [--local-share N] [--perf-csv FILE] [--topology auto|mesh|star] [--step-timeout S] [--secret-file FILE]]
  Streams the continuation of the prompt to stdout; the report goes to stderr.
  Defaults: -n 100, temperature 0.8, top-p 0.95, top-k 40, seed from the clock (printed),
  threads = OMP_NUM_THREADS or the core count, max-seq-len = the model's max_position_embeddings.
  With --workers, every token's work is split over the workers (bin/worker <port> on each machine)
  and, with --local-share N, this machine; shares default to each node's measured GMAC.
  Topology: mesh (the workers add their partial sums among themselves; they must reach each other
  at the addresses given to --workers), star (every sync goes through this machine), or auto
  (default: mesh, else star).`;

export async function runCommand(argv: readonly string[], command = "client"): Promise<void> {
  const { positionals, flags } = parseArgs(argv, runFlags, command);
  if (flags["help"]) {
    process.stdout.write(RUN_USAGE + "\n");
    return;
  }
  if (positionals.length !== 1) {
    throw new LlameshError(`${command}: expected one model folder, got ${positionals.length === 0 ? "none" : positionals.join(" ")}\n${RUN_USAGE}`);
  }
  const dir = positionals[0]!;
  const prompt = flags["prompt"] as string | undefined;
  if (prompt === undefined) throw new LlameshError(`${command}: missing -i <prompt> (the text to continue)`);
  const maxNew = (flags["max-new-tokens"] as number | undefined) ?? 100;
  const settings = modelSettings(flags, command, "matmul_perf.csv");
  const seed = (flags["seed"] as number | undefined) ?? (Date.now() % 2147483647);
  const log = (line: string): void => void process.stderr.write(line + "\n");

  const system = flags["system"] as string | undefined;
  if (system !== undefined && !flags["chat"]) throw new LlameshError(`${command}: --system needs --chat`);
  const chatText = flags["chat"]
    ? applyChatTemplate(dir, [...(system !== undefined ? [{ role: "system" as const, content: system }] : []), { role: "user", content: prompt }])
    : null;
  const sampler = new Sampler({
    temperature: (flags["temperature"] as number | undefined) ?? 0.8,
    topP: (flags["top-p"] as number | undefined) ?? 0.95,
    topK: (flags["top-k"] as number | undefined) ?? 40,
    seed,
  });

  const { model, distributed, backend, close } = await loadModel(dir, settings, log);
  try {
    for (const l of modelReport(model, backend.name)) log(l);

    // A chat template writes its own BOS (as transformers does, no special tokens are added to it).
    const ids = chatText === null ? model.tokenizer.encode(prompt, true) : model.tokenizer.encode(chatText, false);
    const s = sampler.opts;
    log(`Sampling: ${s.temperature === 0 ? "greedy (temperature 0)" : `temperature ${s.temperature}, top-p ${s.topP}, top-k ${s.topK}, seed ${s.seed}`}`);
    log(`Prompt: ${ids.length} tokens; generating up to ${maxNew}`);

    const stream = new TextStream(model.tokenizer);
    const result = await generate(model, ids, {
      maxNewTokens: maxNew,
      sampler,
      eosIds: model.tokenizer.eosIds,
      onToken: (id) => {
        const text = stream.push(id);
        if (text) process.stdout.write(text);
      },
    });
    process.stdout.write(stream.end() + "\n");
    for (const l of speedReport(result, modelMacsPerToken(model.config))) log(l);
    if (distributed) for (const l of distributed.clusterReport()) log(l);
  } finally {
    await close();
  }
}
