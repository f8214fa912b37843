/**
 * A small, strict command-line parser: every flag is declared with its type, and a bad value is
 * a one-line error naming the flag and what was expected.
 */
import { LlameshError } from "../core/errors.js";

export type FlagType = "string" | "int" | "number" | "boolean";

export interface FlagSpec {
  type: FlagType;
  /** Other spellings, e.g. ["-n"]. */
  aliases?: string[];
  /** Inclusive bounds for numbers. */
  min?: number;
  max?: number;
  /** What the value means, for messages ("a number of tokens"). */
  help: string;
}

export type FlagValues = Record<string, string | number | boolean | undefined>;

export interface Parsed {
  positionals: string[];
  flags: FlagValues;
}

export function parseArgs(argv: readonly string[], specs: Record<string, FlagSpec>, command: string): Parsed {
  const byName = new Map<string, string>();
  for (const [name, spec] of Object.entries(specs)) {
    byName.set(`--${name}`, name);
    for (const a of spec.aliases ?? []) byName.set(a, name);
  }
  const flags: FlagValues = {};
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-" || /^-\d/.test(arg)) {
      positionals.push(arg);
      continue;
    }
    let key = arg;
    let inline: string | undefined;
    const eq = arg.indexOf("=");
    if (arg.startsWith("--") && eq > 0) {
      key = arg.slice(0, eq);
      inline = arg.slice(eq + 1);
    }
    const name = byName.get(key);
    if (!name) {
      const known = [...byName.keys()].filter((k) => k.startsWith("--")).join(", ");
      throw new LlameshError(`${command}: unknown option ${key} (known: ${known})`);
    }
    const spec = specs[name]!;
    if (spec.type === "boolean") {
      flags[name] = inline === undefined ? true : inline !== "false";
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined) throw new LlameshError(`${command}: ${key} needs a value (${spec.help})`);
    flags[name] = convert(value, key, spec, command);
  }
  return { positionals, flags };
}

function convert(value: string, key: string, spec: FlagSpec, command: string): string | number {
  if (spec.type === "string") return value;
  const n = Number(value);
  const bad = (): never => {
    const range =
      spec.min !== undefined && spec.max !== undefined
        ? ` between ${spec.min} and ${spec.max}`
        : spec.min !== undefined
          ? ` >= ${spec.min}`
          : "";
    throw new LlameshError(`${command}: ${key} ${JSON.stringify(value)} is not valid, expected ${spec.type === "int" ? "an integer" : "a number"}${range} (${spec.help})`);
  };
  if (value.trim() === "" || !Number.isFinite(n)) bad();
  if (spec.type === "int" && !Number.isInteger(n)) bad();
  if (spec.min !== undefined && n < spec.min) bad();
  if (spec.max !== undefined && n > spec.max) bad();
  return n;
}

/** Default thread count: OMP_NUM_THREADS when set (the seed's habit), else the core count. */
export function defaultThreads(env: NodeJS.ProcessEnv, cores: number): number {
  const omp = env["OMP_NUM_THREADS"];
  if (omp !== undefined && omp !== "") {
    const n = Number(omp);
    if (!Number.isInteger(n) || n < 1 || n > 256) {
      throw new LlameshError(`OMP_NUM_THREADS=${JSON.stringify(omp)} is not valid, expected an integer between 1 and 256`);
    }
    return n;
  }
  return Math.max(1, cores);
}
