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
