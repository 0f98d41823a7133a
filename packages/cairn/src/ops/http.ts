/**
 * `db.serveHttp()`: `GET /metrics`, `/health`, `/status` and the dashboard at `/`.
 *
 * Binds to loopback unless told otherwise; any other address requires a token. With a token,
 * every data route needs `Authorization: Bearer <token>`, compared in constant time (both sides
 * hashed to equal length first). The dashboard page itself holds no data and is served without
 * it; the page sends the token it reads from its URL fragment, which browsers never send. No
 * request may carry a body; only GET and HEAD are answered. Every error is JSON.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';

import { invalidArgument } from '../errors.js';
import { dashboardHtml } from './dashboard.js';
import type { HealthReport } from './status.js';
import type { BackupCatalog } from './types.js';

export interface ServeHttpOptions {
  /** `host:port` (IPv6 as `[::1]:9464`); default `127.0.0.1:9464`. Port 0 picks a free port. */
  listen?: string;
  /** Required unless `listen` is a loopback address. */
  token?: string;
  /** Where this store's backups go: `/status` lists these targets' catalogs (every backup on
   *  them, whichever process made it). Pass the `BackupManager`s that write them. */
  backups?: BackupCatalog | BackupCatalog[];
}

export interface HttpServer {
  readonly host: string;
  readonly port: number;
  /** `http://host:port` */
  readonly url: string;
  close(): Promise<void>;
}

/** What the routes read; the store's ops layer provides it. */
export interface HttpRoutes {
  metrics(): Promise<{ body: string; contentType: string }>;
  health(): Promise<HealthReport>;
  status(catalogs: BackupCatalog[]): Promise<unknown>;
  toJson(v: unknown): string;
}

export const DEFAULT_LISTEN = '127.0.0.1:9464';

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw invalidArgument(`options.listen must be 'host:port' (IPv6 as '[::1]:port'), got '${listen}'`);
  return { host: (m[1] ?? m[2]) as string, port };
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) return host === '::1' || host === '0:0:0:0:0:0:0:1';
  return false;
}

function parseCatalogs(v: unknown): BackupCatalog[] {
  if (v === undefined) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((c, i) => {
    const ok =
      c !== null &&
      typeof c === 'object' &&
      typeof (c as BackupCatalog).list === 'function' &&
      Array.isArray((c as BackupCatalog).targets) &&
      (c as BackupCatalog).targets.every((t) => typeof t === 'string');
    if (!ok) throw invalidArgument(`options.backups${Array.isArray(v) ? `[${i}]` : ''} must be a BackupManager (an object with targets and list())`);
    return c as BackupCatalog;
  });
}

export function parseServeOptions(options: unknown): { host: string; port: number; token: string | null; backups: BackupCatalog[] } {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw invalidArgument('options must be an object');
  const o = options as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== 'listen' && k !== 'token' && k !== 'backups') throw invalidArgument(`options.${k} is not a known option`);
  if (o.listen !== undefined && typeof o.listen !== 'string') throw invalidArgument('options.listen must be a string');
  if (o.token !== undefined && (typeof o.token !== 'string' || o.token.length < 16)) {
    throw invalidArgument('options.token must be a string of at least 16 characters');
  }
  const { host, port } = parseListen((o.listen as string | undefined) ?? DEFAULT_LISTEN);
  const token = (o.token as string | undefined) ?? null;
  if (!isLoopback(host) && token === null) throw invalidArgument(`options.token is required to listen on '${host}', which is not a loopback address`);
  return { host, port, token, backups: parseCatalogs(o.backups) };
}

const digest = (s: string) => createHash('sha256').update(s).digest();

function authorized(req: IncomingMessage, tokenDigest: Buffer | null): boolean {
  if (tokenDigest === null) return true;
  const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
  // Hash both sides so the comparison takes the same time whatever the length offered.
  return timingSafeEqual(digest(m?.[1] ?? ''), tokenDigest) && m !== null;
}

function send(res: ServerResponse, status: number, contentType: string, body: string, head: boolean, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...extra });
  res.end(head ? undefined : body);
}

export async function startHttpServer(options: unknown, routes: HttpRoutes): Promise<HttpServer> {
  const { host, port, token, backups } = parseServeOptions(options);
  const tokenDigest = token === null ? null : digest(token);
  const json = (res: ServerResponse, status: number, v: unknown, head: boolean, extra?: Record<string, string>) =>
    send(res, status, 'application/json; charset=utf-8', routes.toJson(v), head, extra);
  const error = (res: ServerResponse, status: number, code: string, message: string, head = false, extra?: Record<string, string>) =>
    json(res, status, { error: { code, message } }, head, extra);

  const server = createServer(async (req, res) => {
    const head = req.method === 'HEAD';
    try {
      if (req.method !== 'GET' && !head) return error(res, 405, 'METHOD_NOT_ALLOWED', `${req.method} is not allowed; use GET`, false, { allow: 'GET, HEAD' });
      const length = Number(req.headers['content-length'] ?? 0);
      if (length > 0 || req.headers['transfer-encoding'] !== undefined) {
        // Read nothing of it: answer once it has been discarded, then drop the connection.
        req.resume();
        return req.once('end', () => error(res, 413, 'BODY_NOT_ACCEPTED', 'requests must not carry a body', head, { connection: 'close' }));
      }
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/')
        return send(res, 200, 'text/html; charset=utf-8', dashboardHtml(), head, {
          'content-security-policy': "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
        });
      if (!['/metrics', '/health', '/status'].includes(path))
        return error(res, 404, 'NOT_FOUND', `no route ${path}; try /metrics, /health, /status or /`, head);
      if (!authorized(req, tokenDigest)) return error(res, 401, 'UNAUTHORIZED', 'missing or wrong bearer token', head, { 'www-authenticate': 'Bearer' });
      if (path === '/metrics') {
        const m = await routes.metrics();
        return send(res, 200, m.contentType, m.body, head);
      }
      if (path === '/health') {
        const h = await routes.health();
        return json(res, h.ok ? 200 : 503, h, head);
      }
      return json(res, 200, await routes.status(backups), head);
    } catch (e) {
      const err = e as { code?: unknown; message?: unknown };
      if (!res.headersSent) error(res, 500, typeof err.code === 'string' ? err.code : 'INTERNAL', String(err.message ?? e), head);
      else res.destroy();
    }
  });
  server.on('clientError', (_e, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  const boundPort = typeof addr === 'object' && addr !== null ? addr.port : port;
  const urlHost = isIP(host) === 6 ? `[${host}]` : host;
  let closing: Promise<void> | null = null;
  return {
    host,
    port: boundPort,
    url: `http://${urlHost}:${boundPort}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
