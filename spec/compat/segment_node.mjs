// spec/compat/segment_node.mjs — the real @segment/analytics-node client,
// unchanged, pointed at a Signal collector: proves Segment server SDK users
// can switch by changing `host` only. Sends an identify and a track, then
// closeAndFlush() (one POST {host}/v1/batch with Basic auth, as the SDK
// does), and prints {"statuses":[…],"errors":[…]} for the busted spec
// (spec/02-integration/11-compat_spec.lua), which checks the raw stream.
//
//   node spec/compat/segment_node.mjs http://127.0.0.1:8080 dk_live_demo RUN_ID
import { Analytics } from '@segment/analytics-node';

const [host, writeKey, runId = String(Date.now())] = process.argv.slice(2);
if (!host || !writeKey) {
  console.error('usage: segment_node.mjs HOST WRITE_KEY [RUN_ID]');
  process.exit(2);
}

// maxRetries 0: a wrong answer must show here, not be retried into a pass.
const analytics = new Analytics({ writeKey, host, maxRetries: 0, flushAt: 20, httpRequestTimeout: 5000 });
const statuses = [];
const errors = [];
analytics.on('http_response', (r) => statuses.push(r.status));
analytics.on('error', (e) => errors.push(String((e && (e.reason || e.message)) || e)));

const userId = `node-user-${runId}`;
analytics.identify({ userId, traits: { email: `node-${runId}@example.com`, plan: 'pro' } });
analytics.track({ userId, event: 'Order Completed', properties: { order_id: `o-${runId}`, revenue: 42.5 } });
await analytics.closeAndFlush({ timeout: 10000 });

console.log(JSON.stringify({ statuses, errors }));
process.exit(errors.length === 0 && statuses.length > 0 && statuses.every((s) => s === 200) ? 0 : 1);
