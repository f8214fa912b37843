/**
 * `llamesh serve` as a user runs it: --parallel slots sharing the context (stories260K's 512
 * positions over 2 slots: 256 each, said in the log), LLAMESH_API_KEY required on the API but
 * not on /health or the page, and a completion served with the key.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnCli } from "../helpers/cli.js";
import { STORIES, skipUnless } from "../helpers/models.js";

test("llamesh serve --parallel 2 with LLAMESH_API_KEY: 2 slots of 256 positions, 401 without the key, served with it", { skip: skipUnless(STORIES) }, async () => {
  const served = spawnCli("llamesh", ["serve", STORIES, "--port", "0", "-t", "1", "--parallel", "2"], { env: { ...process.env, LLAMESH_API_KEY: "k1" } });
  try {
    const [, port] = await served.waitFor(/^listening 127\.0\.0\.1:(\d+)\n/);
    const base = `http://127.0.0.1:${port}`;
    assert.match(served.stderr(), /chat page at http:\/\/127\.0\.0\.1:\d+\/: 2 slots of 256 positions, API key required/);
    const h = (await (await fetch(`${base}/health`)).json()) as { status: string; slots: number };
    assert.deepEqual([h.status, h.slots], ["ok", 2]);
    assert.equal((await fetch(`${base}/`)).status, 200);
    const body = JSON.stringify({ prompt: "Once upon a time", max_tokens: 5, temperature: 0 });
    assert.equal((await fetch(`${base}/v1/completions`, { method: "POST", body })).status, 401);
    const ok = await fetch(`${base}/v1/completions`, { method: "POST", body, headers: { authorization: "Bearer k1" } });
    assert.equal(ok.status, 200);
    assert.equal(((await ok.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 5);
  } finally {
    served.child.kill("SIGTERM");
    assert.equal((await served.done).code, 0);
  }
});
