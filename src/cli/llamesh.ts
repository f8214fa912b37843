/** `llamesh <command>`: the one executable with subcommands. */
import { LlameshError } from "../core/errors.js";
import { main } from "./main.js";
import { runCommand, runUsage } from "./run.js";
import { tokenizeCommand, TOKENIZE_USAGE } from "./tokenize.js";
import { benchCommand, BENCH_USAGE } from "./bench.js";
import { serveCommand, serveUsage } from "./serve.js";

export const LLAMESH_USAGE = `usage: llamesh <command> ...
commands:
  run <model-dir> -n N -i PROMPT ...   generate text (same as bin/client)
  serve <model-dir> [--port N] ...     OpenAI-shaped HTTP API (completions, chat, streaming)
  tokenize <model-dir|.gguf> <text>    print token ids
  bench gmac|synth|compare ...         benchmarks
  help [<command>]                     this text, or a command's
run 'llamesh <command> --help' for details.

${runUsage("llamesh run")}

${serveUsage()}

${TOKENIZE_USAGE}

${BENCH_USAGE}`;

/** Runs one subcommand; resolves with the exit status. */
export async function llamesh(argv: readonly string[]): Promise<number | void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "run":
      return runCommand(rest, "llamesh run");
    case "serve":
      return serveCommand(rest);
    case "tokenize":
      // its --help is tokenize.ts's own
      return tokenizeCommand(rest);
    case "bench":
      return benchCommand(rest);
    case undefined:
      // a missing command is a mistake, as in git and llama.cpp's tools: usage on stderr, status 1
      process.stderr.write(LLAMESH_USAGE + "\n");
      return 1;
    case "help":
      // `llamesh help run` is `llamesh run --help`
      if (rest[0] !== undefined && ["run", "serve", "tokenize", "bench"].includes(rest[0])) return llamesh([rest[0], "--help"]);
      if (rest[0] !== undefined) throw unknownCommand(rest[0]);
      process.stdout.write(LLAMESH_USAGE + "\n");
      return 0;
    case "--help":
    case "-h":
      process.stdout.write(LLAMESH_USAGE + "\n");
      return 0;
    default:
      throw unknownCommand(cmd);
  }
}

function unknownCommand(cmd: string): LlameshError {
  return new LlameshError(`llamesh: unknown command ${JSON.stringify(cmd)} (expected run, serve, tokenize or bench; see llamesh --help)`);
}

main(() => llamesh(process.argv.slice(2)));
