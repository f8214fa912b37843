#!/usr/bin/env node
// Kernel A/B of matmulQ8 between two kernel modules, alternating (A B, then B A, ...): the
// TinyLlama 1.1B shapes x 22 layers (~1 GB of valid Q8_0 weights, levels -127..127, streamed from
// DRAM as in a forward pass), or with HOT=1 one 512x2048 matrix (2.2 MB; SHAPE=RxC another) 40 times
// (in cache).
// Prints best and median ms and GMAC/s per token count and the speed-up of the second module.
// usage (after npx tsc -p .): node scripts/q8-batch-ab.mjs <a.wasm> <b.wasm> <threads> <nTok,...> <rounds>
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
const WT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { Arena } = await import(WT + "/dist/src/kernels/arena.js");
const { WasmBackend } = await import(WT + "/dist/src/kernels/wasm.js");
const { q8RowBytes } = await import(WT + "/dist/src/kernels/q8.js");
const [baseFile, newFile, thr, toks, roundsS] = process.argv.slice(2);
const threads = Number(thr), tokList = toks.split(",").map(Number), rounds = Number(roundsS);
const shapes = [[2048, 2048], [256, 2048], [256, 2048], [2048, 2048], [5632, 2048], [5632, 2048], [2048, 5632]];
const HOT = process.env.HOT === "1";
const LAYERS = HOT ? 1 : 22;
if (HOT) shapes.splice(0, shapes.length, (process.env.SHAPE ?? "512x2048").split("x").map(Number));
let bytes = 0;
for (const [r, c] of shapes) bytes += r * q8RowBytes(c);
bytes *= LAYERS;
const arena = new Arena(bytes + (64 << 20), "ab");
const base = arena.alloc(bytes, 4096);
// valid Q8_0: f16 scale ~0.01, levels in -127..127
const u8 = arena.u8(base, bytes);
let s = 12345;
for (let i = 0; i < bytes; i++) { s = (s * 1103515245 + 12345) >>> 0; u8[i] = (s >>> 16) % 255 + 129; }
for (let o = 0; o + 34 <= bytes; o += 34) { u8[o] = 0x1e; u8[o + 1] = 0x21; }
const mats = [];
let p = base;
for (let l = 0; l < LAYERS; l++) for (const [rows, cols] of shapes) for (let rep = 0; rep < (HOT ? 40 : 1); rep++) { if (HOT && rep) { mats.push({ ...mats[mats.length - 1] }); continue; } mats.push({ w: p, rows, cols }); p += rows * q8RowBytes(cols); }

const maxTok = Math.max(...tokList);
const x = arena.alloc(maxTok * q8RowBytes(5632));
const xu = arena.u8(x, maxTok * q8RowBytes(5632));
for (let i = 0; i < xu.length; i++) { s = (s * 1103515245 + 12345) >>> 0; xu[i] = (s >>> 16) % 255 + 129; }
for (let o = 0; o + 34 <= xu.length; o += 34) { xu[o] = 0x1e; xu[o + 1] = 0x21; }
const out = arena.alloc(maxTok * 5632 * 4);
const builds = [["base", new WebAssembly.Module(readFileSync(baseFile))], ["new", new WebAssembly.Module(readFileSync(newFile))]];
const ks = [];
for (const [name, module] of builds) { const be = await WasmBackend.create(threads, { module }); ks.push({ name, be, k: be.bind(arena) }); }
let macsPerTok = 0;
for (const m of mats) macsPerTok += m.rows * m.cols;
const pass = (k, nTok) => { const t0 = process.hrtime.bigint(); for (const m of mats) k.matmulQ8(out, m.w, x, m.rows, m.cols, nTok); return Number(process.hrtime.bigint() - t0) / 1e6; };
for (const { k } of ks) for (const n of tokList) pass(k, n); // warm up
const res = {};
for (let r = 0; r < rounds; r++) for (const n of tokList) for (const { name, k } of (r % 2 ? [...ks].reverse() : ks)) { (res[`${name} ${n}`] ??= []).push(pass(k, n)); }
const med = (a) => { const b = [...a].sort((x, y) => x - y); return b[b.length >> 1]; };
for (const n of tokList) {
  const a = res[`base ${n}`], b = res[`new ${n}`];
  const g = (ms) => (macsPerTok * n / ms / 1e6).toFixed(1);
  console.log(`nTok ${n}: base best ${Math.min(...a).toFixed(1)} ms (${g(Math.min(...a))} GMAC/s) median ${med(a).toFixed(1)} | new best ${Math.min(...b).toFixed(1)} ms (${g(Math.min(...b))} GMAC/s) median ${med(b).toFixed(1)} | speed-up best ${(Math.min(...a) / Math.min(...b)).toFixed(2)}x median ${(med(a) / med(b)).toFixed(2)}x`);
}
for (const { be } of ks) await be.close();
