// A replica for bench/replication.js, in its own process: argv DIR NODE_ID PRIMARY TOKEN.
// Prints "ready" once streaming; closes cleanly on SIGTERM.
import { openReplica } from 'cairndb';

const [dir, nodeId, primary, token] = process.argv.slice(2);
const r = await openReplica(dir, { nodeId, primary, token });
await r.connected();
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  r.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
