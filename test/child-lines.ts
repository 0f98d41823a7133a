// The stdout of a child process that may be SIGKILLed mid-line, as complete lines; shared by the
// tests whose children print one line per event or reply.
import type { ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Everything the child printed to stderr. */
  stderr: string;
}

/** Calls `onLine` with each complete line of `stream` (a line cut off by a kill is never passed). */
export function onLines(stream: Readable, onLine: (line: string) => void): void {
  let buffered = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) onLine(line);
  });
}

/**
 * Calls `onLine` with each complete stdout line of `child` (a line cut off by a kill is never
 * complete, so never passed) and resolves once the child is gone; rejects if it cannot start.
 */
export function childLines(child: ChildProcessByStdio<Writable | null, Readable, Readable>, onLine: (line: string) => void): Promise<ChildExit> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    onLines(child.stdout, onLine);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stderr }));
  });
}
