/**
 * Shared by bin/client, bin/llamesh and bin/worker: run the compiled command in dist/, or, when
 * it is not there (before `npm install`, which compiles the TypeScript), say so in one line
 * instead of Node's ERR_MODULE_NOT_FOUND stack.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

/** @param {string} name the command's module in dist/src/cli/ */
export async function start(name) {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
  const entry = path.join(root, "dist", "src", "cli", `${name}.js`);
  if (!fs.existsSync(entry)) {
    fail(`llamesh is not built (${entry} is missing): run \`npm install\` in ${root}, which compiles it into dist/`);
  }
  if (name === "llamesh" && process.argv[2] === "serve" && (await relaunchForServe(root))) return;
  if (process.env["LLAMESH_SERVE_CHILD"] === "1" && process.channel) {
    // the launcher's end of the IPC channel closes when it exits, even by SIGKILL: serve then
    // shuts down as on SIGTERM instead of living on, orphaned, holding the port
    delete process.env["LLAMESH_SERVE_CHILD"];
    process.channel.unref();
    process.on("disconnect", () => process.kill(process.pid, "SIGTERM"));
  }
  try {
    await import(pathToFileURL(entry).href);
  } catch (e) {
    // a dependency or a compiled module is missing: node_modules/ or dist/ is incomplete
    if (e instanceof Error && "code" in e && e.code === "ERR_MODULE_NOT_FOUND") {
      fail(`llamesh is not installed completely (${e.message.split("\n")[0]}): run \`npm install\` in ${root}`);
    }
    throw e;
  }
}

/**
 * `llamesh serve` runs with V8's young generation fixed (src/server/heap.ts: the RSS of a long-lived
 * server otherwise climbs ~24 MiB while V8 doubles it). V8 reads those flags only at start-up, and a
 * `#!/usr/bin/env -S node FLAGS` line fails where env has no -S (BusyBox: Alpine; coreutils before
 * 8.30), so serve re-runs itself in a child node that has them, unless they are already set.
 * Signals other than SIGINT (which a terminal sends to the whole process group, the child too) are
 * passed on; the exit status is the child's. An IPC channel ties the child's life to the launcher's.
 * @param {string} root @returns {Promise<boolean>} whether a child ran the command
 */
async function relaunchForServe(root) {
  const heap = await import(pathToFileURL(path.join(root, "dist", "src", "server", "heap.js")).href);
  if (heap.youngGeneration(process.execArgv).fixedMiB !== null || process.env["LLAMESH_V8_DEFAULTS"] === "1") return false;
  const child = spawn(process.execPath, [...heap.SERVE_V8_FLAGS, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: ["inherit", "inherit", "inherit", "ipc"],
    env: { ...process.env, LLAMESH_SERVE_CHILD: "1" },
  });
  process.on("SIGINT", () => {});
  for (const sig of /** @type {const} */ (["SIGTERM", "SIGHUP"])) process.on(sig, () => child.kill(sig));
  const [code, signal] = await new Promise((resolve) => child.on("exit", (c, s) => resolve([c, s])));
  process.exitCode = code ?? (signal === "SIGINT" ? 130 : 128 + 15);
  return true;
}

/** @param {string} message */
function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(1);
}
