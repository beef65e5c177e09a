/**
 * Benchmark data, shared by the orchestrator (scripts/bench.ts, which seeds the database) and the
 * load generator (scripts/bench-load.ts, which sends the requests): stored token i has the same
 * selector and pushkey on both sides without any file between them. Pure; runs on Bun and Node.
 */

export const BENCH_APP_ID = 'com.acrobits.softphone'
export const BENCH_SERVER_NAME = 'example.org'

/** A 32-bit mix (lowbias32): spreads consecutive indexes over the whole key space. */
function mix(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0
  x = Math.imul(x, 0x7feb352d) >>> 0
  x = (x ^ (x >>> 15)) >>> 0
  x = Math.imul(x, 0x846ca68b) >>> 0
  return (x ^ (x >>> 16)) >>> 0
}

const hex8 = (n: number) => n.toString(16).padStart(8, '0')

/** 64 hex digits, like an APNs device token; the last 8 are the index, so every token is unique. */
export function tokenFor(i: number): string {
  let s = ''
  for (let k = 1; k <= 7; k++) s += hex8(mix(i * 8 + k))
  return s + hex8(i)
}

/** An Acrobits selector: 40 upper-case hex digits, ':', 8 hex digits (FIELD-GUIDE §1). */
export function selectorFor(i: number): string {
  let s = ''
  for (let k = 1; k <= 4; k++) s += hex8(mix(i * 8 + k + 0x40000000))
  return `${(s + hex8(i)).toUpperCase()}:${hex8(mix(i + 0x20000000)).toUpperCase()}`
}

/** A Matrix event ID of the usual length (`$` + 43 characters), distinct per (tag, n). */
export function eventIdFor(tag: string, n: number): string {
  return `$${(tag + n.toString(36)).padEnd(43, 'x')}`
}

/** A notification exactly as Synapse sends it in the full format (FIELD-GUIDE §3). */
export function fullNotifyBody(eventId: string, pushkey: string): string {
  return JSON.stringify({
    notification: {
      id: eventId,
      event_id: eventId,
      room_id: '!OGEhHVWSdvArJzumhm:example.org',
      type: 'm.room.message',
      sender: '@alice:example.org',
      prio: 'high',
      counts: { unread: 2 },
      sender_display_name: 'Alice Liddell',
      room_name: 'Alice Liddell',
      content: { msgtype: 'm.text', body: 'Are you coming to the tea party this afternoon? The Hatter insists.' },
      devices: [
        {
          app_id: BENCH_APP_ID,
          pushkey,
          pushkey_ts: 1_732_000_000,
          data: {},
          tweaks: { highlight: false, sound: 'default' },
        },
      ],
    },
  })
}

/** A notification as Synapse sends it to a pusher with `format: event_id_only`. */
export function eventIdOnlyNotifyBody(eventId: string, pushkey: string): string {
  return JSON.stringify({
    notification: {
      event_id: eventId,
      room_id: '!OGEhHVWSdvArJzumhm:example.org',
      prio: 'high',
      counts: { unread: 2 },
      devices: [{ app_id: BENCH_APP_ID, pushkey, pushkey_ts: 1_732_000_000, data: { format: 'event_id_only' } }],
    },
  })
}

/** A Push Token Reporter body (JSON template) for a new account. */
export function reportBody(tag: string, n: number): string {
  const i = 0x10000000 + n
  return JSON.stringify({
    selector: `${tag.toUpperCase()}${selectorFor(i).slice(tag.length)}`,
    token_msgs: `${tag}${tokenFor(i).slice(tag.length)}`,
    app_id_msgs: BENCH_APP_ID,
    token_calls: '',
    app_id_calls: '',
    username: 'alice',
  })
}

/** Small fast PRNG (mulberry32), so the generator picks tokens uniformly without cost. */
export function randomIndexes(seed: number, n: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * n | 0
  }
}
