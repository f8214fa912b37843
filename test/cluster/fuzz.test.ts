/**
 * Fuzz in CI (bounded; bench/fuzz.ts is the engine and the longer run): 15,000 random and mutated
 * frames with a secret (TLS) and 15,000 without, over many connections, against a worker in a
 * child process with --model stories260K. Checked: it never crashes, never hangs (a probe's
 * PING is answered within 5 s throughout), its RSS stays under the stated bound, and afterwards a
 * real client gets the single-machine greedy text from it.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createBackend } from "../../src/kernels/backend.js";
import { openModel } from "../../src/engine/open.js";
import { openDistributedModel } from "../../src/cluster/client.js";
import { FUZZ_LIMITS, FUZZ_RSS_BOUND, fuzzLine, fuzzWorker } from "../../bench/fuzz.js";
import { STORIES, skipUnless } from "../helpers/models.js";
import { childWorker, greedy, killAll, SECRET } from "./hardening-kit.js";

const backend = await createBackend({ threads: 1 });
after(() => {
  killAll();
  backend.close();
});

const skip = skipUnless(STORIES) ? `${skipUnless(STORIES)} (the fuzz drives real sessions of stories260K)` : false;

for (const secret of [undefined, SECRET]) {
  test(`fuzz ${secret ? "with a secret (TLS)" : "without a secret"}: 15,000 random and mutated frames, no crash, no hang, memory bound held, then served identically`, { skip, timeout: 120_000 }, async (t) => {
    const w = await childWorker({ model: STORIES, secret, limits: FUZZ_LIMITS });
    const x = await fuzzWorker(w, { frames: 15000, secret, seed: secret ? 1313 : 1212, concurrency: 6 });
    t.diagnostic(fuzzLine(x));
    assert.ok(!x.crashed, `the worker crashed:\n${w.stderr().split("\n").slice(-15).join("\n")}`);
    assert.equal(x.hangs, 0, "every PING of the probe answered within 5 s");
    assert.ok(x.frames >= 15000 && x.connections >= 1000, `${x.frames} frames over ${x.connections} connections`);
    assert.ok(x.rssPeak <= FUZZ_RSS_BOUND, `RSS peak ${(x.rssPeak / 1048576).toFixed(0)} MB over the ${(FUZZ_RSS_BOUND / 1048576).toFixed(0)} MB bound`);
    assert.ok((x.counters["errorsSent"] ?? 0) > 100, "the fuzz reached the worker's checks");
    const expected = await greedy(await openModel(STORIES, { backend, maxSeqLen: 64 }), "Once upon a time", 16);
    const m = await openDistributedModel(STORIES, { workers: [{ host: "127.0.0.1", port: w.port }], secret: secret ? Buffer.from(secret) : null, backend, maxSeqLen: 64, log: () => undefined });
    try {
      assert.deepEqual(await greedy(m, "Once upon a time", 16), expected, "served identically after the fuzz");
    } finally {
      await m.close();
    }
    await w.stop();
  });
}
