/** `bin/worker <port>`: a compute node of the cluster. */
import { LlameshError } from "../model/errors.js";
import { main } from "./main.js";

main(async () => {
  throw new LlameshError("worker: the cluster mode is not built yet; run bin/client on one machine for now");
});
