/** A free TCP port on 127.0.0.1, chosen by the OS (listen on port 0, read it back, close). */
import { createServer } from 'node:net';

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve());
  });
  const a = s.address();
  const port = a && typeof a === 'object' ? a.port : 0;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
