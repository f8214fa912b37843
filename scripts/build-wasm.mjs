#!/usr/bin/env node
// Builds the two kernel modules from src/kernels/assembly/kernels.ts with the AssemblyScript
// devDependency: src/kernels/kernels.wasm (SIMD128, runs everywhere) and
// src/kernels/kernels-relaxed.wasm (SIMD128 + relaxed SIMD: the code under
// `if (ASC_FEATURE_RELAXED_SIMD)`, e.g. assembly/relaxed.ts). wasm.ts picks the relaxed one where
// WebAssembly.validate accepts it. The outputs are committed, so users need no toolchain: run
// `npm run build:wasm` only after editing the AssemblyScript sources.
//
// Flags: threads (for the shared memory import), the stub runtime, memory imported as env.memory
// (shared, 1..65536 pages so any Arena fits), -O3, no assertions. The modules must keep no data
// in memory: the first 64 KiB of every arena are reserved for them, and we verify below that they
// declare no data segments at all (and import nothing but memory).
import asc from "assemblyscript/asc";
import { readFile, mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const src = path.join(root, "src/kernels/assembly/kernels.ts"); // the entry: it imports the other files

const BUILDS = [
  { name: "kernels.wasm", features: "simd,threads", disable: ["--disable", "relaxed-simd"], relaxed: false },
  { name: "kernels-relaxed.wasm", features: "simd,relaxed-simd,threads", disable: [], relaxed: true },
];

for (const b of BUILDS) {
  const out = path.join(root, "src/kernels", b.name);
  const wat = path.join(root, ".cache", b.name.replace(/\.wasm$/, ".wat"));
  await mkdir(path.dirname(wat), { recursive: true });
  const args = [
    src,
    "--outFile", out,
    "--textFile", wat,
    "-O3", "--noAssert",
    "--runtime", "stub",
    "--enable", b.features,
    ...b.disable,
    "--importMemory", "--sharedMemory",
    "--initialMemory", "1", "--maximumMemory", "65536",
    "--memoryBase", "1024",
    "--noExportMemory",
    "--use", "abort=",
  ];
  const { error, stderr } = await asc.main(args, {});
  const log = stderr.toString();
  if (log.trim()) process.stderr.write(log);
  if (error) {
    console.error(`build-wasm: ${b.name}: ${error.message}`);
    process.exit(1);
  }

  // Verify the contract with the arena layout.
  const bytes = await readFile(out);
  const text = await readFile(wat, "utf8");
  const usesRelaxed = /relaxed/.test(text);
  if (usesRelaxed !== b.relaxed) throw new Error(`${b.name} ${b.relaxed ? "does not use" : "uses"} relaxed SIMD`);
  if (/\(data\b/.test(text)) throw new Error(`${b.name} has data segments: it must keep no static data in memory`);
  // The relaxed module may not validate on this Node (Node 20 without --experimental-wasm-relaxed-simd).
  if (!b.relaxed || WebAssembly.validate(bytes)) {
    const mod = new WebAssembly.Module(bytes);
    const bad = WebAssembly.Module.imports(mod).filter((i) => !(i.module === "env" && i.name === "memory"));
    if (bad.length) throw new Error(`${b.name} imports more than env.memory: ` + JSON.stringify(bad));
    const exports = WebAssembly.Module.exports(mod).map((e) => e.name);
    console.log(`build-wasm: src/kernels/${b.name} ${bytes.length} bytes; exports: ${exports.join(", ")}`);
  } else {
    console.log(`build-wasm: src/kernels/${b.name} ${bytes.length} bytes (this Node does not validate relaxed SIMD: not checked further)`);
  }
}
