// The stdout of a child process that may be SIGKILLed mid-line, as complete lines; shared by the
// crash tests, whose children print one line per event.
import type { ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Everything the child printed to stderr. */
  stderr: string;
}

/**
 * Calls `onLine` with each complete stdout line of `child` (a line cut off by a kill is never
 * complete, so never passed) and resolves once the child is gone; rejects if it cannot start.
 */
export function childLines(child: ChildProcessByStdio<Writable | null, Readable, Readable>, onLine: (line: string) => void): Promise<ChildExit> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      buffered += chunk;
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) onLine(line);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s: string) => (stderr += s));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stderr }));
  });
}
