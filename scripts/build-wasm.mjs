#!/usr/bin/env node
// Builds src/kernels/kernels.wasm from src/kernels/assembly/kernels.ts with the AssemblyScript
// devDependency. The output is committed, so users need no toolchain: run `npm run build:wasm`
// only after editing the AssemblyScript sources.
//
// Flags: SIMD128 (no relaxed SIMD), threads (for the shared memory import), the stub runtime,
// memory imported as env.memory (shared, 1..65536 pages so any Arena fits), -O3, no assertions.
// The module must keep no data in memory: the first 64 KiB of every arena are reserved for it,
// and we verify below that it declares no data segments at all (and imports nothing but memory).
import asc from "assemblyscript/asc";
import { readFile, writeFile, mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const src = path.join(root, "src/kernels/assembly/kernels.ts"); // the entry: it imports the other files
const out = path.join(root, "src/kernels/kernels.wasm");
const wat = path.join(root, ".cache/kernels.wat");
await mkdir(path.dirname(wat), { recursive: true });

const args = [
  src,
  "--outFile", out,
  "--textFile", wat,
  "-O3", "--noAssert",
  "--runtime", "stub",
  "--enable", "simd,threads",
  "--disable", "relaxed-simd",
  "--importMemory", "--sharedMemory",
  "--initialMemory", "1", "--maximumMemory", "65536",
  "--memoryBase", "1024",
  "--noExportMemory",
  "--use", "abort=",
];
const { error, stdout, stderr } = await asc.main(args, {});
const log = stderr.toString();
if (log.trim()) process.stderr.write(log);
if (error) {
  console.error("build-wasm: " + error.message);
  process.exit(1);
}

// Verify the contract with the arena layout.
const bytes = await readFile(out);
const mod = new WebAssembly.Module(bytes);
const imports = WebAssembly.Module.imports(mod);
const bad = imports.filter((i) => !(i.module === "env" && i.name === "memory"));
if (bad.length) throw new Error("kernels.wasm imports more than env.memory: " + JSON.stringify(bad));
const text = await readFile(wat, "utf8");
if (/\(data\b/.test(text)) throw new Error("kernels.wasm has data segments: it must keep no static data in memory");
if (/relaxed/.test(text)) throw new Error("kernels.wasm uses relaxed SIMD");
const exports = WebAssembly.Module.exports(mod).map((e) => e.name);
console.log(`build-wasm: ${path.relative(root, out)} ${bytes.length} bytes; exports: ${exports.join(", ")}`);
