/**
 * A link's latency and throughput as two Node processes see them (bench:cluster's inputs to the
 * model in docs/cluster.md), measured without any llamesh code: `echo.js serve IP` echoes every
 * byte back; `echo.js ping IP PORT SIZE... ` sends SIZE bytes, waits for all of them to come
 * back, 200 times per size, and prints {size: {minUs, medianUs}} as one JSON line.
 */
import * as net from "node:net";

function serve(ip: string): void {
  const server = net.createServer((s) => {
    s.setNoDelay(true);
    s.on("data", (d) => s.write(d));
    s.on("error", () => undefined);
  });
  server.listen(0, ip, () => process.stdout.write(`listening ${ip}:${(server.address() as net.AddressInfo).port}\n`));
}

async function ping(ip: string, port: number, sizes: number[]): Promise<void> {
  const s = net.connect({ host: ip, port });
  await new Promise<void>((res, rej) => s.once("connect", res).once("error", rej));
  s.setNoDelay(true);
  let want = 0;
  let got = 0;
  let done: (() => void) | null = null;
  s.on("data", (d: Buffer) => {
    got += d.length;
    if (got >= want && done) done();
  });
  const out: Record<string, { minUs: number; medianUs: number }> = {};
  for (const size of sizes) {
    const buf = Buffer.alloc(size, 7);
    const times: number[] = [];
    for (let i = 0; i < 220; i++) {
      got = 0;
      want = size;
      const t0 = process.hrtime.bigint();
      await new Promise<void>((res) => {
        done = res;
        s.write(buf);
      });
      done = null;
      if (i >= 20) times.push(Number(process.hrtime.bigint() - t0) / 1000); // the first 20 warm up
    }
    times.sort((a, b) => a - b);
    out[String(size)] = { minUs: times[0]!, medianUs: times[Math.floor(times.length / 2)]! };
  }
  s.destroy();
  process.stdout.write(JSON.stringify(out) + "\n");
}

const [mode, ip, port, ...sizes] = process.argv.slice(2);
if (mode === "serve" && ip) serve(ip);
else if (mode === "ping" && ip && port) void ping(ip, Number(port), sizes.map(Number));
else {
  process.stderr.write("usage: echo.js serve IP | echo.js ping IP PORT SIZE...\n");
  process.exit(2);
}
