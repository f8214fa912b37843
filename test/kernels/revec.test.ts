/**
 * V8's revectorizer switch (src/kernels/revec.ts): LLAMESH_REVEC=0 keeps it off, =1 insists and
 * fails with one line where it cannot run, other values are refused (revectorizeChoice, in this
 * process); and on x64, each case in its own Node process (the flag is process-wide), the
 * backend's name says whether it is on. The kernels' results with it on and off are checked by
 * running the kernel tests both ways (.ci/run).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { LlameshError } from "../../src/core/errors.js";
import { revectorizeChoice, revectorizeUnavailable } from "../../src/kernels/revec.js";

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

test("LLAMESH_REVEC: unset or 1 turn it on where it can run, 0 leaves it off, anything else is refused", () => {
  assert.equal(revectorizeChoice(undefined), why === undefined);
  assert.equal(revectorizeChoice(""), why === undefined);
  assert.equal(revectorizeChoice("0"), false);
  if (why === undefined) assert.equal(revectorizeChoice("1"), true);
  else assert.throws(() => revectorizeChoice("1"), (e: unknown) => e instanceof LlameshError && e.message === `LLAMESH_REVEC=1: V8's revectorizer cannot run here: ${why}`);
  assert.throws(() => revectorizeChoice("yes"), (e: unknown) => e instanceof LlameshError && e.message === 'LLAMESH_REVEC="yes": expected 0 or 1');
});

// Child processes of this Node: on x64 only, where the revectorizer exists (CI's arm64 run is an
// emulated binary, which cannot start children of itself)
const opts = process.arch === "x64" ? {} : { skip: `the revectorizer is x64's (this is ${process.arch})` };

test("by default the backend's name says revec exactly where it can run", opts, () => {
  const name = backendName(undefined);
  if (why === undefined) assert.match(name, /^wasm-relaxed\+revec x1 thread$/);
  else assert.doesNotMatch(name, /revec/, `it cannot run here (${why})`);
});

test("LLAMESH_REVEC=0: the backend runs without it", opts, () => {
  assert.doesNotMatch(backendName("0"), /revec/);
});

test("LLAMESH_REVEC=1: on, or the backend fails with one line saying why", opts, () => {
  const name = backendName("1");
  if (why === undefined) assert.match(name, /\+revec /);
  else assert.equal(name, `ERROR LLAMESH_REVEC=1: V8's revectorizer cannot run here: ${why}`);
});

test("LLAMESH_REVEC=yes: the backend fails with one line", opts, () => {
  assert.equal(backendName("yes"), 'ERROR LLAMESH_REVEC="yes": expected 0 or 1');
});
