/** `llamesh tokenize <model> <text> [--no-bos]`: print the token ids, space separated. */
import { LlameshError } from "../core/errors.js";
import { loadTokenizerFor } from "../model/open-tokenizer.js";
import { isGgufPath } from "../model/chat.js";
import { parseArgs, type FlagSpecs } from "./args.js";

export const tokenizeFlags = {
  "no-bos": { type: "boolean", help: "do not prepend the BOS token" },
  tokenizer: { type: "string", choices: ["json", "model"], help: "which file to use when both exist: json (tokenizer.json, default) or model (tokenizer.model)" },
} as const satisfies FlagSpecs;

export const TOKENIZE_USAGE = `usage: llamesh tokenize <model-dir | model.gguf> <text> [--no-bos] [--tokenizer json|model]
  Prints the token ids of <text> on one line. A folder may hold only tokenizer files; a .gguf
  file's own vocabulary is used (its weights are not read).
  --no-bos                 do not prepend the BOS token (a model whose tokenizer adds none never gets one)
  --tokenizer json|model   a folder with both files: tokenizer.json (default) or tokenizer.model`;

export async function tokenizeCommand(argv: readonly string[]): Promise<void> {
  const { positionals, flags: f, help } = parseArgs(argv, tokenizeFlags, "llamesh tokenize");
  if (help) {
    process.stdout.write(TOKENIZE_USAGE + "\n");
    return;
  }
  if (positionals.length !== 2) {
    throw new LlameshError(`llamesh tokenize: expected <model-dir | model.gguf> <text>, got ${positionals.length} argument(s) (see llamesh tokenize --help)`);
  }
  const which = f.tokenizer;
  const model = positionals[0]!;
  if (which !== undefined && isGgufPath(model)) {
    throw new LlameshError(`llamesh tokenize: --tokenizer applies to model folders; ${model} is a GGUF file with one vocabulary`);
  }
  const tok = await loadTokenizerFor(model, { prefer: which === "model" ? "tokenizer.model" : "tokenizer.json" });
  process.stdout.write(tok.encode(positionals[1]!, !f["no-bos"]).join(" ") + "\n");
}
