/**
 * `npm run demo [-- <model-dir> [client flags]]`: starts two workers on loopback and runs
 * bin/client against them, so one command shows the whole pipeline, cluster included.
 * With no folder it builds (once, cached in .cache/) a small synthetic Llama with seeded random
 * weights and the project's own byte-level tokenizer — nothing can be downloaded here.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { SHAPES, writeSyntheticModel } from "../synthetic/checkpoint.js";
import { escapeControls } from "./escape.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const args = process.argv.slice(2);
let modelDir = args[0];
/** The demo's own model: random weights, so its text holds control bytes a terminal must not act on. */
const random = !modelDir;
const prompt = "It was a dark and stormy night";
const extra: string[] = [];

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
  extra.push("--seed", "3"); // repeatable (a seed whose random text is not cut short by an end-of-sequence token)
}

/** Start `bin/worker 0` (a free port) on loopback and resolve with its address once it listens. */
function startWorker(i: number): Promise<{ child: ChildProcess; addr: string }> {
  const cacheDir = path.join(root, ".cache", "demo-workers", String(i));
  // detached (its own process group): Ctrl-C in the terminal goes to the client, which then
  // needs its workers to finish the token in flight and print its report
  const child = spawn(process.execPath, [path.join(root, "bin", "worker"), "0", "--host", "127.0.0.1", "--threads", "1", "--cache-dir", cacheDir], {
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  return new Promise((resolve, reject) => {
    let out = "";
    const onData = (d: Buffer): void => {
      out += d.toString();
      const m = /listening (127\.0\.0\.1:\d+)/.exec(out);
      if (m) {
        process.stderr.write(out.split("\n").filter((l) => l.startsWith("Worker")).map((l) => `[worker ${i}] ${l}\n`).join(""));
        resolve({ child, addr: m[1]! });
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.on("exit", (code) => reject(new Error(`worker ${i} exited (${code}): ${out}`)));
  });
}

const workers = await Promise.all([startWorker(1), startWorker(2)]);
// detached workers would outlive a demo that ends another way than through the finally below
process.on("exit", () => {
  for (const w of workers) w.child.kill();
});
try {
  const cmd = [path.join(root, "bin", "client"), modelDir, "-n", "100", "-i", prompt, "--workers", workers.map((w) => w.addr).join(","), "--threads", "1", ...extra, ...args.slice(1)];
  process.stderr.write(`$ bin/client ${cmd.slice(1).map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(" ")}\n`);
  // the client handles Ctrl-C (report, exit 130); the demo waits for it and passes its status on
  process.on("SIGINT", () => undefined);
  const client = spawn(process.execPath, cmd, { stdio: ["inherit", random ? "pipe" : "inherit", "inherit"] });
  if (random) {
    client.stdout!.setEncoding("utf8");
    client.stdout!.on("data", (text: string) => process.stdout.write(escapeControls(text)));
  }
  const status = await new Promise<number>((resolve) => client.on("close", (code, signal) => resolve(code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : 1))));
  process.exitCode = status;
  if (status === 0) {
    process.stderr.write(
      "\nBoth workers ran on this machine, sharing its cores and its memory bandwidth, so the split cannot be\n" +
        "faster than one process here: the demo shows the mechanics. On a LAN: bin/worker 1234 on each machine,\n" +
        "then bin/client MODEL --workers host1:1234,host2:1234 (docs/cluster.md; npm run bench:cluster measures two\n" +
        "\"machines\" made of network namespaces, one core each).\n",
    );
  }
} finally {
  for (const w of workers) {
    w.child.removeAllListeners("exit");
    w.child.kill();
  }
}
