/**
 * GET /metrics in Prometheus' text format (version 0.0.4): requests by endpoint and status, tokens
 * in (computed and cached) and out, queue length, busy slots, steps, recent tok/s, and for a
 * cluster each worker's syncs, their round-trip time and its compute time as the client saw them.
 */
import * as v8 from "node:v8";
import type { ClusterHealth, ClusterStats } from "../cluster/client.js";
import type { SchedulerStats } from "./scheduler.js";

type Labels = Record<string, string>;

const esc = (v: string): string => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
const labelText = (l: Labels): string => {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${esc(v)}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
};

/** One metric family: its HELP and TYPE lines and samples. */
function family(name: string, type: "counter" | "gauge", help: string, samples: [Labels, number][]): string {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...samples.map(([l, v]) => `${name}${labelText(l)} ${Number.isFinite(v) ? v : 0}`)].join("\n");
}

export class Metrics {
  private readonly requests = new Map<string, { endpoint: string; status: number; n: number }>();

  /** Count an answered request (its route, or "other" for unknown paths so labels stay bounded). */
  request(endpoint: string, status: number): void {
    const k = `${endpoint} ${status}`;
    const r = this.requests.get(k) ?? { endpoint, status, n: 0 };
    r.n++;
    this.requests.set(k, r);
  }

  render(s: SchedulerStats, cluster: { stats: ClusterStats; health: ClusterHealth } | null): string {
    const out = [
      family("llamesh_requests_total", "counter", "HTTP requests answered, by endpoint and status.", [...this.requests.values()].map((r) => [{ endpoint: r.endpoint, status: String(r.status) }, r.n])),
      family("llamesh_prompt_tokens_total", "counter", "Prompt tokens of finished requests (cached ones included).", [[{}, s.promptTokens]]),
      family("llamesh_prompt_tokens_cached_total", "counter", "Prompt tokens found in a slot's KV cache (not computed again).", [[{}, s.cachedTokens]]),
      family("llamesh_completion_tokens_total", "counter", "Tokens generated.", [[{}, s.generatedTokens]]),
      family("llamesh_queue_length", "gauge", "Requests waiting for a slot.", [[{}, s.queued]]),
      family("llamesh_slots", "gauge", "Slots (sequences served at once, --parallel).", [[{}, s.slots]]),
      family("llamesh_slots_busy", "gauge", "Slots running a request.", [[{}, s.busy]]),
      family("llamesh_tokens_per_second", "gauge", "Tokens generated per second over the last 10 s, all slots together.", [[{}, Math.round(s.recentTokPerS * 100) / 100]]),
      family("llamesh_steps_total", "counter", "Forward passes (each over every active slot).", [[{}, s.steps]]),
      family("llamesh_step_seconds_total", "counter", "Time spent in forward passes.", [[{}, s.stepMs / 1000]]),
    ];
    const mem = process.memoryUsage();
    out.push(
      family("process_resident_memory_bytes", "gauge", "Resident memory of the server process.", [[{}, mem.rss]]),
      family("nodejs_heap_used_bytes", "gauge", "JavaScript heap in use.", [[{}, mem.heapUsed]]),
      family("nodejs_heap_total_bytes", "gauge", "JavaScript heap reserved.", [[{}, mem.heapTotal]]),
      family("nodejs_external_memory_bytes", "gauge", "Memory of buffers and WebAssembly outside the heap.", [[{}, mem.external]]),
      family("nodejs_array_buffers_bytes", "gauge", "Memory of ArrayBuffers and Buffers (part of the external memory).", [[{}, mem.arrayBuffers]]),
      ...heapSpaceFamilies(),
    );
    if (cluster) out.push(...clusterFamilies(cluster.stats, cluster.health));
    return out.join("\n") + "\n";
  }
}

/** V8's heap by space (new_space is the young generation, old_space the long-lived objects): a fixed set of labels. */
function heapSpaceFamilies(): string[] {
  const spaces = v8.getHeapSpaceStatistics();
  return [
    family("nodejs_heap_space_size_bytes", "gauge", "JavaScript heap reserved, by V8 space.", spaces.map((sp) => [{ space: sp.space_name }, sp.space_size])),
    family("nodejs_heap_space_used_bytes", "gauge", "JavaScript heap in use, by V8 space.", spaces.map((sp) => [{ space: sp.space_name }, sp.space_used_size])),
  ];
}

function clusterFamilies(st: ClusterStats, h: ClusterHealth): string[] {
  const nodes = st.nodes;
  return [
    family("llamesh_cluster_up", "gauge", "1 when every worker is in the plan, 0.5 degraded, 0 down.", [[{ state: h.state }, h.state === "ok" ? 1 : h.state === "degraded" ? 0.5 : 0]]),
    family("llamesh_worker_in_plan", "gauge", "1 when the worker computes its share now.", h.workers.map((w) => [{ worker: w.label }, w.inPlan ? 1 : 0])),
    family("llamesh_node_syncs_total", "counter", "Syncs (partial sums exchanged) a node took part in.", nodes.map((n) => [{ node: n.label }, n.rounds])),
    family("llamesh_node_sync_seconds_total", "counter", "Time the client waited for a node's part of the syncs (round trips).", nodes.map((n) => [{ node: n.label }, n.rttMs / 1000])),
    family("llamesh_node_compute_seconds_total", "counter", "A node's own compute time, as it reported it.", nodes.map((n) => [{ node: n.label }, n.computeMs / 1000])),
    family("llamesh_cluster_tokens_total", "counter", "Tokens through the cluster (prompt tokens included).", [[{}, st.tokens]]),
  ];
}
