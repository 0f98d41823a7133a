import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { demoVector } from './demo-writer.js';
import { restore } from './restore.js';
import { open } from './store.js';

const DIM = 64;
const INGEST = 5_000;

/** Ingest, query, SIGKILL a writer mid-stream, recover, and check every acknowledged write. */
export async function runDemo(opts: { dir?: string | undefined; json: boolean }): Promise<number> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'cairn-demo-'));
  const log = (s: string) => {
    if (!opts.json) console.log(s);
  };
  const result: Record<string, unknown> = { dir };

  log(`1. ingest ${INGEST} vectors (${DIM}-d, cosine) into ${dir}`);
  let db = await open(dir, { sync: 'group' });
  const docs = await db.createCollection('docs', { dim: DIM, metric: 'cosine' });
  const t0 = performance.now();
  for (let start = 0; start < INGEST; start += 1_000) {
    const records = [];
    for (let i = start; i < start + 1_000; i++) {
      const id = `doc-${i}`;
      records.push({ id, vector: demoVector(id, DIM), metadata: { bucket: i % 10 } });
    }
    await docs.upsert(records);
  }
  result.ingestMs = Math.round(performance.now() - t0);
  log(`   ${INGEST} vectors durable in ${result.ingestMs} ms; count = ${await docs.count()}`);

  const probe = demoVector('doc-42', DIM);
  const hits = await docs.query(probe, { k: 3 });
  const filtered = await docs.query(probe, { k: 3, filter: { bucket: 7 } });
  result.query = hits.map((h) => h.id);
  log(`2. query nearest to doc-42: ${hits.map((h) => `${h.id} (${h.score.toFixed(3)})`).join(', ')}`);
  log(`   with filter {bucket: 7}: ${filtered.map((h) => h.id).join(', ')}`);
  await db.checkpoint();
  await db.close();

  log('3. start a writer process (8 concurrent writers, group commit) and SIGKILL it mid-stream');
  const writerPath = fileURLToPath(new URL('./demo-writer.js', import.meta.url));
  const acked = new Map<string, bigint>();
  await new Promise<void>((resolveRun, reject) => {
    const child = spawn(process.execPath, [writerPath, dir, String(DIM)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let buffered = '';
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        const [, id, seq] = line.split(' ');
        if (id && seq) acked.set(id, BigInt(seq));
      }
      if (acked.size >= 2_000 && !child.killed) child.kill('SIGKILL');
    });
    child.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolveRun() : reject(new Error(`writer exited early: ${code}`))));
  });
  result.acknowledgedBeforeKill = acked.size;
  log(`   killed after ${acked.size} acknowledged writes`);

  log('4. reopen: recovery replays the WAL');
  db = await open(dir);
  const report = db.recoveryReport;
  log(
    `   replayed ${report.replayedRecords} records, last seq ${db.lastSeq}, torn tail: ${report.tornTail ? `${report.tornTail.bytes} bytes truncated` : 'none'}`,
  );
  const col = db.collection('docs');
  let missing = 0;
  for (const [id] of acked) {
    const row = await col.get(id);
    const want = demoVector(id, DIM);
    if (!row || Buffer.compare(Buffer.from(row.vector.buffer, row.vector.byteOffset, row.vector.byteLength), Buffer.from(want.buffer)) !== 0) missing++;
  }
  result.missingAfterRecovery = missing;
  result.countAfterRecovery = await col.count();
  log(`   every acknowledged write present with identical bytes: ${missing === 0 ? 'yes' : `NO, ${missing} missing`}`);

  log('5. snapshot, then an accidental delete of 100 documents, then point-in-time restore to just before it');
  await db.snapshot();
  const before = db.lastSeq;
  const doomed = Array.from({ length: 100 }, (_, i) => `doc-${i}`);
  await col.delete(doomed);
  log(`   count after the delete: ${await col.count()}`);
  const target = `${dir}-restored`;
  const restored = await restore({ source: dir, target, to: { seq: before } });
  const rdb = await open(target);
  const rcol = rdb.collection('docs');
  let back = 0;
  for (const id of doomed) if (await rcol.get(id)) back++;
  result.restoredSeq = restored.seq;
  result.restoredDocsBack = back;
  log(
    `   restored ${target} at seq ${restored.seq} from snapshot ${restored.snapshot} + ${restored.replayedRecords} WAL records: ${back}/100 deleted documents are back, count ${await rcol.count()}`,
  );
  await rdb.close();
  await db.close();
  if (opts.json) console.log(JSON.stringify(result, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2));
  return missing === 0 && back === doomed.length ? 0 : 1;
}
