/** `llamesh <command>`: the one executable with subcommands. */
import { LlameshError } from "../core/errors.js";
import { main } from "./main.js";
import { runCommand, RUN_USAGE } from "./run.js";
import { tokenizeCommand, TOKENIZE_USAGE } from "./tokenize.js";
import { benchCommand, BENCH_USAGE } from "./bench.js";
import { serveCommand, SERVE_USAGE } from "./serve.js";

const USAGE = `usage: llamesh <command> ...
commands:
  run <model-dir> -n N -i PROMPT ...   generate text (same as bin/client)
  serve <model-dir> [--port N] ...     OpenAI-shaped HTTP API (completions, chat, streaming)
  tokenize <model-dir> <text>          print token ids
  bench gmac|synth|compare ...         benchmarks
run 'llamesh <command> --help' for details.

${RUN_USAGE.replace(/^usage: client/, "usage: llamesh run")}

${SERVE_USAGE}

${TOKENIZE_USAGE}

${BENCH_USAGE}`;

export async function llamesh(argv: readonly string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "run":
      return runCommand(rest, "llamesh run");
    case "serve":
      return serveCommand(rest);
    case "tokenize":
      return tokenizeCommand(rest);
    case "bench":
      return benchCommand(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE + "\n");
      return;
    default:
      throw new LlameshError(`llamesh: unknown command ${JSON.stringify(cmd)} (expected run, serve, tokenize or bench; see llamesh --help)`);
  }
}

main(() => llamesh(process.argv.slice(2)));
