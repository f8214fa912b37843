/**
 * V8's revectorizer switch (src/kernels/revec.ts), each case in its own Node process (the flag is
 * process-wide): LLAMESH_REVEC=0 keeps it off, =1 insists and fails with one line where it cannot
 * run, other values are refused, and the backend's name says whether it is on. The kernels'
 * results with it on and off are checked by running the kernel tests both ways (.ci/run).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { revectorizeUnavailable } from "../../src/kernels/revec.js";

const wasmJs = fileURLToPath(new URL("../../src/kernels/wasm.js", import.meta.url));
const script = `
const { WasmBackend } = await import(${JSON.stringify(wasmJs)});
try {
  const be = await WasmBackend.create(1);
  console.log(be.name);
  await be.close();
} catch (e) {
  console.log("ERROR " + e.message);
}`;

function backendName(env: string | undefined): string {
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
    encoding: "utf8",
    env: { ...process.env, LLAMESH_REVEC: env },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /unrecognized flag/, "a flag this V8 does not know was set");
  return r.stdout.trim();
}

const why = revectorizeUnavailable();

test("by default the revectorizer is on exactly where it can run", () => {
  const name = backendName(undefined);
  if (why === undefined) assert.match(name, /^wasm-relaxed\+revec x1 thread$/);
  else assert.doesNotMatch(name, /revec/, `it cannot run here (${why})`);
});

test("LLAMESH_REVEC=0 leaves it off", () => {
  assert.doesNotMatch(backendName("0"), /revec/);
});

test("LLAMESH_REVEC=1 turns it on, or says in one line why it cannot", () => {
  const name = backendName("1");
  if (why === undefined) assert.match(name, /\+revec /);
  else assert.equal(name, `ERROR LLAMESH_REVEC=1: V8's revectorizer cannot run here: ${why}`);
});

test("other LLAMESH_REVEC values are refused", () => {
  assert.equal(backendName("yes"), 'ERROR LLAMESH_REVEC="yes": expected 0 or 1');
});
