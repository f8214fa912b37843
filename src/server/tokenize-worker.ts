/**
 * The worker thread of tokenize.ts: loads the model's tokenizer from its path (the same files the
 * server's own tokenizer came from) and encodes the texts it is sent, one at a time.
 */
import { parentPort, workerData } from "node:worker_threads";
import { loadTokenizerForSync } from "../model/open-tokenizer.js";

const tokenizer = loadTokenizerForSync((workerData as { path: string }).path);
parentPort!.on("message", (m: { id: number; text: string; addBos: boolean }) => {
  try {
    parentPort!.postMessage({ id: m.id, ids: tokenizer.encode(m.text, m.addBos) });
  } catch (e) {
    parentPort!.postMessage({ id: m.id, error: e instanceof Error ? e.message : String(e) });
  }
});
