/**
 * The pool's choice between all threads and the main thread alone (pool-adapt.ts), driven with
 * made-up job times: it follows whichever is faster, and probes the other mode rarely.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ModeProbe } from "../../src/kernels/pool-adapt.js";
import { PACE_STRIDE } from "../../src/kernels/pool-worker.js";

/** Run `jobs` jobs over 7 keys; each takes parallelMs or soloMs depending on the mode. */
function drive(p: ModeProbe, jobs: number, parallelMs: number, soloMs: number): number {
  let solo = 0;
  for (let i = 0; i < jobs; i++) {
    const key = i % 7;
    if (p.solo) solo++;
    p.record(key, (p.solo ? soloMs : parallelMs) * (1 + key / 10));
  }
  return solo;
}

test("quiet machine: stays on all threads; probes alone ever more rarely (about 1% of jobs at length)", () => {
  const p = new ModeProbe(true);
  const early = drive(p, 48 * 40, 1, 1.8);
  assert.equal(p.switches, 0);
  assert.ok(early > 0, "it probed");
  const late = drive(p, 48 * 640, 1, 1.8);
  assert.ok(late / (48 * 640) < 0.02, `${late} of ${48 * 640} jobs alone`);
  assert.equal(p.switches, 0);
});

test("busy machine: switches to the main thread alone, and back once the helpers are faster again", () => {
  const p = new ModeProbe(true);
  drive(p, 48 * 10, 2, 1);
  assert.equal(p.switches, 1);
  const alone = drive(p, 48 * 100, 2, 1);
  assert.ok(alone / (48 * 100) > 0.9, `${alone} of ${48 * 100} jobs alone`);
  drive(p, 48 * 200, 0.6, 1); // the other program ended
  assert.equal(p.switches, 2);
  assert.ok(drive(p, 48 * 100, 0.6, 1) / (48 * 100) < 0.1);
});

test("a small difference (noise) does not switch; disabled never goes alone", () => {
  const p = new ModeProbe(true);
  drive(p, 48 * 200, 1, 0.98);
  assert.equal(p.switches, 0);
  const off = new ModeProbe(false);
  assert.equal(drive(off, 48 * 50, 2, 1), 0);
});

test("all threads slower than the main thread's own pace: the probe comes at once (a short prompt runs mostly alone)", () => {
  const p = new ModeProbe(true);
  let alone = 0;
  for (let i = 0; i < 16 * 3; i++) {
    const key = i % 7;
    if (p.solo) alone++;
    if (p.solo) p.record(key, 1);
    else p.record(key, 3, 1.2); // the job took 3 ms; alone, at its pace, the main thread needs 1.2
  }
  assert.equal(p.switches, 1, "switched after one epoch on all threads and one probe");
  assert.equal(alone, 16 * 3 - 8 - 16, "all but the first two epochs' jobs (the first epoch's time is warm-up, no evidence)");
  // on a quiet machine the estimate is above the job time: no early probe, only the schedule's
  const q = new ModeProbe(true);
  let probes = 0;
  for (let i = 0; i < 16 * 40; i++) {
    if (q.solo) probes++;
    q.record(i % 7, q.solo ? 1.8 : 1, 1.9);
  }
  assert.equal(q.switches, 0);
  assert.ok(probes <= 8 * 5, `${probes} jobs alone`);
});

/** Probe epochs (runs of jobs alone) among `jobs` jobs, all threads taking 1 ms and alone `soloMs`. */
function probesOf(p: ModeProbe, jobs: number, soloMs: number): number {
  let probes = 0, wasSolo = false;
  for (let i = 0; i < jobs; i++) {
    if (p.solo && !wasSolo) probes++;
    wasSolo = p.solo;
    p.record(i % 7, p.solo ? soloMs : 1);
  }
  return probes;
}

test("a clear outcome waits longer for the next probe than a narrow one", () => {
  const clear = new ModeProbe(true), narrow = new ModeProbe(true);
  const jobs = 8 + 16 * 120;
  const c = probesOf(clear, jobs, 1.8), n = probesOf(narrow, jobs, 1.2);
  assert.equal(clear.switches + narrow.switches, 0);
  assert.equal(c, 1, "at epoch 16, then 256 epochs later (capped at 192)");
  assert.equal(n, 3, "at epoch 16, then 32 and 64 epochs later");
});

/**
 * Drive a probe with two threads' pace counters: every job on all threads takes 1 ms, the main
 * thread runs `mainChunks` chunks of it and the helper `helperChunks` (both at 0.2 ms a chunk);
 * alone the main thread takes soloMs. Returns the epoch numbers at which a probe started.
 */
function probeEpochsWithPace(jobs: number, mainChunks: number, helperChunks: number, soloMs: number): { probes: number[]; p: ModeProbe } {
  const pace = new Float64Array(2 * PACE_STRIDE);
  const p = new ModeProbe(true, pace);
  const probes: number[] = [];
  let wasSolo = false;
  for (let i = 0; i < jobs; i++) {
    if (p.solo && !wasSolo) probes.push(p.epochCount);
    wasSolo = p.solo;
    if (p.solo) p.record(i % 7, soloMs);
    else {
      pace[0] += 0.2 * mainChunks; pace[1] += mainChunks;
      pace[PACE_STRIDE] += 0.2 * helperChunks; pace[PACE_STRIDE + 1] += helperChunks;
      p.record(i % 7, 1, 0.2 * (mainChunks + helperChunks)); // alone at the main thread's pace
    }
  }
  return { probes, p };
}

test("quiet pace (both threads take their half of every job): a prompt's 10 epochs pay no probe", () => {
  const { probes, p } = probeEpochsWithPace(8 + 16 * 10, 4, 4, 1.8);
  assert.deepEqual(probes, []);
  assert.equal(p.switches, 0);
  // the schedule still probes once, later (load that the counters do not show)
  assert.deepEqual(probeEpochsWithPace(8 + 16 * 20, 4, 4, 1.8).probes, [16]);
  // the first epoch's helper waking late (half the main thread's chunks) is no evidence either
  assert.deepEqual(probeEpochsWithPace(8 + 16 * 10, 6, 3, 1.8).probes, []);
});

test("a preempted thread (it took a seventh of the chunks) brings the probe to the next epoch, and it switches", () => {
  const { probes, p } = probeEpochsWithPace(8 + 16 * 10, 7, 1, 0.7);
  assert.equal(probes[0], 1, "probed right after the first epoch");
  assert.equal(p.switches, 1);
  // a third: evidence from the second epoch on, not in the first (a quiet worker waking late)
  assert.equal(probeEpochsWithPace(8 + 16 * 10, 7, 2, 0.7).probes[0], 2);
  // the same pace where one thread alone is slower: the probe loses, and the next evidence probe
  // waits for twice as much evidence each time (an outlier on a quiet machine is not probed every time)
  const lost = probeEpochsWithPace(8 + 16 * 40, 7, 1, 1.8);
  assert.equal(lost.p.switches, 0);
  assert.deepEqual(lost.probes.slice(0, 4), [1, 4, 9, 18], "after 1, 2, 4 and 8 epochs of evidence");
});

test("the fastest thread's pace, not the main thread's, says whether all threads are slower than one alone", () => {
  // Two threads' pace counters (pool-worker.ts layout): the main thread shares its core with
  // another program and ran 2 chunks in 1.5 ms, the helper 10. Each job took 3 ms; the main
  // thread's own pace says 9 ms alone (no hurry), the helper's says 1.8 ms: probe at once.
  const run = (withPace: boolean): number => {
    const pace = new Float64Array(2 * PACE_STRIDE);
    const p = new ModeProbe(true, withPace ? pace : undefined);
    probesOf(p, 16 * 2, 3); // epoch 0 on all threads, a probe that loses clearly, epoch 2
    let probes = 0, wasSolo = false;
    for (let i = 0; i < 16 * 3; i++) { // epochs 3 to 5 (the first epoch is 8 jobs)
      if (p.solo && !wasSolo) probes++;
      wasSolo = p.solo;
      if (p.solo) p.record(i % 7, 6);
      else {
        pace[0] += 1.5; pace[1] += 2;
        pace[PACE_STRIDE] += 1.5; pace[PACE_STRIDE + 1] += 10;
        p.record(i % 7, 3, 9);
      }
    }
    return probes;
  };
  assert.equal(run(false), 0, "the schedule's next probe is past epoch 5");
  assert.ok(run(true) >= 1, "probed early");
});
