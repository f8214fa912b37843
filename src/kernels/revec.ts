/**
 * V8's WebAssembly revectorizer: with --experimental-wasm-revectorize, TurboFan fuses pairs of
 * SIMD128 operations on adjacent data (two loads 16 bytes apart, the same operation on each
 * half, then two adjacent stores or one add of the halves) into one 256-bit AVX2 operation.
 * It is an x64 optimization of V8 (Node 24 and 26 build it in; Node 20's V8 does not know the
 * flag), off by default there as "experimental"; V8's fuzzers run with it on.
 *
 * WebAssembly has 128-bit vectors only, and on x64 that halves what a core's vector units do
 * per instruction: llama.cpp's AVX2 and AVX-512 loops work on 256 or 512 bits. The decode kernels
 * (assembly/relaxed.ts, q4x4.ts) are written so that the revectorizer pairs their halves.
 *
 * The flag is process-wide and read when V8 compiles a function with TurboFan, so it is set once,
 * before the first kernel module is compiled (wasm.ts loadKernelBuild). LLAMESH_REVEC=0 leaves it
 * off (A/B runs, or if an engine ever miscompiles with it); LLAMESH_REVEC=1 insists on it.
 */
import { readFileSync } from "node:fs";
import v8 from "node:v8";
import { LlameshError } from "../core/errors.js";

const FLAG = "--experimental-wasm-revectorize";
/** Node majors whose V8 has the flag and passed the kernel tests with it (x64). */
const MIN_NODE = 24;

let decided: boolean | undefined;

/** Why the revectorizer cannot run here, or undefined if it can. */
export function revectorizeUnavailable(): string | undefined {
  if (process.arch !== "x64") return `it is an x64 optimization (this is ${process.arch})`;
  const major = Number(process.versions.node.split(".")[0]);
  if (!(major >= MIN_NODE)) return `Node ${process.versions.node}'s V8 does not have ${FLAG} (Node ${MIN_NODE}+)`;
  if (!cpuHasAvx2()) return "this CPU has no AVX2";
  return undefined;
}

/** AVX2 per /proc/cpuinfo (Linux); elsewhere assumed, V8 checks the CPU itself too. */
function cpuHasAvx2(): boolean {
  try {
    return /^flags\s*:.*\bavx2\b/m.test(readFileSync("/proc/cpuinfo", "utf8"));
  } catch {
    return true;
  }
}

/**
 * What LLAMESH_REVEC=env decides here: true (turn it on), false (leave it off: "0", or unset where
 * it cannot run). "1" where it cannot run, or any other value, is an error naming the variable.
 */
export function revectorizeChoice(env: string | undefined): boolean {
  if (env !== undefined && env !== "" && env !== "0" && env !== "1") {
    throw new LlameshError(`LLAMESH_REVEC=${JSON.stringify(env)}: expected 0 or 1`);
  }
  if (env === "0") return false;
  const why = revectorizeUnavailable();
  if (why !== undefined) {
    if (env === "1") throw new LlameshError(`LLAMESH_REVEC=1: V8's revectorizer cannot run here: ${why}`);
    return false;
  }
  return true;
}

/**
 * Turn the revectorizer on as revectorizeChoice(LLAMESH_REVEC) decides (its errors included).
 * Idempotent; call before compiling kernels.
 */
export function enableRevectorize(): boolean {
  if (decided !== undefined) return decided;
  decided = revectorizeChoice(process.env["LLAMESH_REVEC"]);
  if (decided) v8.setFlagsFromString(FLAG);
  return decided;
}

/** Whether enableRevectorize turned the revectorizer on (false before it is called). */
export function revectorizing(): boolean {
  return decided === true;
}
