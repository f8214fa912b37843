/** `npm run demo`: its random model's control bytes are shown escaped, never sent to the terminal raw. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as path from "node:path";
import { escapeControls } from "../../src/cli/escape.js";
import { runCli, type CliResult } from "../helpers/cli.js";
import { STORIES, skipUnless } from "../helpers/models.js";

/** Unicode's control characters (general category Cc) other than newline and tab. */
const RAW_CONTROL = /[^\P{Cc}\n\t]/u;

test("escapeControls: C0 (but newline and tab), DEL and C1 become escapes; other text stays", () => {
  assert.equal(escapeControls("a\x1b[31mb\x00c\rd\x7f"), "a\\x1b[31mb\\x00c\\x0dd\\x7f");
  assert.equal(escapeControls("\u009b2J"), "\\u009b2J");
  assert.equal(escapeControls("line\n\ttab é ✓ \ufffd"), "line\n\ttab é ✓ \ufffd");
  for (let c = 0; c < 0x100; c++) assert.doesNotMatch(escapeControls(String.fromCharCode(c)), RAW_CONTROL, `U+${c.toString(16)}`);
});

function demo(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.resolve("dist/src/cli/demo.js"), ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test("the demo's random text reaches stdout with its control bytes escaped", async () => {
  const r = await demo([]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /RANDOM weights/);
  assert.ok(r.stdout.length > 50, JSON.stringify(r.stdout));
  assert.doesNotMatch(r.stdout, RAW_CONTROL);
  // the seeded random text does hold control bytes, so the escaping was exercised
  assert.match(r.stdout, /\\x[01][0-9a-f]/);
});

test("a real model's text is passed on as it is", { skip: skipUnless(STORIES) }, async () => {
  const args = ["-n", "30", "--temp", "0"];
  const [viaDemo, direct] = await Promise.all([
    demo([STORIES, ...args]),
    runCli("client", [STORIES, "-i", "It was a dark and stormy night", "-t", "1", ...args]),
  ]);
  assert.equal(viaDemo.code, 0, viaDemo.stderr);
  assert.equal(direct.code, 0, direct.stderr);
  assert.equal(viaDemo.stdout, direct.stdout);
});
