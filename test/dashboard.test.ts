// The dashboard at `/`, in headless Chromium (Debian's package, driven by puppeteer-core):
// under write load, every figure on the page equals the `/status` document the page rendered
// it from; after the load stops it equals the store; an injected corruption that a scrub finds
// and cannot repair shows as an alert. A screenshot is kept under test/artifacts/.
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { BackupManager, open } from 'cairndb';
import puppeteer, { type Page } from 'puppeteer-core';
import { describe, expect, test } from 'vitest';

import { flipMiddleByte, tempDir } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('./artifacts/', import.meta.url));

interface StatusDoc {
  dir: string;
  lastSeq: string;
  health: { ok: boolean; reasons: string[] };
  collections: Array<{ name: string; dim: number; metric: string; count: number }>;
  engine: { commits: number; fsync: { count: number } };
  recoverableRange: { from: { seq: string }; to: { seq: string } } | null;
  snapshots: unknown[];
  backups: unknown[];
  scrubs: Array<{ bytes: number; corrupt: number; repaired: number; unrepaired: number; unreadableRecords: number }>;
}

/** What the page shows, read in one evaluation. */
function readPage(page: Page) {
  return page.evaluate(() => {
    const text = (id: string) => document.getElementById(id)?.textContent ?? '';
    const table = (id: string) =>
      [...(document.getElementById(id) as HTMLTableElement).tBodies[0]!.rows].map((r) => [...r.cells].map((c) => c.textContent ?? ''));
    return {
      dir: text('dir'),
      seq: text('seq'),
      health: text('health'),
      alert: text('alert'),
      alertOn: document.getElementById('alert')?.className === 'on',
      collections: table('collections'),
      commits: text('commits'),
      fsyncs: text('fsyncs'),
      rangeFrom: text('range-from'),
      rangeTo: text('range-to'),
      snapshots: text('snapshots'),
      backups: text('backups'),
      scrubs: table('scrubs'),
      snapshotMarks: document.querySelectorAll('#range .snap').length,
      backupMarks: document.querySelectorAll('#range .backup').length,
    };
  });
}

function expectPageShows(shown: Awaited<ReturnType<typeof readPage>>, s: StatusDoc): void {
  expect(shown.dir).toBe(s.dir);
  expect(shown.seq).toBe(s.lastSeq);
  expect(shown.health).toBe(s.health.ok ? 'ok' : 'unhealthy');
  expect(shown.alertOn).toBe(!s.health.ok);
  expect(shown.alert).toBe(s.health.reasons.join(' · '));
  expect(shown.collections).toEqual(s.collections.map((c) => [c.name, String(c.dim), c.metric, String(c.count)]));
  expect(shown.commits).toBe(String(s.engine.commits));
  expect(shown.fsyncs).toBe(String(s.engine.fsync.count));
  expect([shown.rangeFrom, shown.rangeTo]).toEqual([s.recoverableRange?.from.seq, s.recoverableRange?.to.seq]);
  expect([shown.snapshots, shown.snapshotMarks]).toEqual([String(s.snapshots.length), s.snapshots.length]);
  expect([shown.backups, shown.backupMarks]).toEqual([String(s.backups.length), s.backups.length]);
  expect(shown.scrubs.map((r) => r.slice(1))).toEqual(
    s.scrubs
      .slice()
      .reverse()
      .map((x) => [x.bytes, x.corrupt, x.repaired, x.unrepaired + x.unreadableRecords].map(String)),
  );
}

describe('dashboard', () => {
  test('dashboard_shows_status_under_write_load_and_alerts_on_corruption', async () => {
    const dir = tempDir('cairn-dashboard-');
    const db = await open(dir);
    const server = await db.serveHttp({ listen: '127.0.0.1:0' });
    const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
    let writing = true;
    let load: Promise<void> = Promise.resolve();
    try {
      const docs = await db.createCollection('docs', { dim: 16, metric: 'cosine' });
      const notes = await db.createCollection('notes', { dim: 4, metric: 'l2' });
      await notes.upsert([{ id: 'n1', vector: [1, 2, 3, 4] }]);
      await db.snapshot();
      await db.scrub();
      await new BackupManager({ source: dir, target: `file://${tempDir('cairn-dashboard-backup-')}` }).create({ kind: 'full' });
      load = (async () => {
        for (let i = 0; writing; i++) {
          await docs.upsert([{ id: `r${i % 500}`, vector: Float32Array.from({ length: 16 }, (_, j) => Math.cos(i + j)), metadata: { i } }]);
        }
      })();

      const page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 900 });
      const seen = new Map<string, StatusDoc>();
      page.on('response', async (r) => {
        if (!r.url().endsWith('/status')) return;
        const s = (await r.json().catch(() => null)) as StatusDoc | null;
        if (s) seen.set(s.lastSeq, s);
      });
      await page.goto(`${server.url}/`);
      // Under load: the page equals the /status document it was rendered from.
      for (let round = 0; round < 3; round++) {
        const before = Number(db.lastSeq);
        await page.waitForFunction((n) => Number(document.body.dataset.seq ?? 0) > n, {}, before);
        const shown = await readPage(page);
        // The response handler stores the body asynchronously.
        await expect.poll(() => seen.has(shown.seq), { timeout: 5_000 }).toBe(true);
        const doc = seen.get(shown.seq);
        expectPageShows(shown, doc as StatusDoc);
      }

      // Load stopped: the page catches up with the store itself.
      writing = false;
      await load;
      const last = db.lastSeq.toString();
      await page.waitForFunction((s) => document.body.dataset.seq === s, {}, last);
      const settled = (await (await fetch(`${server.url}/status`)).json()) as StatusDoc;
      expect(settled.lastSeq).toBe(last);
      await page.waitForFunction((c) => document.getElementById('commits')?.textContent === c, {}, String(settled.engine.commits));
      expectPageShows(await readPage(page), settled);

      // Damage a checkpoint file; a scrub finds it and (without repair) leaves it: an alert.
      await db.checkpoint();
      const seg = readdirSync(join(dir, 'data')).find((n) => n.endsWith('.seg')) as string;
      flipMiddleByte(join(dir, 'data', seg));
      await db.scrub();
      await page.waitForSelector('#alert.on');
      const alerted = (await (await fetch(`${server.url}/status`)).json()) as StatusDoc;
      expect(alerted.health.ok).toBe(false);
      await page.waitForFunction((n) => document.querySelectorAll('#scrubs tbody tr').length === n, {}, alerted.scrubs.length);
      const shown = await readPage(page);
      expectPageShows(shown, alerted);
      expect(shown.alert).toMatch(/unrepaired damage/);
      expect(shown.alert).toContain(seg);
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });

      // Repaired: the alert goes away.
      await db.scrub({ repair: true });
      await page.waitForSelector('#alert:not(.on)');
      expect((await readPage(page)).health).toBe('ok');
    } finally {
      writing = false;
      await load.catch(() => {});
      await browser.close();
      await server.close();
      await db.close();
    }
  });
});
