/**
 * A problem the user can fix (bad file, bad flag, unreachable peer). The CLI prints
 * `error: <message>` on one line and exits non-zero, without a stack trace.
 * Anything else that escapes is a bug and is reported with its stack.
 */
export class LlameshError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LlameshError";
  }
}

/** A failed read or open of `file` as a one-line LlameshError ("file not found" for ENOENT). */
export function fileError(file: string, e: unknown, verb = "read"): LlameshError {
  const code = (e as NodeJS.ErrnoException).code;
  return new LlameshError(code === "ENOENT" ? `${file}: file not found` : `${file}: cannot ${verb} (${code ?? String(e)})`);
}
