/**
 * One replication connection, either side: frames in (verified, in order, to one handler),
 * frames out (with the socket's back-pressure visible to the sender), and one way to end it.
 * A protocol failure on either side sends an ERROR frame naming it when possible, then closes;
 * the handler sees no frame after a bad one.
 */
import type { Socket } from 'node:net';

import { CairnError } from '../errors.js';
import { encodeFrame, type Frame, FrameDecoder, FrameType, frameTypeName } from './frame.js';
import { decodeError, encodeError } from './messages.js';

export class Connection {
  readonly #socket: Socket;
  readonly #decoder = new FrameDecoder();
  #onFrame: (f: Frame) => void = () => {};
  #closedWith: CairnError | null | undefined;
  readonly #closeListeners: Array<(e: CairnError | null) => void> = [];
  readonly epoch: bigint;

  constructor(socket: Socket, epoch = 0n) {
    this.#socket = socket;
    this.epoch = epoch;
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.#receive(d));
    socket.on('end', () => this.#ended());
    socket.on('error', (e) =>
      this.#finish(new CairnError('CAIRN_DISCONNECTED', `replication connection to ${this.remote} failed: ${e.message}`, { cause: e })),
    );
    socket.on('close', () => this.#finish(new CairnError('CAIRN_DISCONNECTED', `replication connection to ${this.remote} closed`)));
  }

  get remote(): string {
    return `${this.#socket.remoteAddress ?? '?'}:${this.#socket.remotePort ?? '?'}`;
  }

  /** Deliver every later frame to `handler` (one at a time, in arrival order). */
  onFrame(handler: (f: Frame) => void): void {
    this.#onFrame = handler;
  }

  /** Called once, with the error that ended the connection (null: closed by this side, cleanly). */
  onClose(listener: (e: CairnError | null) => void): void {
    if (this.#closedWith !== undefined) listener(this.#closedWith);
    else this.#closeListeners.push(listener);
  }

  get closed(): boolean {
    return this.#closedWith !== undefined;
  }

  /** Queue a frame; false when the socket's buffer is full (wait for `drained()`). */
  send(type: FrameType, payload: Buffer): boolean {
    if (this.closed) return false;
    return this.#socket.write(encodeFrame(type, payload, this.epoch));
  }

  get bufferedBytes(): number {
    return this.#socket.writableLength;
  }

  drained(): Promise<void> {
    if (this.closed || !this.#socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.#socket.off('drain', done);
        this.#socket.off('close', done);
        resolve();
      };
      this.#socket.on('drain', done);
      this.#socket.on('close', done);
    });
  }

  /** Close, telling the peer why when `error` is given. */
  fail(error: CairnError): void {
    if (this.closed) return;
    this.#socket.end(encodeFrame(FrameType.ERROR, encodeError({ code: error.code, message: error.message }), this.epoch));
    this.#socket.destroySoon();
    this.#finish(error);
  }

  close(): void {
    if (this.closed) return;
    this.#finish(null);
    this.#socket.destroy();
  }

  #receive(data: Buffer): void {
    if (this.closed) return;
    let frames: Frame[];
    try {
      frames = this.#decoder.push(data);
    } catch (e) {
      this.fail(e as CairnError);
      return;
    }
    for (const f of frames) {
      if (this.closed) return;
      if (f.type === FrameType.ERROR) {
        const m = decodeError(f.payload);
        this.#finish(new CairnError(m.code, `replication peer ${this.remote} closed the connection: ${m.message}`));
        this.#socket.destroy();
        return;
      }
      try {
        this.#onFrame(f);
      } catch (e) {
        this.fail(e instanceof CairnError ? e : new CairnError('CAIRN_INTERNAL', `handling a ${frameTypeName(f.type)} frame failed: ${String(e)}`));
        return;
      }
    }
  }

  #ended(): void {
    try {
      this.#decoder.finish();
    } catch (e) {
      this.#finish(e as CairnError);
    }
    this.#socket.destroy();
  }

  #finish(e: CairnError | null): void {
    if (this.#closedWith !== undefined) return;
    this.#closedWith = e;
    for (const l of this.#closeListeners.splice(0)) l(e);
  }
}
