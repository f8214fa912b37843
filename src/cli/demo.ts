/**
 * `npm run demo [-- <model-dir>]`: with no argument, builds (once, cached in .cache/) a small
 * synthetic Llama with seeded random weights and the project's own byte-level tokenizer — nothing
 * can be downloaded here — and runs bin/client on it. With a folder, runs that real model.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { SHAPES, writeSyntheticModel } from "../model/synthetic.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const args = process.argv.slice(2);
let modelDir = args[0];
const prompt = "It was a dark and stormy night";

if (!modelDir) {
  modelDir = path.join(root, ".cache", "demo-model");
  if (!fs.existsSync(path.join(modelDir, "config.json"))) {
    process.stderr.write(`Building the demo model in ${path.relative(process.cwd(), modelDir)} (once)...\n`);
    writeSyntheticModel(modelDir, SHAPES["demo"]!, { seed: 42, dtype: "BF16", shards: 2 });
  }
  process.stderr.write(
    "NOTE: this demo model has RANDOM weights (a synthetic Llama: 4 layers, dim 256, GQA), so its text is gibberish.\n" +
      "      It shows the whole pipeline working. For real text: npm run demo -- <hugging-face-llama-folder>\n" +
      "      e.g. npm run demo -- ../shared/models/stories260K\n\n",
  );
}

// a fixed seed makes the demo repeatable (extra arguments after the folder override it)
const cmd = [path.join(root, "bin", "client"), modelDir, "-n", "100", "-i", prompt, "--seed", "2", ...args.slice(1)];
process.stderr.write(`$ bin/client ${cmd.slice(1).map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(" ")}\n`);
const r = spawnSync(process.execPath, cmd, { stdio: "inherit" });
process.exitCode = r.status ?? 1;
