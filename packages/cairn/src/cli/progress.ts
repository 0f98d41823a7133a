/**
 * Byte-based progress bars (`cli-progress`) for the long commands: on standard error, only when
 * it is a terminal and `--json` is off; otherwise nothing is created and nothing is printed.
 */
import cliProgress from 'cli-progress';

export interface ByteBar {
  /** `done` of `total` bytes; `done` is kept within 0..total. */
  update(done: number, total: number, detail?: string): void;
  stop(): void;
}

const SILENT: ByteBar = { update() {}, stop() {} };

function mb(n: number): string {
  return (n / 1e6).toFixed(1);
}

/** A bar labelled `label`, or a silent one when `enabled` is false or stderr is not a terminal. */
export function byteBar(label: string, enabled: boolean, stream: NodeJS.WriteStream = process.stderr): ByteBar {
  if (!enabled || !stream.isTTY) return SILENT;
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: `${label} [{bar}] {percentage}% | {doneMB}/{totalMB} MB | ETA {eta_formatted} {detail}`,
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(done, total, detail = '') {
      const t = Math.max(0, total);
      const d = Math.min(t, Math.max(0, done));
      const payload = { doneMB: mb(d), totalMB: mb(t), detail };
      // Nothing to move (a snapshot with no write since the last one): no bar.
      if (!started && t === 0) return;
      if (!started) {
        bar.start(t, d, payload);
        started = true;
      } else {
        if (bar.getTotal() !== t) bar.setTotal(t);
        bar.update(d, payload);
      }
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

/** Run `work` with a bar fed by the progress callback it is given. */
export async function withByteBar<T>(
  label: string,
  enabled: boolean,
  work: (progress: (done: number, total: number, detail?: string) => void) => Promise<T>,
): Promise<T> {
  const bar = byteBar(label, enabled);
  try {
    return await work((d, t, detail) => bar.update(d, t, detail));
  } finally {
    bar.stop();
  }
}
