#!/usr/bin/env node
// The engine's own bound for batched decode: a 1-token forwardBatch step against an 8-sequence
// step (one token of each of 8 slots, 32 prompt tokens already in each), alternating, in the
// checkout given (its dist/ and kernels). Prints best and median ms and 8 x t1 / t8, and the
// same for a 9-token prompt (slot 7 from position 0 each round: bench compare's prompt length).
// usage: node scripts/step-ab.mjs <checkout> <model.gguf> <threads> <rounds>
const [WT, model, thr, roundsS] = process.argv.slice(2);
const { openModel } = await import(WT + "/dist/src/engine/open.js");
const { createBackend } = await import(WT + "/dist/src/kernels/wasm.js");
const backend = await createBackend({ threads: Number(thr) });
const m = await openModel(model, { backend, slots: 8, maxSeqLen: 512 });
const prompt = Array.from({ length: 32 }, (_, i) => 100 + i * 7);
for (let s = 0; s < 8; s++) await m.forwardBatch([{ slot: s, pos: 0, tokens: prompt.slice(0, Math.min(m.batch, 32)) }]);
let pos = 32;
const one = async () => { const t = performance.now(); await m.forwardBatch([{ slot: 0, pos, tokens: [200] }]); return performance.now() - t; };
const eight = async () => { const t = performance.now(); await m.forwardBatch(Array.from({ length: 8 }, (_, s) => ({ slot: s, pos, tokens: [200 + s] }))); return performance.now() - t; };
const nine = async () => { const t = performance.now(); await m.forwardBatch([{ slot: 7, pos: 0, tokens: prompt.slice(0, 9) }]); return performance.now() - t; };
const a = [], b = [], c = [];
for (let r = 0; r < Number(roundsS); r++) { a.push(await one()); b.push(await eight()); pos++; }
for (let r = 0; r < Number(roundsS); r++) c.push(await nine());
const med = (v) => [...v].sort((x, y) => x - y)[v.length >> 1];
console.log(`${backend.name}: 1 token best ${Math.min(...a).toFixed(1)} median ${med(a).toFixed(1)} ms | 8 sequences best ${Math.min(...b).toFixed(1)} median ${med(b).toFixed(1)} ms | ratio best ${(Math.min(...b) / Math.min(...a)).toFixed(2)} median ${(med(b) / med(a)).toFixed(2)} | implied 8-stream speed-up ${(8 * Math.min(...a) / Math.min(...b)).toFixed(2)}x`);
console.log(`  9-token prompt best ${Math.min(...c).toFixed(1)} median ${med(c).toFixed(1)} ms (${(9000 / Math.min(...c)).toFixed(1)} tok/s best)`);
await backend.close?.();
process.exit(0);
