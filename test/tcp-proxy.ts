/**
 * A TCP proxy on 127.0.0.1 that a test puts between two processes, to cut and heal the link
 * for real (a nemesis, as in Jepsen): `listen` port forwards every connection to `target`.
 *
 * - `cut('reset')`: every open connection is destroyed at once (both sides see a reset or an
 *   end) and new ones are closed as soon as they arrive (a refused link).
 * - `cut('drop')`: open connections stay up but every byte in either direction is discarded,
 *   and new connections are accepted and then ignored (a black hole: a partition, where the
 *   peers only find out by their own timeouts; TCP keeps "working").
 * - `heal()`: new connections are forwarded again; connections that lived through a 'drop'
 *   cut are destroyed (their streams lost bytes, so they cannot be resumed).
 *
 * Only loopback: the proxy listens on 127.0.0.1 and connects to a 127.0.0.1 target.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export type CutMode = 'reset' | 'drop';

interface Pair {
  client: Socket;
  upstream: Socket | null;
  /** Bytes in this pair were discarded: it can never carry a whole stream again. */
  broken: boolean;
}

export class TcpProxy {
  readonly #server: Server;
  readonly #targetPort: number;
  readonly #pairs = new Set<Pair>();
  #cut: CutMode | null = null;
  /** Counts for the test log: connections seen, destroyed by a cut, bytes dropped. */
  readonly stats = { connections: 0, destroyed: 0, droppedBytes: 0 };

  private constructor(server: Server, targetPort: number) {
    this.#server = server;
    this.#targetPort = targetPort;
  }

  /** A proxy on 127.0.0.1:`port` (0: any free port) to 127.0.0.1:`targetPort`. */
  static async start(targetPort: number, port = 0): Promise<TcpProxy> {
    let proxy: TcpProxy | undefined;
    const server = createServer((c) => proxy?.accept(c));
    proxy = new TcpProxy(server, targetPort);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    return proxy;
  }

  get port(): number {
    const a = this.#server.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get isCut(): boolean {
    return this.#cut !== null;
  }

  private accept(client: Socket): void {
    this.stats.connections++;
    client.on('error', () => {});
    if (this.#cut === 'reset') {
      client.destroy();
      this.stats.destroyed++;
      return;
    }
    const pair: Pair = { client, upstream: null, broken: false };
    this.#pairs.add(pair);
    const forget = () => {
      this.#pairs.delete(pair);
      client.destroy();
      pair.upstream?.destroy();
    };
    client.on('close', forget);
    if (this.#cut === 'drop') {
      pair.broken = true;
      client.on('data', (b: Buffer) => (this.stats.droppedBytes += b.length));
      return;
    }
    const upstream = connect(this.#targetPort, '127.0.0.1');
    pair.upstream = upstream;
    upstream.on('error', () => {});
    upstream.on('close', forget);
    // Forward by hand (not pipe) so that a 'drop' cut can discard bytes on a live connection.
    client.on('data', (b: Buffer) => {
      if (this.#cut !== null || pair.broken) {
        pair.broken = true;
        this.stats.droppedBytes += b.length;
        return;
      }
      if (!upstream.write(b)) client.pause();
    });
    upstream.on('drain', () => client.resume());
    upstream.on('data', (b: Buffer) => {
      if (this.#cut !== null || pair.broken) {
        pair.broken = true;
        this.stats.droppedBytes += b.length;
        return;
      }
      if (!client.write(b)) upstream.pause();
    });
    client.on('drain', () => upstream.resume());
  }

  /** Cut the link (see the file comment for the two modes). */
  cut(mode: CutMode = 'drop'): void {
    this.#cut = mode;
    for (const p of [...this.#pairs]) {
      if (mode === 'reset') {
        this.stats.destroyed++;
        p.client.destroy();
        p.upstream?.destroy();
        this.#pairs.delete(p);
      } else {
        p.broken = true;
        // Keep reading so that the peers' writes are swallowed rather than back-pressured.
        p.client.resume();
        p.upstream?.resume();
      }
    }
  }

  /** Forward again; connections a 'drop' cut broke are destroyed, so the peers reconnect. */
  heal(): void {
    this.#cut = null;
    for (const p of [...this.#pairs]) {
      if (!p.broken) continue;
      this.stats.destroyed++;
      p.client.destroy();
      p.upstream?.destroy();
      this.#pairs.delete(p);
    }
  }

  async close(): Promise<void> {
    for (const p of this.#pairs) {
      p.client.destroy();
      p.upstream?.destroy();
    }
    this.#pairs.clear();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
