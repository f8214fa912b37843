/**
 * A small, strict command-line parser: every flag is declared with its type, and a bad value is
 * a one-line error naming the flag and what was expected.
 *
 * A command declares its flags once, `as const satisfies FlagSpecs`, and `parseArgs` returns
 * them typed from that declaration (`Flags<typeof specs>`): an "int" flag reads as a number, a
 * "string" flag with `choices` as the union of those strings, a boolean as a boolean (false when
 * absent), and any other flag is `undefined` when absent unless it declares a `default`. So no
 * command reads a flag back with a cast.
 *
 * `--help` / `-h` is known to every command: `parseArgs` returns `help: true` and, when help was
 * asked for, does not throw for the other arguments (`client -n abc --help` shows the usage).
 */
import { LlameshError } from "../core/errors.js";

export type FlagType = "string" | "int" | "number" | "boolean";

interface FlagBase {
  /** Other spellings, e.g. ["-n"] or ["--temp"]. */
  readonly aliases?: readonly string[];
  /** What the value means, for messages ("a number of tokens"). */
  readonly help: string;
}

export interface StringFlag extends FlagBase {
  readonly type: "string";
  /** The only values accepted, when the flag is one of a few words. */
  readonly choices?: readonly string[];
  readonly default?: string;
}

export interface NumberFlag extends FlagBase {
  /** "int" accepts integers only. */
  readonly type: "int" | "number";
  /** Inclusive bounds. */
  readonly min?: number;
  readonly max?: number;
  readonly default?: number;
}

export interface BooleanFlag extends FlagBase {
  readonly type: "boolean";
}

export type FlagSpec = StringFlag | NumberFlag | BooleanFlag;

/** A command's flags by long name (without the leading "--"). */
export type FlagSpecs = { readonly [name: string]: FlagSpec };

/** The value type one spec declares. */
export type FlagValue<S extends FlagSpec> = S extends BooleanFlag
  ? boolean
  : S extends NumberFlag
    ? number
    : S extends { readonly choices: readonly (infer C extends string)[] }
      ? C
      : string;

/** The parsed flags of a spec table: present when defaulted or boolean, else possibly undefined. */
export type Flags<S extends FlagSpecs> = {
  readonly [K in keyof S]: S[K] extends BooleanFlag | { readonly default: string | number }
    ? FlagValue<S[K]>
    : FlagValue<S[K]> | undefined;
};

export interface Parsed<S extends FlagSpecs> {
  positionals: string[];
  flags: Flags<S>;
  /** --help or -h was given: show the usage and do nothing else. */
  help: boolean;
}

const HELP = new Set(["--help", "-h"]);

export function parseArgs<const S extends FlagSpecs>(argv: readonly string[], specs: S, command: string): Parsed<S> {
  const byName = new Map<string, string>();
  for (const [name, spec] of Object.entries(specs)) {
    byName.set(`--${name}`, name);
    for (const a of spec.aliases ?? []) byName.set(a, name);
  }
  const values: Record<string, string | number | boolean> = {};
  for (const [name, spec] of Object.entries(specs)) {
    if (spec.type === "boolean") values[name] = false;
    else if (spec.default !== undefined) values[name] = spec.default;
  }
  const positionals: string[] = [];
  let help = false;
  // The first bad argument; thrown at the end unless --help was asked for.
  let error: LlameshError | undefined;
  const fail = (message: string): void => void (error ??= new LlameshError(message));
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
      if (HELP.has(key)) {
        help = true;
        continue;
      }
      const known = [...Object.keys(specs).map((n) => `--${n}`), "--help"].join(", ");
      fail(`${command}: unknown option ${key} (known: ${known})`);
      continue;
    }
    const spec = specs[name]!;
    if (spec.type === "boolean") {
      values[name] = inline === undefined ? true : inline !== "false";
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined) {
      fail(`${command}: ${key} needs a value (${spec.help})`);
      continue;
    }
    try {
      values[name] = convert(value, key, spec, command);
    } catch (e) {
      if (!(e instanceof LlameshError)) throw e;
      fail(e.message);
    }
  }
  if (error && !help) throw error;
  // The values were built from these specs, so they have the types Flags<S> derives from them.
  return { positionals, flags: values as Flags<S>, help };
}

function convert(value: string, key: string, spec: StringFlag | NumberFlag, command: string): string | number {
  if (spec.type === "string") {
    if (spec.choices && !spec.choices.includes(value)) {
      throw new LlameshError(`${command}: ${key} ${JSON.stringify(value)} is not valid, expected ${orList(spec.choices)}`);
    }
    return value;
  }
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

/** "a", "a or b", "a, b or c". */
function orList(words: readonly string[]): string {
  return words.length <= 1 ? words.join("") : `${words.slice(0, -1).join(", ")} or ${words[words.length - 1]}`;
}

/**
 * A usage text naming the command actually run (`client`, `llamesh run`): the synopsis' first
 * line after `usage: <command> `, its other lines aligned under it, then the description.
 */
export function usageText(command: string, synopsis: readonly string[], description: string): string {
  const pad = " ".repeat(`usage: ${command} `.length);
  return [`usage: ${command} ${synopsis[0] ?? ""}`, ...synopsis.slice(1).map((l) => pad + l), description].join("\n");
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
