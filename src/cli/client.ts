/** `bin/client`: the same as `llamesh run`. */
import { main } from "./main.js";
import { runCommand } from "./run.js";

main(() => runCommand(process.argv.slice(2), "client"));
