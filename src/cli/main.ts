/**
 * Process entry shared by every executable: runs a command, turns a LlameshError (a problem the
 * user can fix) into one line on stderr and exit code 1, and anything else (a bug) into its
 * stack trace and exit code 2. A command may resolve with its own exit code (1 for a usage shown
 * because the command was missing, 130 after Ctrl-C).
 */
import { LlameshError } from "../core/errors.js";

export function main(run: () => Promise<number | void>): void {
  run().then(
    (code) => {
      process.exitCode = code ?? 0;
    },
    (e: unknown) => {
      if (e instanceof LlameshError) {
        process.stderr.write(`error: ${e.message}\n`);
        process.exitCode = 1;
      } else {
        process.stderr.write(`internal error (please report): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
        process.exitCode = 2;
      }
    },
  );
}
