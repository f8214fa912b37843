/**
 * V8's young generation for a server. Under a steady load V8 doubles its semi-spaces (1, 2, 4, 8,
 * 16 MiB each on 64-bit Node 20 and 24) every time the bytes surviving scavenges since the last
 * doubling exceed their size: a server's in-flight requests survive ~45 KB per scavenge, so the
 * young generation reaches its 2 x 16 MiB only after a few thousand requests, and the RSS climbed
 * by 24 MiB between request 100 and request 2,000 of the soak (scripts/soak), a growth that looks
 * like a leak but is V8 settling. A smaller fixed size is no cure: garbage that lives a request
 * long is then promoted and the old space grows instead (+7 to +19 MiB of old space in the soak with 4 or 1 MiB semi-spaces).
 *
 * So serve runs with the young generation V8 reaches under load, reserved at start as llama.cpp
 * reserves its KV cache: `llamesh serve` runs node with SERVE_V8_FLAGS (V8 reads them only at
 * start-up, so bin/start.js re-runs serve in a child node that has them), and serve says in its
 * start log which case it is.
 */

/** Each semi-space's size, MiB: V8's own maximum on 64-bit, so throughput is what V8 would reach. */
export const SERVE_SEMI_SPACE_MIB = 16;

/** The node flags that fix the young generation (bin/start.js gives them to serve). */
export const SERVE_V8_FLAGS: readonly string[] = [`--min-semi-space-size=${SERVE_SEMI_SPACE_MIB}`, `--max-semi-space-size=${SERVE_SEMI_SPACE_MIB}`];

/** The semi-space size a node flag sets in `execArgv` (MiB), or null. */
function flagMiB(execArgv: readonly string[], name: string): number | null {
  let v: number | null = null;
  for (let i = 0; i < execArgv.length; i++) {
    const a = execArgv[i]!.replace(/_/g, "-");
    if (a.startsWith(`${name}=`)) v = Number(a.slice(name.length + 1));
    else if (a === name && i + 1 < execArgv.length) v = Number(execArgv[++i]);
  }
  return v !== null && Number.isFinite(v) ? v : null;
}

export interface YoungGeneration {
  /** min = max semi-space size (MiB) when fixed, else null. */
  fixedMiB: number | null;
}

export function youngGeneration(execArgv: readonly string[] = process.execArgv): YoungGeneration {
  const min = flagMiB(execArgv, "--min-semi-space-size");
  const max = flagMiB(execArgv, "--max-semi-space-size");
  return { fixedMiB: min !== null && min > 0 && min === max ? min : null };
}

/** serve's start-log line on the JavaScript heap. */
export function youngGenerationReport(y: YoungGeneration = youngGeneration()): string {
  if (y.fixedMiB !== null) return `JavaScript young generation: fixed at 2 x ${y.fixedMiB} MiB semi-spaces (reserved at start, so the RSS under load stays at its start-up level)`;
  return (
    `JavaScript young generation: not fixed, V8 grows it under load (up to 2 x ${SERVE_SEMI_SPACE_MIB} MiB: the RSS then climbs by about 24 MiB over the first thousands of requests); ` +
    `llamesh serve fixes it unless LLAMESH_V8_DEFAULTS=1, or start node with ${SERVE_V8_FLAGS.join(" ")}`
  );
}
