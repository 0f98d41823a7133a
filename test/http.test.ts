// db.serveHttp(): the routes, loopback-only without a token, bearer tokens, no bodies, JSON
// errors, and /health flipping to 503 on poison and on unrepaired damage (and back to 200
// after a repair).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { open } from 'cairndb';
import { describe, expect, test } from 'vitest';

import { flipMiddleByte, tempDir } from './helpers.js';
import { parseProm, value } from './prom.js';

const CHILD = fileURLToPath(new URL('./fixtures/http-poison-child.mjs', import.meta.url));
const REPL_NODE = fileURLToPath(new URL('./fixtures/repl-node.mjs', import.meta.url));

/** A replication node in its own process (test/fixtures/repl-node.mjs) serving HTTP too. */
async function replNode(config: Record<string, unknown>): Promise<{ proc: ChildProcess; http: string; address?: string }> {
  const proc = spawn(
    process.execPath,
    [REPL_NODE, JSON.stringify({ token: 'a-replication-token-of-32-bytes-or-more', http: true, heartbeatMs: 100, ...config })],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const first = await createInterface({ input: proc.stdout! })[Symbol.asyncIterator]().next();
  if (first.done) throw new Error(`node ${String(config.nodeId)} exited before it was ready`);
  const ready = JSON.parse(first.value as string) as { http: string; address?: string };
  return { proc, http: ready.http, ...(ready.address ? { address: ready.address } : {}) };
}

/** Poll `url`'s /health until `want` says yes (at most 15 s); returns the last answer. */
async function healthUntil(url: string, want: (h: { status: number; body: { ok: boolean; reasons: string[] } }) => boolean) {
  let h = { status: 0, body: { ok: false, reasons: [] as string[] } };
  for (let i = 0; i < 150; i++) {
    const r = await call(`${url}/health`);
    h = { status: r.status, body: JSON.parse(r.body) };
    if (want(h)) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return h;
}
const CLI = fileURLToPath(new URL('../packages/cairn/dist/cli.js', import.meta.url));
const TOKEN = 'a-token-of-enough-length';

/** A raw request, so that methods, bodies and headers are exactly what the test says. */
function call(url: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}) {
  return new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: opts.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('http', () => {
  test('http_routes_serve_metrics_health_status_and_dashboard', async () => {
    const db = await open(tempDir('cairn-http-'));
    const server = await db.serveHttp({ listen: '127.0.0.1:0' });
    try {
      const docs = await db.createCollection('docs', { dim: 4, metric: 'l2' });
      await docs.upsert([1, 2, 3].map((i) => ({ id: `r${i}`, vector: [i, 0, 0, 0] })));
      await db.snapshot();

      const metrics = await call(`${server.url}/metrics`);
      expect(metrics.status).toBe(200);
      expect(metrics.type).toMatch(/^text\/plain/);
      const m = await parseProm(metrics.body);
      expect(value(m, 'cairn_commits_total', { sync: 'group' })).toBe(2);
      expect(value(m, 'cairn_collection_rows', { collection: 'docs' })).toBe(3);

      const health = await call(`${server.url}/health`);
      expect([health.status, JSON.parse(health.body)]).toEqual([200, { ok: true, reasons: [] }]);

      const status = JSON.parse((await call(`${server.url}/status`)).body);
      expect(status.lastSeq).toBe(db.lastSeq.toString());
      expect(status.collections).toEqual([{ name: 'docs', dim: 4, metric: 'l2', count: 3 }]);
      const range = await db.recoverableRange();
      expect(status.recoverableRange.to.seq).toBe(range.to.seq.toString());
      expect(status.snapshots.map((s: { id: string }) => s.id)).toEqual((await db.snapshots()).map((s) => s.id));
      expect(status.lastScrub).toBeNull();
      expect(status.replication).toMatchObject({ role: 'standalone', replicas: [] });

      const page = await call(`${server.url}/`);
      expect(page.status).toBe(200);
      expect(page.type).toMatch(/^text\/html/);
      expect(page.body).toContain('<title>Cairn</title>');
      // Self-contained: nothing referenced from another origin.
      expect(page.body).not.toMatch(/(src|href)=["']?(https?:)?\/\//);

      const missing = await call(`${server.url}/nope`);
      expect([missing.status, JSON.parse(missing.body).error.code]).toEqual([404, 'NOT_FOUND']);
      const post = await call(`${server.url}/status`, { method: 'POST' });
      expect([post.status, JSON.parse(post.body).error.code]).toEqual([405, 'METHOD_NOT_ALLOWED']);
      const withBody = await call(`${server.url}/status`, { headers: { 'content-type': 'text/plain', 'content-length': '5' }, body: 'hello' });
      expect([withBody.status, JSON.parse(withBody.body).error.code]).toEqual([413, 'BODY_NOT_ACCEPTED']);
    } finally {
      await server.close();
      await db.close();
    }
  });

  test('http_token_required_off_loopback_and_checked', async () => {
    const db = await open(tempDir('cairn-http-auth-'));
    try {
      await expect(db.serveHttp({ listen: '0.0.0.0:0' })).rejects.toMatchObject({ code: 'CAIRN_INVALID_ARGUMENT', message: /options\.token is required/ });
      await expect(db.serveHttp({ listen: 'nonsense' })).rejects.toMatchObject({ code: 'CAIRN_INVALID_ARGUMENT', message: /options\.listen/ });
      await expect(db.serveHttp({ token: 'short' })).rejects.toMatchObject({ code: 'CAIRN_INVALID_ARGUMENT', message: /options\.token/ });
      await expect(db.serveHttp({ listen: '127.0.0.1:0', tls: true } as never)).rejects.toMatchObject({ code: 'CAIRN_INVALID_ARGUMENT' });

      const server = await db.serveHttp({ listen: '0.0.0.0:0', token: TOKEN });
      const url = `http://127.0.0.1:${server.port}`;
      try {
        for (const path of ['/metrics', '/health', '/status']) {
          const none = await call(`${url}${path}`);
          expect([none.status, JSON.parse(none.body).error.code]).toEqual([401, 'UNAUTHORIZED']);
          const wrong = await call(`${url}${path}`, { headers: { authorization: `Bearer ${TOKEN}x` } });
          expect(wrong.status).toBe(401);
          const basic = await call(`${url}${path}`, { headers: { authorization: `Basic ${TOKEN}` } });
          expect(basic.status).toBe(401);
          const right = await call(`${url}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
          expect(right.status).toBe(200);
        }
        // The page holds no data; it reads the token from its URL fragment.
        expect((await call(`${url}/`)).status).toBe(200);
      } finally {
        await server.close();
      }
    } finally {
      await db.close();
    }
  });

  test('http_health_503_on_unrepaired_damage_and_200_after_repair', async () => {
    const dir = tempDir('cairn-http-damage-');
    const db = await open(dir);
    const server = await db.serveHttp({ listen: '127.0.0.1:0' });
    try {
      const docs = await db.createCollection('docs', { dim: 4, metric: 'l2' });
      await docs.upsert(Array.from({ length: 50 }, (_, i) => ({ id: `r${i}`, vector: [i, 1, 2, 3] })));
      await db.checkpoint();
      const seg = readdirSync(join(dir, 'data')).find((n) => n.endsWith('.seg')) as string;
      flipMiddleByte(join(dir, 'data', seg));

      const found = await db.scrub();
      expect(found.unrepaired.map((u) => u.file)).toEqual([join('data', seg)]);
      const bad = await call(`${server.url}/health`);
      expect(bad.status).toBe(503);
      const reasons = JSON.parse(bad.body).reasons as string[];
      expect(reasons).toHaveLength(1);
      expect(reasons[0]).toMatch(/^unrepaired damage: .*1 damaged file/);
      expect(reasons[0]).toContain(seg);
      const m = await parseProm((await call(`${server.url}/metrics`)).body);
      expect([value(m, 'cairn_scrub_corruptions_total'), value(m, 'cairn_scrub_unrepaired')]).toEqual([1, 1]);

      const repaired = await db.scrub({ repair: true });
      expect(repaired.repaired).toHaveLength(1);
      const good = await call(`${server.url}/health`);
      expect([good.status, JSON.parse(good.body)]).toEqual([200, { ok: true, reasons: [] }]);
      const m2 = await parseProm((await call(`${server.url}/metrics`)).body);
      expect([value(m2, 'cairn_scrub_runs_total'), value(m2, 'cairn_scrub_repairs_total'), value(m2, 'cairn_scrub_unrepaired')]).toEqual([2, 1, 0]);
    } finally {
      await server.close();
      await db.close();
    }
  });

  test('http_health_503_when_a_write_failure_poisons_the_store', async () => {
    const dir = tempDir('cairn-http-poison-');
    const child: ChildProcess = spawn('/bin/sh', ['-c', 'ulimit -f 2048 && exec "$0" "$@"', process.execPath, CHILD, dir], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
    const next = async () => JSON.parse((await lines.next()).value as string);
    try {
      const { url } = await next();
      expect((await call(`${url}/health`)).status).toBe(200);
      child.stdin?.write('poison\n');
      const poisoned = await next();
      expect(poisoned.code).toBe('CAIRN_POISONED');

      const health = await call(`${url}/health`);
      expect(health.status).toBe(503);
      const reasons = JSON.parse(health.body).reasons as string[];
      expect(reasons).toEqual([expect.stringMatching(/^poisoned: /)]);
      expect(reasons[0]).toContain(poisoned.poisoned);
      const m = await parseProm((await call(`${url}/metrics`)).body);
      expect(value(m, 'cairn_poisoned')).toBe(1);
      expect(JSON.parse((await call(`${url}/status`)).body).poisoned).toBe(poisoned.poisoned);
      child.stdin?.write('exit\n');
      expect(await next()).toEqual({ closed: true });
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('status_lists_the_configured_backup_targets_catalogs_made_by_other_processes', async () => {
    const dir = tempDir('cairn-http-catalog-');
    const db = await open(dir);
    await (await db.createCollection('docs', { dim: 2 })).upsert([{ id: 'a', vector: [1, 0] }]);
    await db.close();
    const target = `file://${tempDir('cairn-http-catalog-target-')}`;
    const other = `file://${tempDir('cairn-http-catalog-other-')}`;
    const env = { ...process.env, CAIRN_BACKUP_KEY: '' };
    const child = spawn(process.execPath, [CLI, 'serve', dir, '--http', '127.0.0.1:0', '--backup-target', target, '--backup-target', other, '--json'], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env,
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      const first = await createInterface({ input: child.stdout })[Symbol.asyncIterator]().next();
      const { url } = JSON.parse(first.value as string) as { url: string };
      // Two backups by other processes (the CLI) while the server holds the store open.
      const ids: string[] = [];
      for (const kind of ['full', 'incremental']) {
        const r = spawnSync(process.execPath, [CLI, 'backup', dir, '--to', target, '--kind', kind, '--json'], { encoding: 'utf8', env, timeout: 60_000 });
        expect(r.status, r.stderr).toBe(0);
        ids.push(JSON.parse(r.stdout).id);
      }
      const status = JSON.parse((await call(`${url}/status`)).body);
      expect(status.backups).toHaveLength(2);
      const [t, o] = status.backups;
      expect(t).toMatchObject({ target, from: 'catalog', ok: 2, failed: 0, error: null, lastGood: { id: ids[1], kind: 'incremental' } });
      expect(t.last).toMatchObject({ ok: true, id: ids[1] });
      expect(o).toMatchObject({ target: other, from: 'catalog', ok: 0, failed: 0, last: null, lastGood: null });
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }

    const db2 = await open(dir);
    try {
      await expect(db2.serveHttp({ listen: '127.0.0.1:0', backups: 'file:///x' as never })).rejects.toThrow(/options\.backups must be a BackupManager/);
    } finally {
      await db2.close();
    }
  });

  test('health_503_on_a_real_fenced_replica_and_a_real_disconnected_one_and_200_when_it_reconnects', { timeout: 90_000 }, async () => {
    const procs: ChildProcess[] = [];
    try {
      const pdir = tempDir('cairn-http-repl-p-');
      // Epoch 3, as a failover primary would serve it.
      const primary = await replNode({ role: 'primary', dir: pdir, nodeId: 'p', replicas: ['r1', 'r2'], epoch: 3 });
      procs.push(primary.proc);
      const r1 = await replNode({ role: 'replica', dir: tempDir('cairn-http-repl-r1-'), nodeId: 'r1', primary: primary.address, epoch: 3 });
      procs.push(r1.proc);
      // r2 has already followed a newer leader (epoch 7): the old primary's frames are refused.
      const r2 = await replNode({ role: 'replica', dir: tempDir('cairn-http-repl-r2-'), nodeId: 'r2', primary: primary.address, epoch: 7 });
      procs.push(r2.proc);

      const live = await healthUntil(r1.http, (h) => h.status === 200);
      expect(live).toEqual({ status: 200, body: { ok: true, reasons: [] } });
      const fenced = await healthUntil(r2.http, (h) => h.body.reasons.some((x) => x.includes('fenced')));
      expect(fenced.status).toBe(503);
      expect(fenced.body.reasons).toHaveLength(1);
      expect(fenced.body.reasons[0]).toMatch(/^replication: this node is fenced .*CAIRN_FENCED: .*epoch/);
      expect((await call(`${primary.http}/health`)).status).toBe(200);

      // The primary dies: r1 is a replica cut off from it.
      primary.proc.kill('SIGKILL');
      await new Promise((resolve) => primary.proc.once('close', resolve));
      const cut = await healthUntil(r1.http, (h) => h.status === 503);
      expect(cut).toEqual({ status: 503, body: { ok: false, reasons: ['replication: this replica is disconnected from its primary'] } });

      // It comes back on the same address: r1 reconnects and is healthy again.
      const again = await replNode({ role: 'primary', dir: pdir, nodeId: 'p', replicas: ['r1', 'r2'], epoch: 3, listen: primary.address });
      procs.push(again.proc);
      const back = await healthUntil(r1.http, (h) => h.status === 200);
      expect(back).toEqual({ status: 200, body: { ok: true, reasons: [] } });
    } finally {
      for (const p of procs) p.kill('SIGKILL');
    }
  });

  test('cli_serve_with_http_serves_a_store_with_a_token_file_until_sigterm', async () => {
    const dir = tempDir('cairn-http-cli-');
    const db = await open(dir);
    await (await db.createCollection('docs', { dim: 2 })).upsert([{ id: 'a', vector: [1, 0] }]);
    await db.close();
    const tokenFile = join(tempDir('cairn-http-token-'), 'token');
    writeFileSync(tokenFile, `${TOKEN}\n`);
    const child = spawn(process.execPath, [CLI, 'serve', dir, '--http', '0.0.0.0:0', '--http-token-file', tokenFile, '--json'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      const first = await createInterface({ input: child.stdout })[Symbol.asyncIterator]().next();
      const { url } = JSON.parse(first.value as string) as { url: string };
      const local = url.replace('0.0.0.0', '127.0.0.1');
      expect((await call(`${local}/health`)).status).toBe(401);
      const status = await call(`${local}/status`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(JSON.parse(status.body).collections).toEqual([{ name: 'docs', dim: 2, metric: 'cosine', count: 1 }]);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
    // Closed cleanly: the store opens again.
    await (await open(dir)).close();
  });
});
