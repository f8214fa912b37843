/**
 * Shared by bin/client, bin/llamesh and bin/worker: run the compiled command in dist/, or, when
 * it is not there (before `npm install`, which compiles the TypeScript), say so in one line
 * instead of Node's ERR_MODULE_NOT_FOUND stack.
 */
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

/** @param {string} message */
function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(1);
}
