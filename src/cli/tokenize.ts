/** `llamesh tokenize <model-dir> <text> [--no-bos]`: print the token ids, space separated. */
import { LlameshError } from "../core/errors.js";
import { loadTokenizer } from "../model/tokenizer.js";
import { parseArgs, type FlagSpec } from "./args.js";

const flags: Record<string, FlagSpec> = {
  "no-bos": { type: "boolean", help: "do not prepend the BOS token" },
  tokenizer: { type: "string", help: "which file to use when both exist: json (tokenizer.json, default) or model (tokenizer.model)" },
};

export const TOKENIZE_USAGE = `usage: llamesh tokenize <model-dir> <text> [--no-bos] [--tokenizer json|model]
  Prints the token ids of <text> on one line. The folder may hold only tokenizer files.`;

export async function tokenizeCommand(argv: readonly string[]): Promise<void> {
  const { positionals, flags: f } = parseArgs(argv, flags, "llamesh tokenize");
  if (positionals.length !== 2) {
    throw new LlameshError(`llamesh tokenize: expected <model-dir> <text>, got ${positionals.length} argument(s)\n${TOKENIZE_USAGE}`);
  }
  const which = f["tokenizer"] as string | undefined;
  if (which !== undefined && which !== "json" && which !== "model") {
    throw new LlameshError(`llamesh tokenize: --tokenizer ${JSON.stringify(which)} is not valid, expected json or model`);
  }
  const tok = await loadTokenizer(positionals[0]!, { prefer: which === "model" ? "tokenizer.model" : "tokenizer.json" });
  process.stdout.write(tok.encode(positionals[1]!, !f["no-bos"]).join(" ") + "\n");
}
