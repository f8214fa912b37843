/**
 * A long-running `llamesh serve --workers ...` keeps nothing per token: the cluster's per-sync rows
 * exist only for --perf-csv, and serve does not ask for one by default (it used to, and its memory
 * grew with every token). 2,000 tokens through a served cluster, then the same model with a CSV to
 * show the counter does count.
 */
import { test, after } from "node:test";
import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { createBackend } from "../../src/kernels/backend.js";
import { openDistributedModel } from "../../src/cluster/client.js";
import { parseArgs } from "../../src/cli/args.js";
import { modelSettings } from "../../src/cli/load.js";
import { serveFlags } from "../../src/cli/serve.js";
import { createApiServer } from "../../src/server/http.js";
import { STORIES, skipUnless, tempDir } from "../helpers/models.js";
import { spawnWorker } from "../cluster/helpers.js";

const backend = await createBackend({ threads: 1 });
after(() => backend.close());

test("2,000 tokens through a served cluster keep no per-token rows without --perf-csv", { skip: skipUnless(STORIES) }, async () => {
  const w = await spawnWorker(["--cache-dir", tempDir("llamesh-cache-")]);
  // the flags as `llamesh serve MODEL --workers HOST:PORT` parses them
  const settings = modelSettings(parseArgs(["--workers", `127.0.0.1:${w.port}`], serveFlags, "llamesh serve").flags, "llamesh serve");
  assert.ok(settings.cluster);
  assert.equal(settings.cluster.perfCsv, undefined, "serve asks for no CSV by default");
  const m = await openDistributedModel(STORIES, { ...settings.cluster, backend, maxSeqLen: 512, log: () => undefined });
  const server = createApiServer({ model: m, modelName: "stories" });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let tokens = 0;
  try {
    while (tokens < 2000) {
      const r = await fetch(`${base}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: "Once upon a time", max_tokens: 250, temperature: 0.8, seed: tokens }),
      });
      const j = (await r.json()) as { usage: { completion_tokens: number; prompt_tokens: number } };
      assert.equal(r.status, 200);
      tokens += j.usage.completion_tokens + j.usage.prompt_tokens;
      assert.equal(m.retainedRows, 0, `after ${tokens} tokens`);
    }
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await m.close();
  }
  // the same cluster with a CSV does keep rows: the counter above would have seen them
  const withCsv = await openDistributedModel(STORIES, { ...settings.cluster, perfCsv: `${tempDir()}/perf.csv`, backend, maxSeqLen: 64, log: () => undefined });
  await withCsv.forward([1, 2, 3], 0);
  assert.ok(withCsv.retainedRows > 0);
  await withCsv.close();
  await w.stop();
});
